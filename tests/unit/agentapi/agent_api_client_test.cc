#include "agentapi/agent_api_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "core/fake_random.h"

namespace perimeter::agentapi {
namespace {

using std::chrono::milliseconds;
using ::testing::_;
using ::testing::Contains;
using testing::http_reply;
using ::testing::Invoke;
using testing::MockHttpTransport;
using ::testing::Pair;
using testing::RecordingSleeper;
using ::testing::Return;
using ::testing::StrictMock;

const char* kItem = R"({"type":"work","id":"work_1","environment_id":"env_1",
  "data":{"type":"session","id":"sesn_1"},"state":"queued","metadata":{},"secret":"abc"})";

class AgentApiClientTest : public ::testing::Test {
 protected:
  AgentApiClientTest() {
    auto transport = std::make_unique<StrictMock<MockHttpTransport>>();
    transport_ = transport.get();
    ClientConfig config;
    config.base_url = "http://127.0.0.1:9/";
    config.environment_id = "env_1";
    config.credential = "env-key";
    config.user_agent = "perimeter-test/1";
    // FakeRandom's 0.5 makes the jitter factor exactly 1, so delays are the base delays.
    client_ = std::make_unique<AgentApiClient>(config, std::move(transport), random_, sleeper_,
                                               &metrics_);
  }

  testing::FakeRandom random_{0.5};
  RecordingSleeper sleeper_;
  testing::RecordingApiMetrics metrics_;
  StrictMock<MockHttpTransport>* transport_;
  std::unique_ptr<AgentApiClient> client_;
};

TEST_F(AgentApiClientTest, PollSendsTheSdksPathQueryAndHeaders) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, kItem);
  }));
  PollOptions options;
  options.reclaim_older_than_ms = 5000;
  options.worker_id = "operator-0";
  const auto item = client_->poll(options);
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(item->id, "work_1");
  EXPECT_EQ(item->data_id, "sesn_1");
  EXPECT_EQ(item->secret, "abc");
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.url,
            "http://127.0.0.1:9/v1/environments/env_1/work/poll?block_ms=999&"
            "reclaim_older_than_ms=5000");
  EXPECT_THAT(seen.headers, Contains(Pair("Authorization", "Bearer env-key")));
  EXPECT_THAT(seen.headers, Contains(Pair("anthropic-beta", "managed-agents-2026-04-01")));
  EXPECT_THAT(seen.headers, Contains(Pair("anthropic-version", "2023-06-01")));
  EXPECT_THAT(seen.headers, Contains(Pair("User-Agent", "perimeter-test/1")));
  EXPECT_THAT(seen.headers, Contains(Pair("Anthropic-Worker-ID", "operator-0")));
  for (const auto& header : seen.headers) EXPECT_NE(header.first, "x-api-key");
  // The long-poll may hold the request for block_ms; the timeout leaves a margin on top.
  EXPECT_EQ(seen.timeout, milliseconds(999 + 10000));
}

TEST_F(AgentApiClientTest, PollReturnsNothingOnJsonNull) {
  EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(200, "null")));
  EXPECT_FALSE(client_->poll({}).has_value());
}

TEST_F(AgentApiClientTest, PollRefusesABlockMsTheApiWouldRefuse) {
  PollOptions options;
  options.block_ms = 1000;
  EXPECT_THROW(client_->poll(options), std::invalid_argument);
}

TEST_F(AgentApiClientTest, RetriesServerErrorsWithExponentialBackoffThenSucceeds) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(
          Return(http_reply(503, R"({"type":"error","error":{"type":"api_error","message":"x"}})")))
      .WillOnce(Return(http_reply(529, "{}")))
      .WillOnce(Return(http_reply(200, "null")));
  EXPECT_FALSE(client_->poll({}).has_value());
  EXPECT_EQ(sleeper_.delays, (std::vector<milliseconds>{milliseconds(500), milliseconds(1000)}));
  ASSERT_EQ(metrics_.retries.size(), 2u);
  EXPECT_EQ(metrics_.retries[0].first, "work.poll:503");
  EXPECT_EQ(metrics_.responses.back(), std::make_pair(std::string("work.poll"), 200));
}

TEST_F(AgentApiClientTest, HonoursRetryAfterMs) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(429, "{}", {{"retry-after-ms", "250"}})))
      .WillOnce(Return(http_reply(200, "null")));
  client_->poll({});
  EXPECT_EQ(sleeper_.delays, (std::vector<milliseconds>{milliseconds(250)}));
}

