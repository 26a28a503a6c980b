#include "runtime/event_recorder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "kube/metric_value.h"
#include "kube/mock_transport.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;
using perimeter::testing::json_response;
using perimeter::testing::metric_value;
using ::testing::InSequence;
using ::testing::StrictMock;

MATCHER_P2(RequestIs, method, path_prefix, "") {
  return arg.method == method && arg.path_and_query.rfind(path_prefix, 0) == 0;
}

const json kPod = {{"apiVersion", "v1"},
                   {"kind", "Pod"},
                   {"metadata", {{"namespace", "a"}, {"name", "runner-1"}, {"uid", "u-1"}}}};

class EventRecorderTest : public ::testing::Test {
 protected:
  EventRecorderOptions options() {
    EventRecorderOptions out;
    out.component = "perimeter-operator";
    out.host = "node-1";
    return out;
  }
  testing::FakeClock clock;
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics{registry};
  RuntimeMetrics metrics{registry};
  StrictMock<perimeter::testing::MockTransport> transport;
  kube::ResourceClient events{transport, kube::resources::events(), client_metrics};
  std::shared_ptr<perimeter::testing::CapturingLogSink> sink =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

TEST_F(EventRecorderTest, WritesAnEventThenAggregatesRepeatsIntoItsCount) {
  std::string created_name;
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(RequestIs("POST", "/api/v1/namespaces/a/events")))
        .WillOnce([&](const kube::HttpRequest& request) {
          const auto body = json::parse(request.body);
          EXPECT_EQ(body["involvedObject"]["name"], "runner-1");
          EXPECT_EQ(body["involvedObject"]["uid"], "u-1");
          EXPECT_EQ(body["reason"], "SessionStarted");
          EXPECT_EQ(body["type"], "Normal");
          EXPECT_EQ(body["source"]["component"], "perimeter-operator");
          EXPECT_EQ(body["count"], 1);
          created_name = body["metadata"]["name"];
          return json_response(201, request.body);
        });
    EXPECT_CALL(transport, send(RequestIs("PATCH", "/api/v1/namespaces/a/events/runner-1.")))
        .WillOnce([&](const kube::HttpRequest& request) {
          EXPECT_NE(request.path_and_query.find(created_name), std::string::npos);
          EXPECT_EQ(json::parse(request.body)["count"], 2);
          return json_response(200, "{}");
        });
    EXPECT_CALL(transport, send(RequestIs("POST", "/api/v1/namespaces/a/events")))
        .WillOnce([&](const kube::HttpRequest& request) {
          EXPECT_EQ(json::parse(request.body)["reason"], "SessionFailed");
          return json_response(201, request.body);
        });
  }
  EventRecorder recorder(events, options(), metrics, Logger("ev", sink), clock);
  recorder.record(kPod, "Normal", "SessionStarted", "session s-1 started");
  recorder.flush();
  recorder.record(kPod, "Normal", "SessionStarted", "session s-1 started");
  recorder.flush();
  recorder.record(kPod, "Warning", "SessionFailed", "runner exited 1");
  recorder.flush();
}

TEST_F(EventRecorderTest, AnExpiredEventIsWrittenAfresh) {
  InSequence in_order;
  EXPECT_CALL(transport, send(RequestIs("POST", "/api/v1/namespaces/a/events")))
      .WillOnce([](const kube::HttpRequest& r) { return json_response(201, r.body); });
  EXPECT_CALL(transport, send(RequestIs("PATCH", "/api/v1/namespaces/a/events/")))
      .WillOnce([](const kube::HttpRequest&) {
        return json_response(404, R"({"kind":"Status","code":404,"reason":"NotFound"})");
      });
  EXPECT_CALL(transport, send(RequestIs("POST", "/api/v1/namespaces/a/events")))
      .WillOnce([](const kube::HttpRequest& r) {
        EXPECT_EQ(json::parse(r.body)["count"], 1);
        return json_response(201, r.body);
      });
  EventRecorder recorder(events, options(), metrics, Logger("ev", sink), clock);
  recorder.record(kPod, "Normal", "Pulled", "same");
  recorder.flush();
  recorder.record(kPod, "Normal", "Pulled", "same");
  recorder.flush();
}

TEST_F(EventRecorderTest, ANoisyObjectIsRateLimitedAndDropsAreCounted) {
  auto opts = options();
  opts.burst_per_object = 2;
  EXPECT_CALL(transport, send(RequestIs("POST", "/api/v1/namespaces/a/events")))
      .Times(2)
      .WillRepeatedly([](const kube::HttpRequest& r) { return json_response(201, r.body); });
  EventRecorder recorder(events, opts, metrics, Logger("ev", sink), clock);
  for (int i = 0; i < 5; ++i) recorder.record(kPod, "Normal", "Tick", "tick " + std::to_string(i));
  recorder.flush();
  EXPECT_EQ(metric_value(registry, "perimeter_events_dropped_total", {{"reason", "rate_limited"}}),
            3);
}

TEST_F(EventRecorderTest, AServerErrorIsLoggedAndCountedNeverThrown) {
  EXPECT_CALL(transport, send(RequestIs("POST", "/api/v1/namespaces/a/events")))
      .WillOnce([](const kube::HttpRequest&) {
        return json_response(
            403, R"({"kind":"Status","code":403,"reason":"Forbidden","message":"no rbac"})");
      });
  EventRecorder recorder(events, options(), metrics, Logger("ev", sink), clock);
  recorder.record(kPod, "Warning", "X", "y");
  recorder.flush();
  EXPECT_EQ(metric_value(registry, "perimeter_events_dropped_total", {{"reason", "error"}}), 1);
  bool logged = false;
  for (const auto& line : sink->lines()) logged |= line.find("no rbac") != std::string::npos;
  EXPECT_TRUE(logged);
}

}  // namespace
}  // namespace perimeter::runtime
