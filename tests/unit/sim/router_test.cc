#include "sim/router.h"

#include <gtest/gtest.h>

#include "core/fake_clock.h"
#include "core/fake_random.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

class RouterTest : public ::testing::Test {
 protected:
  RouterTest()
      : simulator_(SimulatorOptions{}, clock_, random_),
        faults_(fault_random_),
        router_(simulator_, faults_, metrics_) {
    environment_ = simulator_.create_environment("r", "key")["id"];
  }
  ApiRequest api(const std::string& method, const std::string& path) {
    ApiRequest request;
    request.method = method;
    request.path = path;
    request.headers = {{"authorization", "Bearer key"},
                       {"anthropic-beta", "managed-agents-2026-04-01"},
                       {"anthropic-version", "2023-06-01"}};
    return request;
  }
  std::string work() { return "/v1/environments/" + environment_ + "/work"; }

  testing::FakeClock clock_;
  testing::FakeRandom random_;
  testing::FakeRandom fault_random_{0.99};
  Simulator simulator_;
  Faults faults_;
  SimMetrics metrics_;
  ApiRouter router_;
  std::string environment_;
};

TEST_F(RouterTest, XApiKeyTogetherWithBearerIsRefused) {
  ApiRequest request = api("GET", work() + "/stats");
  request.headers["x-api-key"] = "key";
  const RouteDecision decision = router_.route(request);
  EXPECT_EQ(decision.reply.status, 401);
  EXPECT_EQ(json::parse(decision.reply.body)["error"]["type"], "authentication_error");
}

TEST_F(RouterTest, TheBetaHeaderIsRequired) {
  ApiRequest request = api("GET", work() + "/stats");
  request.headers.erase("anthropic-beta");
  EXPECT_EQ(router_.route(request).reply.status, 400);
}

TEST_F(RouterTest, BlockMsOutsideOneTo999IsRefused) {
  for (const char* value : {"0", "1000", "-1", "abc", ""}) {
    ApiRequest request = api("GET", work() + "/poll");
    request.query["block_ms"] = value;
    const RouteDecision decision = router_.route(request);
    EXPECT_EQ(decision.reply.status, 400) << value;
    EXPECT_EQ(json::parse(decision.reply.body)["type"], "error");
  }
}

TEST_F(RouterTest, AnEmptyBlockingPollBecomesALongPoll) {
  ApiRequest request = api("GET", work() + "/poll");
  request.query["block_ms"] = "999";
  const RouteDecision decision = router_.route(request);
  EXPECT_EQ(decision.kind, RouteDecision::Kind::kLongPoll);
  EXPECT_EQ(decision.block, std::chrono::milliseconds(999));
  EXPECT_FALSE(decision.retry().has_value());
}

TEST_F(RouterTest, MalformedBodiesAndUnknownRoutesGetTheErrorShape) {
  ApiRequest bad = api("POST", work() + "/work_x/stop");
  bad.body = "{not json";
  EXPECT_EQ(router_.route(bad).reply.status, 400);
  EXPECT_EQ(router_.route(api("GET", "/v1/nothing/here")).reply.status, 404);
  EXPECT_EQ(router_.route(api("DELETE", work())).reply.status, 404);
  ApiRequest admin;
  admin.method = "POST";
  admin.path = "/admin/environments/" + environment_ + "/sessions";
  admin.body = R"({"scenario_yaml": "steps: [{permission: allow}]"})";
  const RouteDecision refused = router_.route(admin);
  EXPECT_EQ(refused.reply.status, 400);
  EXPECT_NE(json::parse(refused.reply.body)["error"]["message"].get<std::string>().find("tool"),
            std::string::npos);
}

TEST_F(RouterTest, FaultsApplyToTheApiButNeverToAdmin) {
  std::string error;
  ASSERT_TRUE(faults_.update({{"error_5xx_rate", 1.0}}, &error)) << error;
  EXPECT_EQ(router_.route(api("GET", work() + "/stats")).reply.status, 503);
  ApiRequest admin;
  admin.method = "GET";
  admin.path = "/admin/faults";
  EXPECT_EQ(router_.route(admin).reply.status, 200);
  EXPECT_FALSE(faults_.update({{"error_5xx_rate", 2}}, &error));
  EXPECT_FALSE(faults_.update({{"no_such_fault", 0.1}}, &error));
  EXPECT_EQ(error, "unknown fault `no_such_fault`");
}

TEST_F(RouterTest, OnlyTheFirstStreamsOfASessionAreCut) {
  const json enqueued =
      json::parse(simulator_.enqueue_session(environment_, parse_scenario("steps: []")).body);
  std::string error;
  ASSERT_TRUE(faults_.update({{"sse_drop_first_streams", 1}, {"sse_drop_after_events", 3}}, &error))
      << error;
  const std::string path =
      "/v1/sessions/" + enqueued["session_id"].get<std::string>() + "/events/stream";
  const RouteDecision first = router_.route(api("GET", path));
  ASSERT_EQ(first.kind, RouteDecision::Kind::kStream);
  EXPECT_EQ(first.drop_after_events, 3);
  const RouteDecision second = router_.route(api("GET", path));
  ASSERT_EQ(second.kind, RouteDecision::Kind::kStream);
  EXPECT_EQ(second.drop_after_events, -1);
}

TEST_F(RouterTest, SplitPathAndParseIntRejectTrickyInput) {
  EXPECT_EQ(split_path("/v1/a/b/"), (std::vector<std::string>{"v1", "a", "b"}));
  EXPECT_EQ(split_path("/v1//b"), (std::vector<std::string>{"v1", "", "b"}));
  std::int64_t value = 0;
  EXPECT_TRUE(parse_int("42", &value));
  EXPECT_EQ(value, 42);
  EXPECT_FALSE(parse_int("42abc", &value));
  EXPECT_FALSE(parse_int(" 4", &value));
  EXPECT_FALSE(parse_int("99999999999999999999", &value));
}

}  // namespace
}  // namespace perimeter::sim
