#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace perimeter::agentapi {

// A self-hosted environment work item (`type: "work"`). `raw` keeps every field the API sent,
// including ones this version does not model.
struct WorkItem {
  std::string id;
  std::string environment_id;
  std::string data_type;              // "session" or "healthcheck"
  std::string data_id;                // the session id for session items
  std::string state;                  // queued | starting | active | stopping | stopped
  std::optional<std::string> secret;  // only on the poll response
  nlohmann::json metadata = nlohmann::json::object();
  nlohmann::json raw;
};

struct HeartbeatResponse {
  std::string last_heartbeat;
  bool lease_extended = false;
  std::string state;
  std::int64_t ttl_seconds = 0;
};

struct WorkQueueStats {
  std::int64_t depth = 0;
  std::int64_t pending = 0;
  std::optional<std::string> oldest_queued_at;
  std::optional<std::int64_t> workers_polling;
};

struct WorkPage {
  std::vector<WorkItem> data;
  std::optional<std::string> next_page;
};

struct Session {
  std::string id;
  std::string status;  // rescheduling | running | idle | terminated
  nlohmann::json raw;
};

struct SessionEvent {
  std::string id;
  std::string type;
  nlohmann::json raw;
};

struct EventPage {
  std::vector<SessionEvent> data;
  std::optional<std::string> next_page;
};

struct SkillVersion {
  std::string id;
  std::string name;
  nlohmann::json raw;
};

struct PollOptions {
  std::optional<int> block_ms = 999;  // 1..999; nullopt for a non-blocking poll
  std::optional<std::int64_t> reclaim_older_than_ms;
  std::string worker_id;  // sent as Anthropic-Worker-ID when not empty
};

// The work item's `secret`, decoded.
struct WorkSecret {
  std::string sessions_token;
  std::optional<std::string> api_base_url;
};

}  // namespace perimeter::agentapi
