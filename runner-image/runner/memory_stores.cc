#include "runner/memory_stores.h"

#include <algorithm>
#include <set>

#include "agentapi/api_error.h"
#include "pki/hmac.h"
#include "tools/path_util.h"

namespace perimeter::runner {
namespace {

using agentapi::Memory;
using nlohmann::json;

constexpr int kListPageSize = 100;
constexpr int kFullListPageSize = 20;
constexpr int kDeleteCapFloor = 8;
constexpr int kDeleteCapCeiling = 50;

// Thrown before a request a bounded pass may no longer start.
struct CutOff {};

std::string marker_content(const std::string& store_id) {
  return "version 1\n" + store_id;
}
std::string marker_sha(const std::string& store_id) {
  return pki::sha256_hex(marker_content(store_id));
}

bool is_status(const std::exception& error, int status) {
  const auto* api = dynamic_cast<const agentapi::ApiError*>(&error);
  return api != nullptr && api->status() == status;
}

// The SDK's String(e) for what it logs.
std::string describe(const std::exception& error) {
  if (const auto* api = dynamic_cast<const agentapi::ApiError*>(&error)) {
    return std::to_string(api->status()) + " " + api->raw_body();
  }
  return error.what();
}

bool is_file_error(const std::exception& error) {
  return dynamic_cast<const FileStoreError*>(&error) != nullptr ||
         dynamic_cast<const FileStoreIoError*>(&error) != nullptr;
}

// The SDK's isPathLegal.
bool clean_absolute(const std::string& path) {
  if (path.empty() || path[0] != '/') return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (path.compare(start, slash - start, "..") == 0 && slash - start == 2) return false;
    start = slash + 1;
  }
  return true;
}

// TextDecoder's default: a leading byte-order mark is dropped.
std::string decode_utf8(const std::string& data) {
  if (data.size() >= 3 && data.compare(0, 3, "\xEF\xBB\xBF") == 0) return data.substr(3);
  return data;
}

template <typename Map, typename Key>
const typename Map::mapped_type* find_in(const Map& map, const Key& key) {
  auto it = map.find(key);
  return it == map.end() ? nullptr : &it->second;
}

}  // namespace

bool SessionMemoryStores::DeletePass::take_slot() {
  if (attempted >= cap) {
    ++capped;
    return false;
  }
  ++attempted;
  return true;
}

SessionMemoryStores::SessionMemoryStores(agentapi::MemoryApi& api, SessionMemoryOptions options,
                                         const Clock& clock, Logger logger)
    : api_(api), options_(std::move(options)), clock_(clock), log_(std::move(logger)) {
  if (!(options_.sync_interval >= kMinMemorySyncInterval)) {
    throw std::invalid_argument("syncIntervalMs must be at least 5000ms (got " +
                                std::to_string(options_.sync_interval.count()) + ")");
  }
  last_sync_at_ = clock_.now();
}

bool SessionMemoryStores::past_deadline() const {
  return deadline_.has_value() && clock_.now() >= *deadline_;
}

std::vector<std::string> SessionMemoryStores::roots() const {
  std::vector<std::string> out;
  for (const Store& store : stores_) out.push_back(store.files->root());
  return out;
}

std::vector<std::string> SessionMemoryStores::read_only_roots() const {
  std::vector<std::string> out;
  for (const Store& store : stores_) {
    if (store.read_only) out.push_back(store.files->root());
  }
  return out;
}

std::string SessionMemoryStores::store_root(const json& resource) const {
  const std::string id = resource.value("memory_store_id", "");
  const auto mount = resource.find("mount_path");
  if (mount != resource.end() && mount->is_string() &&
      !mount->get_ref<const std::string&>().empty()) {
    const std::string& path = mount->get_ref<const std::string&>();
    if (!clean_absolute(path)) {
      throw SessionMemoryError("memory store mount_path is not a clean absolute path: " +
                               mount->dump() + " (memory_store_id=" + id + ")");
    }
    return path;
  }
  // No mount_path: nothing points the agent anywhere, so the workdir is as good a home as any.
  const auto name = resource.find("name");
  const std::string folder =
      name != resource.end() && name->is_string() && !name->get_ref<const std::string&>().empty()
          ? name->get<std::string>()
          : id;
  return tools::paths::join(tools::paths::join(options_.workdir, "memory"), folder);
}

