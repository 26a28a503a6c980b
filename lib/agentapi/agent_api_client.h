#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "agentapi/agent_api.h"
#include "agentapi/http_transport.h"
#include "agentapi/memory_api.h"
#include "agentapi/request_executor.h"
#include "core/backoff.h"
#include "core/log.h"
#include "core/random.h"

namespace perimeter::agentapi {

inline constexpr std::string_view kManagedAgentsBeta = "managed-agents-2026-04-01";
inline constexpr std::string_view kAgentMemoryBeta = "agent-memory-2026-07-22";
inline constexpr std::string_view kAnthropicVersion = "2023-06-01";
inline constexpr std::string_view kNoHeartbeat = "NO_HEARTBEAT";

struct ClientConfig {
  std::string base_url = "https://api.anthropic.com";
  std::string environment_id;
  // The environment key (operator) or the item's sessions token (runner); sent only as
  // Authorization: Bearer, never as x-api-key. Never logged.
  std::string credential;
  std::string user_agent = "perimeter/0.1.0";
  std::chrono::milliseconds request_timeout{60000};
  // A long-poll may hold the request for block_ms; the timeout is that plus this margin.
  std::chrono::milliseconds poll_timeout_margin{10000};
  // SSE: the longest silence tolerated between chunks (the server pings while idle).
  std::chrono::milliseconds stream_idle_timeout{60000};
  // Retries of one call on 408/409/429/5xx and transport errors, like the official SDK (2).
  int max_retries = 2;
  // 0.5 s doubling to 8 s, as the official SDK's client; jittered.
  BackoffPolicy retry_backoff = kSdkRetryBackoff;
};

// AgentApi over an HttpTransport, with the official SDK's headers, retries and error handling.
class AgentApiClient final : public AgentApi, public MemoryApi {
 public:
  AgentApiClient(ClientConfig config, std::unique_ptr<HttpTransport> transport,
                 RandomSource& random, Sleeper& sleeper, ApiMetrics* metrics = nullptr,
                 Logger logger = Logger("agentapi"));

  std::optional<WorkItem> poll(const PollOptions& options) override;
  WorkItem ack(const std::string& work_id) override;
  HeartbeatResponse heartbeat(const std::string& work_id,
                              const std::string& expected_last_heartbeat,
                              std::optional<std::int64_t> desired_ttl_seconds,
                              std::chrono::milliseconds timeout) override;
  WorkItem stop(const std::string& work_id, bool force) override;
  WorkItem retrieve_work(const std::string& work_id) override;
  WorkItem update_work_metadata(const std::string& work_id,
                                const nlohmann::json& metadata) override;
  WorkPage list_work(int limit, const std::string& page) override;
  WorkQueueStats stats() override;

  Session retrieve_session(const std::string& session_id) override;
  EventPage list_events(const std::string& session_id, int limit, const std::string& page) override;
  void send_events(const std::string& session_id, const nlohmann::json& events) override;
  std::string stream_events(const std::string& session_id, const std::string& last_event_id,
                            const std::function<bool(const SessionEvent&)>& on_event,
                            const std::atomic<bool>& cancel) override;

  SkillVersion retrieve_skill_version(const std::string& skill_id,
                                      const std::string& version) override;
  std::string download_skill_content(const std::string& skill_id,
                                     const std::string& version) override;

  MemoryPage list_memories(const std::string& store_id, const std::string& view, int limit,
                           const std::string& page) override;
  Memory retrieve_memory(const std::string& store_id, const std::string& memory_id,
                         const std::string& view) override;
  Memory create_memory(const std::string& store_id, const std::string& path,
                       const std::string& content) override;
  Memory update_memory(const std::string& store_id, const std::string& memory_id,
                       const std::string& content, const std::string& precondition_sha256) override;
  void delete_memory(const std::string& store_id, const std::string& memory_id,
                     const std::string& expected_content_sha256) override;

  const ClientConfig& config() const { return config_; }

 private:
  HttpRequest make_request(const std::string& method, const std::string& path_and_query,
                           std::chrono::milliseconds timeout) const;
  // Sends through the executor with this client's retries (`max_retries`, and `answer_status`
  // as in CallPolicy) and parses the 2xx body as JSON.
  nlohmann::json execute_json(std::string_view operation, const HttpRequest& request,
                              int max_retries, int answer_status = 0);
  std::string work_path(const std::string& work_id, std::string_view suffix = "") const;
  // A memory store call: the memory beta instead of the managed-agents one, as the SDK sends.
  HttpRequest memory_request(const std::string& method, const std::string& store_id,
                             const std::string& suffix) const;

  ClientConfig config_;
  std::unique_ptr<HttpTransport> transport_;
  RandomSource& random_;
  Sleeper& sleeper_;
  ApiMetrics* metrics_;
  Logger logger_;
  RequestExecutor executor_;
};

// Parsers for the API's objects; throw ProtocolError naming the missing field.
WorkItem parse_work_item(const nlohmann::json& json);
HeartbeatResponse parse_heartbeat(const nlohmann::json& json);
SessionEvent parse_event(const nlohmann::json& json);

}  // namespace perimeter::agentapi
