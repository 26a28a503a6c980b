#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentapi/memory_api.h"
#include "core/clock.h"
#include "core/log.h"
#include "runner/memory_file_store.h"

namespace perimeter::runner {

// The SDK's constants (`tools/agent-toolset/memories.ts`, `sync-interval.ts`).
inline constexpr std::chrono::milliseconds kDefaultMemorySyncInterval{15'000};
inline constexpr std::chrono::milliseconds kMinMemorySyncInterval{5'000};
inline constexpr std::chrono::milliseconds kMemoryFlushTimeout{30'000};
inline constexpr std::chrono::milliseconds kDeleteCorroboration{30'000};
inline constexpr const char* kMemoryMarkerPath = ".anthropic-memory-store";

// A session's memory stores could not be mounted: the item fails (the SDK's SessionMemoryError).
class SessionMemoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whether a locally deleted file may delete its memory on the server (the SDK's MemoryDeleteMode).
enum class MemoryDeleteMode { kEnabled, kLogOnly, kDisabled };

struct SessionMemoryOptions {
  std::string workdir;  // for the `<workdir>/memory/<name>` fallback
  std::chrono::milliseconds sync_interval = kDefaultMemorySyncInterval;
  MemoryDeleteMode deletions = MemoryDeleteMode::kEnabled;
};

// The memory stores attached to one session, on disk: a port of the SDK's SessionMemoryStores
// with the same merge rules, logs and request sequence per store (stores one after another and
// each request in turn, where the SDK overlaps them; the outcome is the same). `download` at
// claim, `sync_if_due` after each tool call, `finish` once at a clean end, a bounded
// `flush_writes` in every teardown, `dispose` last. Not thread-safe.
class SessionMemoryStores {
 public:
  // Throws std::invalid_argument for an interval under kMinMemorySyncInterval.
  SessionMemoryStores(agentapi::MemoryApi& api, SessionMemoryOptions options, const Clock& clock,
                      Logger logger);

  // Every memory_store resource of the session (its `resources`) onto disk; throws
  // SessionMemoryError on the first store it cannot materialise.
  void download(const nlohmann::json& session);
  // The stores' roots (the file tools' allowed roots), and those attached read-only.
  std::vector<std::string> roots() const;
  std::vector<std::string> read_only_roots() const;

  void sync_if_due();
  // The session's last sync: deletes go out without their wait. Throws std::logic_error if run
  // twice. Starts no request after `deadline`; true when that cut it off.
  bool finish(Clock::TimePoint deadline);
  bool sync_all(bool final, std::optional<Clock::TimePoint> deadline = std::nullopt);
  // Push-only: uploads new and changed files, no deletes, no pulls; no request starts after
  // `deadline`; true when that cut it off. Never throws.
  bool flush_writes(Clock::TimePoint deadline);
  // Removes the folders download created (not one that fails the marker check).
  void dispose();

 private:
  struct Store {
    std::string memory_store_id;
    std::unique_ptr<MemoryFileStore> files;
    bool read_only = false;
    std::map<std::string, std::string> baseline;
    std::map<std::string, std::string> refused_shas;
    std::map<std::string, Clock::TimePoint> pending_deletes;
    std::map<std::string, std::string> sent_shas;
  };
  struct MarkerScan {
    std::map<std::string, std::string> files;
    bool marker_ok = false;
    std::string distrust_reason;
  };
  struct DeletePass {
    MemoryDeleteMode mode;
    int cap;
    bool waive_window;
    int attempted = 0, capped = 0, suppressed = 0;
    bool take_slot();
  };
  using Remote = std::map<std::string, agentapi::Memory>;

  std::string store_root(const nlohmann::json& resource) const;
  MarkerScan scan_marker(Store& store) const;
  void sync_store(Store& store, bool final);
  void flush_store(Store& store);
  void recover(Store& store, const std::string& reason);
  void stamp_and_pull(Store& store);
  Remote list_memories(const std::string& store_id, const std::string& view);
  void settle_sent(Store& store, const Remote& remote) const;
  std::optional<std::string> sync_path(
      Store& store, const std::string& rel, const agentapi::Memory* remote,
      std::optional<std::string> local_sha,
      std::vector<std::pair<std::string, agentapi::Memory>>& pulls);
  std::optional<std::string> remove_local(Store& store, const std::string& rel,
                                          const std::string& expect_sha);
  bool write(Store& store, const std::string& rel, const std::string& content);
  void pull_all(Store& store, const std::vector<std::pair<std::string, agentapi::Memory>>& pulls);
  std::optional<std::string> upload(Store& store, const std::string& rel,
                                    const std::optional<std::string>& local_sha,
                                    const agentapi::Memory* existing);
  std::optional<std::string> corroborated_delete(Store& store, const std::string& rel,
                                                 const agentapi::Memory& remote,
                                                 const std::string& base_sha, DeletePass& deletes);
  std::optional<std::string> delete_remote(Store& store, const std::string& rel,
                                           const agentapi::Memory& remote,
                                           const std::string& base_sha);
  // True once a bounded pass must start no more requests.
  bool past_deadline() const;

  agentapi::MemoryApi& api_;
  SessionMemoryOptions options_;
  const Clock& clock_;
  Logger log_;
  Clock::TimePoint last_sync_at_;
  bool finished_ = false;
  std::optional<Clock::TimePoint> deadline_;
  std::vector<Store> stores_;
};

}  // namespace perimeter::runner