TEST_F(AgentApiClientTest, GivesUpAfterMaxRetriesKeepingTheLastErrorBody) {
  const std::string body =
      R"({"type":"error","error":{"type":"overloaded_error","message":"busy"}})";
  EXPECT_CALL(*transport_, send(_)).Times(3).WillRepeatedly(Return(http_reply(529, body)));
  try {
    client_->stats();
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 529);
    EXPECT_EQ(e.error_type(), "overloaded_error");
    EXPECT_EQ(e.api_message(), "busy");
    EXPECT_EQ(e.raw_body(), body);
    EXPECT_FALSE(e.fatal());
  }
}

TEST_F(AgentApiClientTest, AFatal4xxIsNotRetriedAndKeepsTheServersError) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(401,
                                  R"({"type":"error","error":{"type":"authentication_error",
                                 "message":"invalid environment key"}})",
                                  {{"request-id", "req_42"}})));
  try {
    client_->poll({});
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 401);
    EXPECT_TRUE(e.fatal());
    EXPECT_EQ(e.error_type(), "authentication_error");
    EXPECT_EQ(e.request_id(), "req_42");
    EXPECT_NE(std::string(e.what()).find("invalid environment key"), std::string::npos);
  }
  EXPECT_TRUE(sleeper_.delays.empty());
}

TEST_F(AgentApiClientTest, XShouldRetryFalseStopsARetry) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(503, "{}", {{"x-should-retry", "false"}})));
  EXPECT_THROW(client_->poll({}), ApiError);
}

TEST_F(AgentApiClientTest, TransportErrorsAreRetriedThenSurfaced) {
  EXPECT_CALL(*transport_, send(_))
      .Times(3)
      .WillRepeatedly(Invoke(
          [](const HttpRequest&) -> HttpResponse { throw TransportError("connection refused"); }));
  EXPECT_THROW(client_->ack("work_1"), TransportError);
  EXPECT_EQ(sleeper_.delays.size(), 2u);
}

TEST_F(AgentApiClientTest, HeartbeatEncodesTheEchoAndIsNeverRetried) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200,
                      R"({"type":"work_heartbeat","last_heartbeat":"2026-01-01T00:00:01.000001Z",
                          "lease_extended":true,"state":"active","ttl_seconds":40})");
  }));
  const HeartbeatResponse beat =
      client_->heartbeat("work_1", "2026-01-01T00:00:00.5Z", 40, milliseconds(20000));
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.url,
            "http://127.0.0.1:9/v1/environments/env_1/work/work_1/heartbeat?"
            "expected_last_heartbeat=2026-01-01T00%3A00%3A00.5Z&desired_ttl_seconds=40");
  EXPECT_EQ(seen.timeout, milliseconds(20000));
  EXPECT_EQ(beat.last_heartbeat, "2026-01-01T00:00:01.000001Z");
  EXPECT_TRUE(beat.lease_extended);
  EXPECT_EQ(beat.ttl_seconds, 40);

  EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(503, "{}")));
  EXPECT_THROW(client_->heartbeat("work_1", "NO_HEARTBEAT", std::nullopt, milliseconds(1000)),
               ApiError);
  EXPECT_TRUE(sleeper_.delays.empty());
}

TEST_F(AgentApiClientTest, A412CarriesTheServersLeaseState) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(412, R"({"type":"error","error":{"type":"invalid_request_error",
        "message":"mismatch","details":{"error_code":"heartbeat_precondition_failed",
        "current_state":{"state":"active","ttl_seconds":60,"last_heartbeat":"T2",
        "lease_extended":true}}}})")));
  try {
    client_->heartbeat("work_1", "T1", std::nullopt, milliseconds(1000));
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 412);
    EXPECT_TRUE(e.fatal());
    EXPECT_EQ(e.lease_state()["last_heartbeat"], "T2");
  }
}

TEST_F(AgentApiClientTest, StopSendsForceAndA409IsAnAnswerNotARetry) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Invoke([&](const HttpRequest& request) {
        seen = request;
        return http_reply(200, kItem);
      }))
      .WillOnce(Return(http_reply(
          409, R"({"type":"error","error":{"type":"conflict_error","message":"stopped"}})")));
  client_->stop("work_1", true);
  EXPECT_EQ(seen.body, R"({"force":true})");
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/v1/environments/env_1/work/work_1/stop");
  try {
    client_->stop("work_1", true);
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 409);
    EXPECT_FALSE(e.fatal());
  }
  EXPECT_TRUE(sleeper_.delays.empty());
}