void SessionMemoryStores::download(const json& session) {
  const auto resources = session.find("resources");
  if (resources != session.end() && resources->is_array()) {
    for (const json& resource : *resources) {
      if (!resource.is_object() || resource.value("type", "") != "memory_store") continue;
      const std::string id = resource.value("memory_store_id", "");
      const std::string root = store_root(resource);
      Store store;
      try {
        store.memory_store_id = id;
        store.files = std::make_unique<MemoryFileStore>(root);
        store.read_only = resource.value("access", json(nullptr)) == "read_only";
        // A root this run did not create is a dead run's leftovers; the first sync would upload
        // them into the store.
        if (!store.files->removed_on_dispose()) {
          throw SessionMemoryError("something already exists at the memory store's path: " + root +
                                   " (memory_store_id=" + id +
                                   "); it must not exist when the session starts");
        }
        try {
          store.files->create_root();
        } catch (const FileStoreIoError& error) {
          throw SessionMemoryError("cannot create the memory store's folder: " + root +
                                   " (memory_store_id=" + id + "): " + error.what() +
                                   "; the worker host must make this mount path writable");
        }
        stamp_and_pull(store);
        log_.info("downloaded memories", {{"count", store.baseline.size()},
                                          {"memory_store_id", id},
                                          {"dest", store.files->root()}});
        stores_.push_back(std::move(store));
      } catch (const std::exception& error) {
        // A half-downloaded folder self-destructs; a refused pre-existing one stays as found.
        if (store.files) {
          try {
            store.files->dispose();
          } catch (const std::exception&) {
          }
        }
        if (dynamic_cast<const SessionMemoryError*>(&error) != nullptr) throw;
        throw SessionMemoryError("failed to download memory store memory_store_id=" + id + ": " +
                                 describe(error));
      }
    }
  }
  last_sync_at_ = clock_.now();
}

bool SessionMemoryStores::finish(Clock::TimePoint deadline) {
  if (finished_) {
    throw std::logic_error(
        "finish() was already called: it is the session's last sync and runs once");
  }
  finished_ = true;
  return sync_all(true, deadline);
}

bool SessionMemoryStores::sync_all(bool final, std::optional<Clock::TimePoint> deadline) {
  deadline_ = deadline;
  bool cut_off = false;
  for (Store& store : stores_) {
    try {
      sync_store(store, final);
    } catch (const CutOff&) {
      cut_off = true;
      break;
    }
  }
  deadline_.reset();
  last_sync_at_ = clock_.now();
  return cut_off;
}

void SessionMemoryStores::sync_if_due() {
  if (clock_.now() - last_sync_at_ < options_.sync_interval) return;
  sync_all(false);
}

SessionMemoryStores::MarkerScan SessionMemoryStores::scan_marker(Store& store) const {
  MarkerScan scan;
  scan.files = store.files->hashtree();
  auto marker = scan.files.find(kMemoryMarkerPath);
  std::optional<std::string> marker_value;
  if (marker != scan.files.end()) {
    marker_value = marker->second;
    scan.files.erase(marker);
  }
  if (marker_value == marker_sha(store.memory_store_id)) {
    scan.marker_ok = true;
    return scan;
  }
  scan.distrust_reason =
      marker_value ? "the marker file does not match this store" : "the marker file is gone";
  return scan;
}

