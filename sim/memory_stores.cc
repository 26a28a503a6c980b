#include "sim/memory_stores.h"

#include "core/base64.h"
#include "pki/hmac.h"
#include "sim/scenario.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

ApiReply not_found(const std::string& what) {
  return error_reply(404, "not_found_error", what + " not found");
}

ApiReply precondition_failed(const std::string& message) {
  // The SDK's BetaManagedAgentsMemoryPreconditionFailedError, answered 409.
  ApiReply reply = json_reply(
      409, {{"type", "error"},
            {"error", {{"type", "memory_precondition_failed_error"}, {"message", message}}}});
  return reply;
}

}  // namespace

MemoryStores::MemoryStores(std::function<std::string(const char*)> new_id,
                           std::function<std::string()> now)
    : new_id_(std::move(new_id)), now_(std::move(now)) {}

std::string MemoryStores::create_store(
    const std::string& name, const std::string& environment_id,
    const std::vector<std::pair<std::string, std::string>>& memories) {
  Store store;
  store.id = new_id_("memstore_");
  store.name = name;
  store.environment_id = environment_id;
  for (const auto& [path, content] : memories) {
    const Memory& memory = write(store, path, content);
    record(store, "seed", path, memory.id, 200, "scenario");
  }
  const std::string id = store.id;
  stores_.emplace(id, std::move(store));
  return id;
}

bool MemoryStores::exists(const std::string& store_id) const {
  return stores_.count(store_id) > 0;
}

json MemoryStores::render(const Store& store, const Memory& memory, bool full) const {
  json out = {{"type", "memory"},
              {"id", memory.id},
              {"memory_store_id", store.id},
              {"memory_version_id", memory.version_id},
              {"path", memory.path},
              {"content_sha256", memory.sha},
              {"content_size_bytes", memory.content.size()},
              {"created_at", memory.created_at},
              {"updated_at", memory.updated_at}};
  if (full) out["content"] = memory.content;
  return out;
}

MemoryStores::Memory& MemoryStores::write(Store& store, const std::string& path,
                                          const std::string& content) {
  const std::string now = now_();
  auto existing = store.path_to_id.find(path);
  if (existing == store.path_to_id.end()) {
    Memory memory;
    memory.id = new_id_("mem_");
    memory.path = path;
    memory.created_at = now;
    store.path_to_id[path] = memory.id;
    existing = store.path_to_id.find(path);
    store.by_id[memory.id] = std::move(memory);
  }
  Memory& memory = store.by_id[existing->second];
  memory.content = content;
  memory.sha = pki::sha256_hex(content);
  memory.version_id = new_id_("memver_");
  memory.updated_at = now;
  return memory;
}

void MemoryStores::record(Store& store, const std::string& op, const std::string& path,
                          const std::string& memory_id, int status, const std::string& actor,
                          const std::string& error) {
  json entry = {{"op", op},         {"path", path},   {"memory_id", memory_id},
                {"status", status}, {"actor", actor}, {"at", now_()}};
  if (!error.empty()) entry["error"] = error;
  store.history.push_back(std::move(entry));
}

std::optional<ApiReply> MemoryStores::check_content(const json& content) const {
  if (!content.is_string() && !content.is_null()) {
    return error_reply(400, "invalid_request_error", "content must be a string or null");
  }
  if (content.is_string() && content.get_ref<const std::string&>().size() > kMaxContentBytes) {
    return error_reply(413, "request_too_large",
                       "content is larger than " + std::to_string(kMaxContentBytes) + " bytes");
  }
  return std::nullopt;
}