TEST_F(AgentApiClientTest, StopIsRetriedThroughServerErrors) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(
          503, R"({"type":"error","error":{"type":"api_error","message":"unavailable"}})")))
      .WillOnce(Return(http_reply(
          429, R"({"type":"error","error":{"type":"rate_limit_error","message":"slow"}})")))
      .WillOnce(Return(http_reply(200, kItem)));
  EXPECT_EQ(client_->stop("work_1", true).id, "work_1");
  EXPECT_EQ(sleeper_.delays.size(), 2u);
}

TEST_F(AgentApiClientTest, ABodyThatIsNotJsonIsAProtocolError) {
  EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(200, "<html>gateway</html>")));
  EXPECT_THROW(client_->retrieve_work("work_1"), ProtocolError);
  EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(200, R"({"id":"work_1"})")));
  EXPECT_THROW(client_->retrieve_work("work_1"), ProtocolError);
}

TEST_F(AgentApiClientTest, ListFollowsTheCursorParameter) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, std::string(R"({"data":[)") + kItem + R"(],"next_page":"work_2"})");
  }));
  const WorkPage page = client_->list_work(1, "work_1");
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/v1/environments/env_1/work?limit=1&page=work_1");
  ASSERT_EQ(page.data.size(), 1u);
  EXPECT_EQ(page.next_page, "work_2");
}

TEST_F(AgentApiClientTest, SendEventsPostsTheBatch) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, R"({"data":[]})");
  }));
  client_->send_events("sesn_1", nlohmann::json::array({{{"type", "user.interrupt"}}}));
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/v1/sessions/sesn_1/events");
  EXPECT_EQ(seen.body, R"({"events":[{"type":"user.interrupt"}]})");
  EXPECT_THROW(client_->send_events("sesn_1", nlohmann::json::array()), std::invalid_argument);
}

TEST_F(AgentApiClientTest, StreamDeliversNamedEventsAcrossChunkBoundaries) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, stream(_, _, _))
      .WillOnce(Invoke([&](const HttpRequest& request,
                           const std::function<bool(std::string_view)>& on_chunk,
                           const std::atomic<bool>&) {
        seen = request;
        on_chunk(
            ": comment\n\nevent: ping\ndata: {}\n\ndata: {\"id\":\"x\",\"type\":\"unnamed\"}\n\n");
        on_chunk("event: agent.tool_use\nid: sevt_2\ndata: {\"id\":\"sevt_2\",");
        on_chunk("\"type\":\"agent.tool_use\"}\r\n\r\nevent: session.status_idle\nid: sevt_3\n");
        on_chunk("data: {\"id\":\"sevt_3\",\"type\":\"session.status_idle\"}\n\n");
        return http_reply(200, "");
      }));
  std::vector<std::string> types;
  std::atomic<bool> cancel{false};
  const std::string last = client_->stream_events(
      "sesn_1", "sevt_1",
      [&](const SessionEvent& event) {
        types.push_back(event.type);
        return true;
      },
      cancel);
  EXPECT_EQ(types, (std::vector<std::string>{"agent.tool_use", "session.status_idle"}));
  EXPECT_EQ(last, "sevt_3");
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/v1/sessions/sesn_1/events/stream");
  EXPECT_THAT(seen.headers, Contains(Pair("Last-Event-ID", "sevt_1")));
  EXPECT_THAT(seen.headers, Contains(Pair("Accept", "text/event-stream")));
}

TEST_F(AgentApiClientTest, AStreamRefusedByTheServerIsAnApiError) {
  EXPECT_CALL(*transport_, stream(_, _, _))
      .WillOnce(Return(http_reply(
          401, R"({"type":"error","error":{"type":"authentication_error","message":"no"}})")));
  std::atomic<bool> cancel{false};
  try {
    client_->stream_events(
        "sesn_1", "", [](const SessionEvent&) { return true; }, cancel);
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 401);
    EXPECT_TRUE(e.fatal());
  }
}

TEST(ApiErrorTest, FatalFollowsTheOfficialSdk) {
  for (int status : {400, 401, 403, 404, 412, 422}) EXPECT_TRUE(is_fatal_4xx(status)) << status;
  for (int status : {408, 409, 429, 500, 503, 200}) EXPECT_FALSE(is_fatal_4xx(status)) << status;
  for (int status : {408, 409, 429, 500, 529}) EXPECT_TRUE(is_retryable_status(status)) << status;
  for (int status : {400, 401, 404, 412}) EXPECT_FALSE(is_retryable_status(status)) << status;
}

}  // namespace
}  // namespace perimeter::agentapi
