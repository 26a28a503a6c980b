#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sim/api_reply.h"

namespace perimeter::sim {

// The memory stores the hosted service keeps for agents (`/v1/memory_stores/{id}/memories`),
// with the shapes of the SDK's `resources/beta/memory-stores/memories.ts`: the store's memories
// keyed by path, each with its content, `content_sha256` and a version id that changes on every
// write. The rules only: who may call is the Simulator's business (sessions tokens of sessions
// the store is attached to). Not thread-safe: the Simulator holds its lock around every call.
class MemoryStores {
 public:
  static constexpr std::size_t kMaxContentBytes = 100 * 1024;
  static constexpr std::size_t kMaxMemoriesPerStore = 2000;
  static constexpr int kMaxBasicPage = 100;
  static constexpr int kMaxFullPage = 20;

  // `new_id(prefix)` makes unique ids, `now()` RFC 3339 timestamps.
  MemoryStores(std::function<std::string(const char*)> new_id, std::function<std::string()> now);

  // A new store holding `memories` (path -> content), recorded in its history as `seed`.
  std::string create_store(const std::string& name, const std::string& environment_id,
                           const std::vector<std::pair<std::string, std::string>>& memories);
  bool exists(const std::string& store_id) const;

  // `actor` names who called, for the history (a work id, or `scenario` for remote changes).
  ApiReply list(const std::string& store_id, const std::string& view, int limit,
                const std::string& page, const std::string& path_prefix) const;
  ApiReply retrieve(const std::string& store_id, const std::string& memory_id,
                    const std::string& view) const;
  ApiReply create(const std::string& store_id, const nlohmann::json& body, const std::string& view,
                  const std::string& actor);
  ApiReply update(const std::string& store_id, const std::string& memory_id,
                  const nlohmann::json& body, const std::string& view, const std::string& actor);
  ApiReply remove(const std::string& store_id, const std::string& memory_id,
                  const std::optional<std::string>& expected_content_sha256,
                  const std::string& actor);

  // Another writer's change, by path: writes (creating or updating) or deletes the memory.
  void apply_remote_change(const std::string& store_id, const std::string& path,
                           const std::optional<std::string>& content);

  // {type: "memory_store_admin", id, name, environment_id, memories: [{id, path, content,
  // content_sha256, memory_version_id}] by path, history: [{op, path, memory_id, status, actor,
  // at, error?}]}.
  nlohmann::json admin_view(const std::string& store_id) const;

 private:
  struct Memory {
    std::string id;
    std::string path;
    std::string content;
    std::string sha;
    std::string version_id;
    std::string created_at;
    std::string updated_at;
  };
  struct Store {
    std::string id;
    std::string name;
    std::string environment_id;
    std::map<std::string, Memory> by_id;
    std::map<std::string, std::string> path_to_id;  // sorted by path: listing order
    std::vector<nlohmann::json> history;
  };

  nlohmann::json render(const Store& store, const Memory& memory, bool full) const;
  Memory& write(Store& store, const std::string& path, const std::string& content);
  void record(Store& store, const std::string& op, const std::string& path,
              const std::string& memory_id, int status, const std::string& actor,
              const std::string& error = "");
  // nullopt when fine, else the 400/413 reply.
  std::optional<ApiReply> check_content(const nlohmann::json& content) const;

  std::function<std::string(const char*)> new_id_;
  std::function<std::string()> now_;
  std::map<std::string, Store> stores_;
};

}  // namespace perimeter::sim
