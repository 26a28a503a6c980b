#pragma once

#include <gmock/gmock.h>

#include "agentapi/agent_api.h"
#include "agentapi/http_transport.h"
#include "agentapi/request_executor.h"

namespace perimeter::testing {

// gMock of the Managed Agents API client, for the operator's and the runner's unit tests
// (use as StrictMock<MockAgentApi>).
class MockAgentApi : public agentapi::AgentApi {
 public:
  MOCK_METHOD(std::optional<agentapi::WorkItem>, poll, (const agentapi::PollOptions&), (override));
  MOCK_METHOD(agentapi::WorkItem, ack, (const std::string&), (override));
  MOCK_METHOD(agentapi::HeartbeatResponse, heartbeat,
              (const std::string&, const std::string&, std::optional<std::int64_t>,
               std::chrono::milliseconds),
              (override));
  MOCK_METHOD(agentapi::WorkItem, stop, (const std::string&, bool), (override));
  MOCK_METHOD(agentapi::WorkItem, retrieve_work, (const std::string&), (override));
  MOCK_METHOD(agentapi::WorkItem, update_work_metadata, (const std::string&, const nlohmann::json&),
              (override));
  MOCK_METHOD(agentapi::WorkPage, list_work, (int, const std::string&), (override));
  MOCK_METHOD(agentapi::WorkQueueStats, stats, (), (override));
  MOCK_METHOD(agentapi::Session, retrieve_session, (const std::string&), (override));
  MOCK_METHOD(agentapi::EventPage, list_events, (const std::string&, int, const std::string&),
              (override));
  MOCK_METHOD(void, send_events, (const std::string&, const nlohmann::json&), (override));
  MOCK_METHOD(std::string, stream_events,
              (const std::string&, const std::string&,
               const std::function<bool(const agentapi::SessionEvent&)>&, const std::atomic<bool>&),
              (override));
  MOCK_METHOD(agentapi::SkillVersion, retrieve_skill_version,
              (const std::string&, const std::string&), (override));
  MOCK_METHOD(std::string, download_skill_content, (const std::string&, const std::string&),
              (override));
};

// gMock of the HTTP boundary, for the client's own unit tests.
class MockHttpTransport : public agentapi::HttpTransport {
 public:
  MOCK_METHOD(agentapi::HttpResponse, send, (const agentapi::HttpRequest&), (override));
  MOCK_METHOD(agentapi::HttpResponse, stream,
              (const agentapi::HttpRequest&, const std::function<bool(std::string_view)>&,
               const std::atomic<bool>&),
              (override));
};

// An HTTP answer for a MockHttpTransport to return.
inline agentapi::HttpResponse http_reply(
    int status, std::string body, std::vector<std::pair<std::string, std::string>> headers = {}) {
  agentapi::HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  response.headers = std::move(headers);
  return response;
}

// Records what a client reports to its ApiMetrics.
class RecordingApiMetrics : public agentapi::ApiMetrics {
 public:
  void on_response(std::string_view operation, int status, double) override {
    responses.emplace_back(std::string(operation), status);
  }
  void on_retry(std::string_view operation, int status, std::chrono::milliseconds delay) override {
    retries.emplace_back(std::string(operation) + ":" + std::to_string(status), delay);
  }
  void on_protocol_error(std::string_view operation) override {
    protocol_errors.emplace_back(operation);
  }
  std::vector<std::pair<std::string, int>> responses;
  std::vector<std::pair<std::string, std::chrono::milliseconds>> retries;
  std::vector<std::string> protocol_errors;
};

// Records the delays it was asked to wait instead of waiting.
class RecordingSleeper : public agentapi::Sleeper {
 public:
  void sleep_for(std::chrono::milliseconds delay) override { delays.push_back(delay); }
  std::vector<std::chrono::milliseconds> delays;
};

}  // namespace perimeter::testing