ApiReply MemoryStores::list(const std::string& store_id, const std::string& view, int limit,
                            const std::string& page, const std::string& path_prefix) const {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return not_found("memory store " + store_id);
  const bool full = view == "full";
  if (limit > kMaxBasicPage) {
    return error_reply(400, "invalid_request_error",
                       "limit must be at most " + std::to_string(kMaxBasicPage));
  }
  if (limit <= 0) limit = 20;
  if (full) limit = std::min(limit, kMaxFullPage);  // full pages are capped by the server
  std::string from;
  if (!page.empty() && !base64url_decode(page, &from)) {
    return error_reply(400, "invalid_request_error", "unknown page cursor `" + page + "`");
  }
  const Store& store = it->second;
  json data = json::array();
  std::optional<std::string> next;
  for (auto entry = store.path_to_id.lower_bound(from); entry != store.path_to_id.end(); ++entry) {
    if (entry->first.compare(0, path_prefix.size(), path_prefix) != 0) continue;
    if (static_cast<int>(data.size()) == limit) {
      next = base64url_encode(entry->first);
      break;
    }
    data.push_back(render(store, store.by_id.at(entry->second), full));
  }
  return json_reply(200, {{"data", data}, {"next_page", next ? json(*next) : json(nullptr)}});
}

ApiReply MemoryStores::retrieve(const std::string& store_id, const std::string& memory_id,
                                const std::string& view) const {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return not_found("memory store " + store_id);
  auto memory = it->second.by_id.find(memory_id);
  if (memory == it->second.by_id.end()) return not_found("memory " + memory_id);
  return json_reply(200, render(it->second, memory->second, view != "basic"));
}

ApiReply MemoryStores::create(const std::string& store_id, const json& body,
                              const std::string& view, const std::string& actor) {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return not_found("memory store " + store_id);
  Store& store = it->second;
  if (!body.is_object() || !body.contains("path") || !body["path"].is_string()) {
    return error_reply(400, "invalid_request_error", "path is required");
  }
  const std::string path = body["path"];
  if (!valid_memory_path(path)) {
    record(store, "create", path, "", 400, actor, "invalid path");
    return error_reply(400, "invalid_request_error",
                       "path must be absolute, without empty, `.` or `..` parts: " + path);
  }
  const json content = body.contains("content") ? body["content"] : json(nullptr);
  if (auto refused = check_content(content)) {
    record(store, "create", path, "", refused->status, actor, "content refused");
    return *refused;
  }
  if (auto existing = store.path_to_id.find(path); existing != store.path_to_id.end()) {
    record(store, "create", path, existing->second, 409, actor, "path conflict");
    return json_reply(409, {{"type", "error"},
                            {"error",
                             {{"type", "memory_path_conflict_error"},
                              {"message", "a memory already exists at " + path},
                              {"conflicting_memory_id", existing->second},
                              {"conflicting_path", path}}}});
  }
  if (store.by_id.size() >= kMaxMemoriesPerStore) {
    record(store, "create", path, "", 400, actor, "store full");
    return error_reply(
        400, "invalid_request_error",
        "a memory store holds at most " + std::to_string(kMaxMemoriesPerStore) + " memories");
  }
  const Memory& memory = write(store, path, content.is_string() ? content.get<std::string>() : "");
  record(store, "create", path, memory.id, 200, actor);
  return json_reply(200, render(store, memory, view == "full"));
}

