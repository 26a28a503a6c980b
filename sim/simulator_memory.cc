// The Simulator's memory store endpoints: who may call (sessions tokens only), then the rules of
// MemoryStores.
#include "sim/simulator.h"

namespace perimeter::sim {

using nlohmann::json;

std::optional<ApiReply> Simulator::authorize_memory_locked(const std::string& store_id,
                                                           const std::string& token, bool write,
                                                           std::string* actor) const {
  if (token.empty()) return error_reply(401, "authentication_error", "missing bearer credential");
  auto by_token = token_to_work_.find(token);
  if (by_token == token_to_work_.end()) {
    for (const auto& [id, env] : environments_) {
      if (env.key == token) {
        return error_reply(401, "authentication_error",
                           "the memory store endpoints take a session's token, not the "
                           "environment key");
      }
    }
    return error_reply(401, "authentication_error", "invalid sessions token");
  }
  const WorkItem& item = work_.at(by_token->second);
  if (item.state == "stopped") {
    return error_reply(401, "authentication_error", "this sessions token's work item is stopped");
  }
  auto session = sessions_.find(item.data_id);
  if (session != sessions_.end()) {
    for (const auto& attached : session->second.memory_stores) {
      if (attached.store_id != store_id) continue;
      if (write && attached.declared->read_only) {
        return error_reply(403, "permission_error",
                           "memory store `" + store_id + "` is attached read-only to this session");
      }
      *actor = item.id;
      return std::nullopt;
    }
  }
  // Another session's store, or none at all: the token does not reveal which.
  return error_reply(404, "not_found_error", "memory store `" + store_id + "` was not found");
}

ApiReply Simulator::list_memories(const std::string& store_id, const std::string& token,
                                  const std::string& view, int limit, const std::string& page,
                                  const std::string& path_prefix) {
  std::lock_guard lock(mutex_);
  std::string actor;
  if (auto refused = authorize_memory_locked(store_id, token, false, &actor)) return *refused;
  return memory_stores_.list(store_id, view, limit, page, path_prefix);
}

ApiReply Simulator::retrieve_memory(const std::string& store_id, const std::string& memory_id,
                                    const std::string& token, const std::string& view) {
  std::lock_guard lock(mutex_);
  std::string actor;
  if (auto refused = authorize_memory_locked(store_id, token, false, &actor)) return *refused;
  return memory_stores_.retrieve(store_id, memory_id, view);
}

ApiReply Simulator::create_memory(const std::string& store_id, const std::string& token,
                                  const json& body, const std::string& view) {
  std::lock_guard lock(mutex_);
  std::string actor;
  if (auto refused = authorize_memory_locked(store_id, token, true, &actor)) return *refused;
  return memory_stores_.create(store_id, body, view, actor);
}

ApiReply Simulator::update_memory(const std::string& store_id, const std::string& memory_id,
                                  const std::string& token, const json& body,
                                  const std::string& view) {
  std::lock_guard lock(mutex_);
  std::string actor;
  if (auto refused = authorize_memory_locked(store_id, token, true, &actor)) return *refused;
  return memory_stores_.update(store_id, memory_id, body, view, actor);
}

ApiReply Simulator::delete_memory(const std::string& store_id, const std::string& memory_id,
                                  const std::string& token,
                                  const std::optional<std::string>& expected_content_sha256) {
  std::lock_guard lock(mutex_);
  std::string actor;
  if (auto refused = authorize_memory_locked(store_id, token, true, &actor)) return *refused;
  return memory_stores_.remove(store_id, memory_id, expected_content_sha256, actor);
}

ApiReply Simulator::memory_store_admin_view(const std::string& store_id) const {
  std::lock_guard lock(mutex_);
  json view = memory_stores_.admin_view(store_id);
  if (view.is_null()) {
    return error_reply(404, "not_found_error", "memory store `" + store_id + "` was not found");
  }
  return json_reply(200, view);
}

}  // namespace perimeter::sim