void SessionMemoryStores::sync_store(Store& store, bool final) {
  try {
    MarkerScan scan = scan_marker(store);
    const auto& local = scan.files;
    if (!scan.marker_ok) {
      if (!local.empty()) {
        log_.warn(
            scan.distrust_reason + "; leaving the memory store folder as found and not syncing",
            {{"root", store.files->root()}, {"memory_store_id", store.memory_store_id}});
        return;
      }
      recover(store, "the folder or its marker is gone");
      return;
    }
    const Remote remote = list_memories(store.memory_store_id, "basic");
    settle_sent(store, remote);
    // A lone file vanishing is an ordinary deletion; two or more at once with nothing left is a
    // wiped folder.
    if (local.empty() && store.baseline.size() > 1) {
      recover(store, "every memory file is gone at once");
      return;
    }
    DeletePass deletes{
        options_.deletions,
        std::max(kDeleteCapFloor,
                 std::min(kDeleteCapCeiling, static_cast<int>(store.baseline.size() / 4))),
        final};
    std::vector<std::pair<std::string, Memory>> pulls;
    std::map<std::string, std::string> baseline;
    std::set<std::string> paths;
    for (const auto& [rel, item] : remote) paths.insert(rel);
    for (const auto& [rel, sha] : local) paths.insert(rel);
    for (const auto& [rel, sha] : store.baseline) paths.insert(rel);
    for (const std::string& rel : paths) {
      const Memory* remote_item = find_in(remote, rel);
      const std::string* local_sha = find_in(local, rel);
      const std::string* base_sha = find_in(store.baseline, rel);
      std::optional<std::string> sha;
      if (local_sha == nullptr && base_sha != nullptr && remote_item != nullptr &&
          remote_item->content_sha256 == *base_sha && !store.read_only) {
        sha = corroborated_delete(store, rel, *remote_item, *base_sha, deletes);
      } else {
        sha = sync_path(store, rel, remote_item,
                        local_sha ? std::optional<std::string>(*local_sha) : std::nullopt, pulls);
      }
      if (sha) baseline[rel] = *sha;
    }
    store.baseline = std::move(baseline);
    // The content pass: everything above moved only shas.
    pull_all(store, pulls);
    if (deletes.suppressed > 0) {
      log_.debug("remote deletes are disabled; locally deleted memories stay on the server",
                 {{"count", deletes.suppressed}, {"memory_store_id", store.memory_store_id}});
    }
    if (deletes.capped > 0) {
      log_.warn(std::string("delete cap reached: ") +
                    (deletes.mode == MemoryDeleteMode::kLogOnly ? "would send" : "sent") + " " +
                    std::to_string(deletes.attempted) + " deletes, held " +
                    std::to_string(deletes.capped) + " for later syncs",
                {{"memory_store_id", store.memory_store_id}});
    }
  } catch (const CutOff&) {
    throw;
  } catch (const std::exception& error) {
    log_.warn("memory sync failed",
              {{"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
  }
}

bool SessionMemoryStores::flush_writes(Clock::TimePoint deadline) {
  deadline_ = deadline;
  for (Store& store : stores_) flush_store(store);
  const bool cut_off = past_deadline();
  deadline_.reset();
  return cut_off;
}

void SessionMemoryStores::flush_store(Store& store) {
  std::map<std::string, std::string> dirty;
  std::set<std::string> unsent;
  try {
    [&] {
      if (store.read_only) return;
      MarkerScan scan = scan_marker(store);
      if (!scan.marker_ok) {
        log_.warn(scan.distrust_reason + "; not uploading anything from the memory store folder",
                  {{"root", store.files->root()}, {"memory_store_id", store.memory_store_id}});
        return;
      }
      for (const auto& [rel, sha] : scan.files) {
        // A path with an unsettled send counts even at its baseline sha: the send may have
        // landed, leaving the server ahead of the file.
        const std::string* base = find_in(store.baseline, rel);
        const bool changed = base == nullptr || *base != sha || store.sent_shas.count(rel) > 0;
        const std::string* refused = find_in(store.refused_shas, rel);
        if (changed && (refused == nullptr || *refused != sha)) {
          dirty[rel] = sha;
          unsent.insert(rel);
        }
      }
      if (dirty.empty() || past_deadline()) return;
      const Remote remote = list_memories(store.memory_store_id, "basic");
      settle_sent(store, remote);
      std::vector<std::pair<std::string, const Memory*>> uploads;
      for (const auto& [rel, local_sha] : dirty) {
        const std::string* base_sha = find_in(store.baseline, rel);
        const Memory* existing = find_in(remote, rel);
        if (base_sha != nullptr && local_sha == *base_sha) {
          unsent.erase(rel);
          continue;
        }
        if (existing != nullptr && existing->content_sha256 == local_sha) {
          store.baseline[rel] = existing->content_sha256;
          unsent.erase(rel);
          continue;
        }
        if (existing != nullptr && (base_sha == nullptr || existing->content_sha256 != *base_sha)) {
          log_.warn("memory changed both locally and remotely; the flush leaves the remote version",
                    {{"path", rel}, {"memory_store_id", store.memory_store_id}});
          unsent.erase(rel);
          continue;
        }
        uploads.emplace_back(rel, existing);
      }
      for (const auto& [rel, existing] : uploads) {
        if (past_deadline()) return;
        const auto sha = upload(store, rel, dirty[rel], existing);
        unsent.erase(rel);
        if (sha) store.baseline[rel] = *sha;
      }
    }();
  } catch (const CutOff&) {
  } catch (const std::exception& error) {
    log_.warn("memory flush failed",
              {{"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
    return;
  }
  if (past_deadline() && !unsent.empty()) {
    log_.warn("memory flush cut off part-way; " + std::to_string(unsent.size()) + " of " +
                  std::to_string(dirty.size()) + " changed files had not finished uploading",
              {{"memory_store_id", store.memory_store_id}});
  }
}

void SessionMemoryStores::dispose() {
  for (Store& store : stores_) {
    const std::string root = store.files->root();
    try {
      MarkerScan scan = scan_marker(store);
      if (!scan.marker_ok && !scan.files.empty()) {
        log_.warn(scan.distrust_reason + "; leaving the memory store folder on disk",
                  {{"root", root}, {"memory_store_id", store.memory_store_id}});
        continue;
      }
      store.files->dispose();
    } catch (const std::exception& error) {
      log_.warn(
          "failed to remove the memory store folder",
          {{"root", root}, {"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
      continue;
    }
    if (store.files->removed_on_dispose()) {
      log_.info("removed memory store dir",
                {{"dest", root}, {"memory_store_id", store.memory_store_id}});
    }
  }
}

void SessionMemoryStores::recover(Store& store, const std::string& reason) {
  log_.warn(reason + "; re-downloading the memory store folder instead of syncing",
            {{"root", store.files->root()}, {"memory_store_id", store.memory_store_id}});
  store.files->create_root();
  stamp_and_pull(store);
}

void SessionMemoryStores::settle_sent(Store& store, const Remote& remote) const {
  for (const auto& [rel, sha] : store.sent_shas) {
    const Memory* item = find_in(remote, rel);
    if (item != nullptr && item->content_sha256 == sha) store.baseline[rel] = sha;
  }
  store.sent_shas.clear();
}

void SessionMemoryStores::stamp_and_pull(Store& store) {
  store.baseline.clear();
  store.sent_shas.clear();
  store.pending_deletes.clear();
  store.files->put(kMemoryMarkerPath, marker_content(store.memory_store_id));
  const Remote remote = list_memories(store.memory_store_id, "full");
  for (const auto& [rel, item] : remote) {
    if (write(store, rel, item.content.value_or(""))) store.baseline[rel] = item.content_sha256;
  }
}

SessionMemoryStores::Remote SessionMemoryStores::list_memories(const std::string& store_id,
                                                               const std::string& view) {
  Remote out;
  const int limit = view == "basic" ? kListPageSize : kFullListPageSize;
  std::string page;
  for (;;) {
    if (past_deadline()) throw CutOff{};
    const agentapi::MemoryPage result = api_.list_memories(store_id, view, limit, page);
    for (const Memory& item : result.data) {
      if (item.type != "memory") continue;
      const std::size_t first = item.path.find_first_not_of('/');
      const std::string rel = first == std::string::npos ? "" : item.path.substr(first);
      if (rel == kMemoryMarkerPath) {
        log_.warn("the server listed the reserved marker path; skipping",
                  {{"path", item.path}, {"memory_store_id", store_id}});
        continue;
      }
      out[rel] = item;
    }
    if (!result.next_page || result.next_page->empty() || result.data.empty()) break;
    page = *result.next_page;
  }
  return out;
}

std::optional<std::string> SessionMemoryStores::sync_path(
    Store& store, const std::string& rel, const Memory* remote,
    std::optional<std::string> local_sha, std::vector<std::pair<std::string, Memory>>& pulls) {
  const std::string* base = find_in(store.baseline, rel);
  const std::optional<std::string> base_sha =
      base ? std::optional<std::string>(*base) : std::nullopt;
  if (local_sha) store.pending_deletes.erase(rel);
  const auto refused_is = [&store, &rel](const std::optional<std::string>& sha) {
    const std::string* refused = find_in(store.refused_shas, rel);
    return refused != nullptr && sha && *refused == *sha;
  };

  if (remote == nullptr) {
    if (!local_sha) {
      store.pending_deletes.erase(rel);
      return std::nullopt;
    }
    if (base_sha) {
      if (*local_sha == *base_sha) {
        const auto fresh = remove_local(store, rel, *base_sha);
        if (!fresh) return std::nullopt;
        if (*fresh == *base_sha) return base_sha;
        local_sha = fresh;
      }
      // The file holds an un-pushed edit, the only copy: re-created or kept.
      if (store.read_only) {
        log_.warn(
            "memory deleted remotely but edited locally; keeping the file, which a read-only "
            "store cannot push",
            {{"path", rel}, {"memory_store_id", store.memory_store_id}});
      } else if (!refused_is(local_sha)) {
        log_.info("memory deleted remotely but edited locally; re-creating it from the file",
                  {{"path", rel}, {"memory_store_id", store.memory_store_id}});
      }
    }
    if (store.read_only) return std::nullopt;
    if (refused_is(local_sha)) return std::nullopt;
    return upload(store, rel, local_sha, nullptr);
  }

  const std::string& remote_sha = remote->content_sha256;
  const bool remote_changed = !base_sha || remote_sha != *base_sha;
  const bool locally_edited =
      local_sha && (!base_sha || *local_sha != *base_sha) && *local_sha != remote_sha;
  // Read-only stores never push, so their local edits don't count.
  const bool local_changed = !store.read_only && locally_edited;

  if (!local_sha && base_sha) {
    // Only successful writes enter the baseline: this file was on disk and is gone now.
    if (remote_changed) {
      log_.warn("memory deleted locally but changed remotely; restoring the remote version",
                {{"path", rel}, {"memory_store_id", store.memory_store_id}});
      store.pending_deletes.erase(rel);
      pulls.emplace_back(rel, *remote);
    }
    return base_sha;
  }
  if (remote_changed) {
    if (local_sha && *local_sha == remote_sha) return remote_sha;
    if (locally_edited) {
      log_.warn("memory changed both locally and remotely; keeping the remote version",
                {{"path", rel}, {"memory_store_id", store.memory_store_id}});
    }
    pulls.emplace_back(rel, *remote);
    return base_sha;
  }
  if (local_changed) {
    if (refused_is(local_sha)) return remote_sha;
    const auto sha = upload(store, rel, local_sha, remote);
    return sha ? sha : std::optional<std::string>(remote_sha);
  }
  return remote_sha;
}

std::optional<std::string> SessionMemoryStores::remove_local(Store& store, const std::string& rel,
                                                             const std::string& expect_sha) {
  std::optional<std::string> fresh;
  try {
    fresh = store.files->hash_file(rel);
  } catch (const std::exception& error) {
    if (!is_file_error(error)) throw;
    return expect_sha;
  }
  if (!fresh) return std::nullopt;
  if (*fresh != expect_sha) return fresh;
  try {
    store.files->remove(rel);
  } catch (const std::exception& error) {
    if (!is_file_error(error)) throw;
    log_.warn(
        "failed to remove memory deleted remotely",
        {{"path", rel}, {"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
    return expect_sha;
  }
  return std::nullopt;
}

bool SessionMemoryStores::write(Store& store, const std::string& rel, const std::string& content) {
  try {
    store.files->put(rel, content);
  } catch (const std::exception& error) {
    if (!is_file_error(error)) throw;
    log_.warn(
        "failed to write memory",
        {{"path", rel}, {"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
    return false;
  }
  return true;
}

void SessionMemoryStores::pull_all(Store& store,
                                   const std::vector<std::pair<std::string, Memory>>& pulls) {
  for (const auto& [rel, listed] : pulls) {
    if (past_deadline()) throw CutOff{};
    Memory item;
    try {
      item = api_.retrieve_memory(store.memory_store_id, listed.id, "full");
    } catch (const std::exception& error) {
      if (is_status(error, 404)) continue;
      log_.warn(
          "failed to fetch memory content",
          {{"path", rel}, {"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
      continue;
    }
    if (write(store, rel, item.content.value_or(""))) store.baseline[rel] = item.content_sha256;
  }
}

std::optional<std::string> SessionMemoryStores::upload(Store& store, const std::string& rel,
                                                       const std::optional<std::string>& local_sha,
                                                       const Memory* existing) {
  if (past_deadline()) throw CutOff{};
  try {
    const std::optional<std::string> data = store.files->get(rel);
    if (!data) return std::nullopt;
    const std::string content = decode_utf8(*data);
    // Hashed as sent: decoding may have dropped a byte-order mark.
    store.sent_shas[rel] = pki::sha256_hex(content);
    const Memory item = existing != nullptr
                            ? api_.update_memory(store.memory_store_id, existing->id, content,
                                                 existing->content_sha256)
                            : api_.create_memory(store.memory_store_id, "/" + rel, content);
    store.refused_shas.erase(rel);
    store.sent_shas.erase(rel);
    return item.content_sha256;
  } catch (const std::exception& error) {
    if (existing != nullptr && is_status(error, 404)) {
      // Deleted remotely since the listing, so this file is now the only copy.
      return upload(store, rel, local_sha, nullptr);
    }
    const bool permanent = dynamic_cast<const FileStoreError*>(&error) != nullptr ||
                           is_status(error, 400) || is_status(error, 413);
    if (existing != nullptr && is_status(error, 409)) {
      // The precondition lost a race: the remote moved, the push is dropped, and the next sync
      // pulls the winner over the local file.
      log_.warn(
          "memory changed both locally and remotely; the upload was refused and the local edit "
          "loses",
          {{"path", rel}, {"memory_store_id", store.memory_store_id}});
    } else if (permanent && local_sha) {
      store.refused_shas[rel] = *local_sha;
      log_.warn(
          "the server rejected this memory file, so it stays un-synced until its content changes",
          {{"path", rel},
           {"memory_store_id", store.memory_store_id},
           {"rejection", describe(error)}});
    } else {
      log_.warn(
          "failed to upload memory",
          {{"path", rel}, {"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
    }
    return std::nullopt;
  }
}

std::optional<std::string> SessionMemoryStores::corroborated_delete(Store& store,
                                                                    const std::string& rel,
                                                                    const Memory& remote,
                                                                    const std::string& base_sha,
                                                                    DeletePass& deletes) {
  if (deletes.mode == MemoryDeleteMode::kDisabled) {
    ++deletes.suppressed;
    return base_sha;
  }
  auto first = store.pending_deletes.find(rel);
  if (first == store.pending_deletes.end()) {
    first = store.pending_deletes.emplace(rel, clock_.now()).first;
  }
  if (!deletes.waive_window && clock_.now() - first->second < kDeleteCorroboration) return base_sha;
  bool marker_ok = false;
  bool still_absent = false;
  try {
    // Re-check: the folder may have been wiped mid-sync.
    marker_ok = store.files->hash_file(kMemoryMarkerPath) == marker_sha(store.memory_store_id);
    still_absent = !store.files->hash_file(rel).has_value();
  } catch (const std::exception& error) {
    if (!is_file_error(error)) throw;
    marker_ok = still_absent = false;
  }
  if (!marker_ok) return base_sha;
  if (!still_absent) {
    store.pending_deletes.erase(rel);
    return base_sha;
  }
  if (!deletes.take_slot()) return base_sha;
  if (deletes.mode == MemoryDeleteMode::kLogOnly) {
    log_.info("log-only: sync would delete this memory on the server",
              {{"path", rel}, {"memory_store_id", store.memory_store_id}});
    return base_sha;
  }
  const auto sha = delete_remote(store, rel, remote, base_sha);
  if (!sha) store.pending_deletes.erase(rel);
  return sha;
}

std::optional<std::string> SessionMemoryStores::delete_remote(Store& store, const std::string& rel,
                                                              const Memory& remote,
                                                              const std::string& base_sha) {
  if (past_deadline()) throw CutOff{};
  try {
    api_.delete_memory(store.memory_store_id, remote.id, base_sha);
  } catch (const std::exception& error) {
    if (is_status(error, 404)) return std::nullopt;  // already gone remotely too
    if (is_status(error, 409) || is_status(error, 412)) {
      log_.warn("memory deleted locally but changed remotely; keeping the remote version",
                {{"path", rel}, {"memory_store_id", store.memory_store_id}});
    } else {
      log_.warn(
          "failed to delete memory",
          {{"path", rel}, {"memory_store_id", store.memory_store_id}, {"error", describe(error)}});
    }
    return base_sha;
  }
  log_.info("propagated local deletion",
            {{"path", rel}, {"memory_store_id", store.memory_store_id}});
  return std::nullopt;
}

}  // namespace perimeter::runner