ApiReply MemoryStores::update(const std::string& store_id, const std::string& memory_id,
                              const json& body, const std::string& view, const std::string& actor) {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return not_found("memory store " + store_id);
  Store& store = it->second;
  auto found = store.by_id.find(memory_id);
  if (found == store.by_id.end()) {
    record(store, "update", "", memory_id, 404, actor);
    return not_found("memory " + memory_id);
  }
  if (!body.is_object()) return error_reply(400, "invalid_request_error", "body must be an object");
  Memory& memory = found->second;
  if (body.contains("precondition") && !body["precondition"].is_null()) {
    const json& precondition = body["precondition"];
    if (!precondition.is_object() || precondition.value("type", "") != "content_sha256") {
      return error_reply(400, "invalid_request_error", "precondition.type must be content_sha256");
    }
    if (precondition.contains("content_sha256") && precondition["content_sha256"].is_string() &&
        precondition["content_sha256"] != memory.sha) {
      record(store, "update", memory.path, memory.id, 409, actor, "precondition failed");
      return precondition_failed("the memory's content_sha256 is not " +
                                 precondition["content_sha256"].get<std::string>());
    }
  }
  std::string path = memory.path;
  if (body.contains("path") && !body["path"].is_null()) {
    if (!body["path"].is_string() || !valid_memory_path(body["path"])) {
      return error_reply(400, "invalid_request_error", "path must be an absolute memory path");
    }
    path = body["path"];
    if (auto other = store.path_to_id.find(path);
        other != store.path_to_id.end() && other->second != memory.id) {
      record(store, "update", path, memory.id, 409, actor, "path conflict");
      return json_reply(409, {{"type", "error"},
                              {"error",
                               {{"type", "memory_path_conflict_error"},
                                {"message", "a memory already exists at " + path},
                                {"conflicting_memory_id", other->second},
                                {"conflicting_path", path}}}});
    }
  }
  std::string content = memory.content;
  if (body.contains("content")) {
    if (auto refused = check_content(body["content"])) {
      record(store, "update", memory.path, memory.id, refused->status, actor, "content refused");
      return *refused;
    }
    if (body["content"].is_string()) content = body["content"];
  }
  if (path != memory.path) {
    store.path_to_id.erase(memory.path);
    store.path_to_id[path] = memory.id;
    memory.path = path;
  }
  Memory& written = write(store, path, content);
  record(store, "update", path, written.id, 200, actor);
  return json_reply(200, render(store, written, view == "full"));
}

ApiReply MemoryStores::remove(const std::string& store_id, const std::string& memory_id,
                              const std::optional<std::string>& expected_content_sha256,
                              const std::string& actor) {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return not_found("memory store " + store_id);
  Store& store = it->second;
  auto found = store.by_id.find(memory_id);
  if (found == store.by_id.end()) {
    record(store, "delete", "", memory_id, 404, actor);
    return not_found("memory " + memory_id);
  }
  const std::string path = found->second.path;
  if (expected_content_sha256 && *expected_content_sha256 != found->second.sha) {
    record(store, "delete", path, memory_id, 409, actor, "precondition failed");
    return precondition_failed("the memory's content_sha256 is not " + *expected_content_sha256);
  }
  store.path_to_id.erase(path);
  store.by_id.erase(found);
  record(store, "delete", path, memory_id, 200, actor);
  return json_reply(200, {{"type", "memory_deleted"}, {"id", memory_id}});
}

void MemoryStores::apply_remote_change(const std::string& store_id, const std::string& path,
                                       const std::optional<std::string>& content) {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return;
  Store& store = it->second;
  if (content) {
    const Memory& memory = write(store, path, *content);
    record(store, "remote_write", path, memory.id, 200, "scenario");
    return;
  }
  auto existing = store.path_to_id.find(path);
  if (existing == store.path_to_id.end()) return;
  const std::string id = existing->second;
  store.by_id.erase(id);
  store.path_to_id.erase(existing);
  record(store, "remote_delete", path, id, 200, "scenario");
}

json MemoryStores::admin_view(const std::string& store_id) const {
  auto it = stores_.find(store_id);
  if (it == stores_.end()) return nullptr;
  const Store& store = it->second;
  json memories = json::array();
  for (const auto& [path, id] : store.path_to_id) {
    const Memory& memory = store.by_id.at(id);
    memories.push_back({{"id", memory.id},
                        {"path", memory.path},
                        {"content", memory.content},
                        {"content_sha256", memory.sha},
                        {"memory_version_id", memory.version_id}});
  }
  return {{"type", "memory_store_admin"}, {"id", store.id},
          {"name", store.name},           {"environment_id", store.environment_id},
          {"memories", memories},         {"history", store.history}};
}

}  // namespace perimeter::sim
