#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/audit.h"

namespace perimeter::mcpguard {

// Requests a route's server sent on an SSE stream (sampling, elicitation, roots) whose answer
// has not been seen yet. The client answers with a later POST carrying the same JSON-RPC id and
// Mcp-Session-Id, maybe on another connection, so the registry is per route and thread-safe.
// Bounded in count (the oldest is evicted) and in age (expire_older_than).
class PendingServerRequests {
 public:
  struct Entry {
    AuditRecord record;
    std::chrono::steady_clock::time_point sent;
    std::string_view metric_method;
  };

  explicit PendingServerRequests(std::size_t capacity) : capacity_(capacity) {}

  // Remembers `entry` under (session, id). An entry already under that key is returned in
  // `evicted` as are the oldest ones beyond the capacity.
  void add(const std::optional<std::string>& session, const nlohmann::json& id, Entry entry,
           std::vector<Entry>* evicted);
  // The entry answered by the client's response with `id` in `session`, removed.
  std::optional<Entry> take(const std::optional<std::string>& session, const nlohmann::json& id);
  // Every entry sent before `cutoff`, removed.
  void take_older_than(std::chrono::steady_clock::time_point cutoff, std::vector<Entry>* expired);
  void take_all(std::vector<Entry>* all);
  std::size_t size() const;

 private:
  static std::string key(const std::optional<std::string>& session, const nlohmann::json& id);

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  // Oldest first; `index_` points into it.
  std::list<std::pair<std::string, Entry>> entries_;  // guarded by mutex_
  std::unordered_map<std::string, std::list<std::pair<std::string, Entry>>::iterator>
      index_;  // guarded by mutex_
};

}  // namespace perimeter::mcpguard
