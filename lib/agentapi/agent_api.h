#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agentapi/types.h"

namespace perimeter::agentapi {

// The Managed Agents API calls Perimeter makes: the environment work queue (operator; the
// environment key) and a session's calls (runner; the item's sessions token). One instance is
// bound to one environment and one credential. Every call throws ApiError on a non-2xx answer
// (after the retries the official SDK would make), TransportError when no answer came, and
// ProtocolError when a 2xx body is not what the API documents.
class AgentApi {
 public:
  virtual ~AgentApi() = default;

  // ---- the work queue: /v1/environments/{environment_id}/work ----
  // One long-poll; nullopt when the queue had nothing to claim.
  virtual std::optional<WorkItem> poll(const PollOptions& options) = 0;
  virtual WorkItem ack(const std::string& work_id) = 0;
  // `expected_last_heartbeat` is "NO_HEARTBEAT" on the first beat, then the server's previous
  // last_heartbeat. A 412 (lease held elsewhere) is never retried. `timeout` cuts the call off.
  virtual HeartbeatResponse heartbeat(const std::string& work_id,
                                      const std::string& expected_last_heartbeat,
                                      std::optional<std::int64_t> desired_ttl_seconds,
                                      std::chrono::milliseconds timeout) = 0;
  virtual WorkItem stop(const std::string& work_id, bool force) = 0;
  virtual WorkItem retrieve_work(const std::string& work_id) = 0;
  // Merges `metadata` into the item's; a null value deletes that key.
  virtual WorkItem update_work_metadata(const std::string& work_id,
                                        const nlohmann::json& metadata) = 0;
  virtual WorkPage list_work(int limit, const std::string& page) = 0;
  virtual WorkQueueStats stats() = 0;

  // ---- a session: /v1/sessions/{session_id} ----
  virtual Session retrieve_session(const std::string& session_id) = 0;
  virtual EventPage list_events(const std::string& session_id, int limit,
                                const std::string& page) = 0;
  // Posts {"events": events}.
  virtual void send_events(const std::string& session_id, const nlohmann::json& events) = 0;
  // Streams the session's events (SSE) from after `last_event_id` (all when empty), calling
  // `on_event` for each named event until the server ends the stream, `on_event` returns false,
  // or `cancel` is set. Returns the id of the last event delivered, for the next reconnect.
  virtual std::string stream_events(const std::string& session_id, const std::string& last_event_id,
                                    const std::function<bool(const SessionEvent&)>& on_event,
                                    const std::atomic<bool>& cancel) = 0;

  // ---- skills ----
  virtual SkillVersion retrieve_skill_version(const std::string& skill_id,
                                              const std::string& version) = 0;
  // The archive bytes of a skill version.
  virtual std::string download_skill_content(const std::string& skill_id,
                                             const std::string& version) = 0;
};

}  // namespace perimeter::agentapi
