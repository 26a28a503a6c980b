#include "runtime/leader_election.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "kube/metric_value.h"
#include "kube/mock_transport.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;
using perimeter::testing::json_response;
using ::testing::_;
using ::testing::InSequence;
using ::testing::Return;
using ::testing::StrictMock;

MATCHER_P(MethodIs, method, "") {
  return arg.method == method;
}

constexpr const char* kNotFound = R"({"kind":"Status","code":404,"reason":"NotFound"})";
constexpr const char* kConflict = R"({"kind":"Status","code":409,"reason":"Conflict"})";

json lease(const std::string& holder, int transitions = 0, const std::string& rv = "7") {
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", "perimeter"}, {"namespace", "ops"}, {"resourceVersion", rv}}},
          {"spec",
           {{"holderIdentity", holder},
            {"leaseDurationSeconds", 15},
            {"renewTime", "2026-01-01T00:00:00.000000Z"},
            {"leaseTransitions", transitions}}}};
}

class LeaderElectionTest : public ::testing::Test {
 protected:
  LeaderElector make(const std::string& identity) {
    LeaderElectionConfig config;
    config.lease_namespace = "ops";
    config.lease_name = "perimeter";
    config.identity = identity;
    return LeaderElector(leases, config, {}, metrics, Logger("le", sink), clock, random);
  }
  testing::FakeClock clock;
  testing::FakeRandom random;
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics{registry};
  RuntimeMetrics metrics{registry};
  StrictMock<perimeter::testing::MockTransport> transport;
  kube::ResourceClient leases{transport, kube::resources::leases(), client_metrics};
  std::shared_ptr<perimeter::testing::CapturingLogSink> sink =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

TEST_F(LeaderElectionTest, CreatesTheLeaseWhenThereIsNone) {
  InSequence in_order;
  EXPECT_CALL(transport, send(MethodIs("GET"))).WillOnce(Return(json_response(404, kNotFound)));
  EXPECT_CALL(transport, send(MethodIs("POST"))).WillOnce([](const kube::HttpRequest& request) {
    const auto body = json::parse(request.body);
    EXPECT_EQ(body["spec"]["holderIdentity"], "me");
    EXPECT_EQ(body["spec"]["leaseDurationSeconds"], 15);
    EXPECT_EQ(body["metadata"]["namespace"], "ops");
    return json_response(201, request.body);
  });
  auto elector = make("me");
  EXPECT_TRUE(elector.try_acquire_or_renew());
}

TEST_F(LeaderElectionTest, WaitsOutAnotherHoldersLeaseOnItsOwnClockThenTakesOver) {
  auto elector = make("me");
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .WillRepeatedly(Return(json_response(200, lease("other", 3).dump())));
  EXPECT_FALSE(elector.try_acquire_or_renew());
  clock.advance(std::chrono::seconds(14));
  EXPECT_FALSE(elector.try_acquire_or_renew());  // unchanged record, 14 s < 15 s
  clock.advance(std::chrono::seconds(1));
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce([](const kube::HttpRequest& request) {
    const auto body = json::parse(request.body);
    EXPECT_EQ(body["metadata"]["resourceVersion"], "7");  // optimistic concurrency
    EXPECT_EQ(body["spec"]["holderIdentity"], "me");
    EXPECT_EQ(body["spec"]["leaseTransitions"], 4);
    return json_response(200, request.body);
  });
  EXPECT_TRUE(elector.try_acquire_or_renew());
}

TEST_F(LeaderElectionTest, ARenewedRecordRestartsTheWait) {
  auto elector = make("me");
  auto renewed = lease("other", 0, "8");
  renewed["spec"]["renewTime"] = "2026-01-01T00:00:10.000000Z";
  InSequence in_order;
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .WillOnce(Return(json_response(200, lease("other", 0, "7").dump())));
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .Times(3)
      .WillRepeatedly(Return(json_response(200, renewed.dump())));
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce([](const kube::HttpRequest& request) {
    return json_response(200, request.body);
  });
  EXPECT_FALSE(elector.try_acquire_or_renew());
  clock.advance(std::chrono::seconds(10));
  EXPECT_FALSE(elector.try_acquire_or_renew());  // the holder renewed: its 15 s start again
  clock.advance(std::chrono::seconds(10));
  EXPECT_FALSE(elector.try_acquire_or_renew());  // 20 s since first seen, 10 s since renewed
  clock.advance(std::chrono::seconds(5));
  EXPECT_TRUE(elector.try_acquire_or_renew());  // 15 s without a renewal: expired
}

TEST_F(LeaderElectionTest, AnEmptyHolderIsFreeAtOnceAndAConflictLoses) {
  auto elector = make("me");
  InSequence in_order;
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .WillOnce(Return(json_response(200, lease("").dump())));
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce(Return(json_response(409, kConflict)));
  EXPECT_FALSE(elector.try_acquire_or_renew());
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .WillOnce(Return(json_response(200, lease("").dump())));
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce([](const kube::HttpRequest& request) {
    return json_response(200, request.body);
  });
  EXPECT_TRUE(elector.try_acquire_or_renew());
}

TEST_F(LeaderElectionTest, ReleaseClearsTheHolderOnlyWhenItIsUs) {
  auto elector = make("me");
  InSequence in_order;
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .WillOnce(Return(json_response(200, lease("me").dump())));
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce([](const kube::HttpRequest& request) {
    const auto body = json::parse(request.body);
    EXPECT_EQ(body["spec"]["holderIdentity"], "");
    EXPECT_EQ(body["spec"]["leaseDurationSeconds"], 1);
    return json_response(200, request.body);
  });
  elector.release();
  EXPECT_CALL(transport, send(MethodIs("GET")))
      .WillOnce(Return(json_response(200, lease("other").dump())));
  elector.release();  // not ours: no write
}

TEST_F(LeaderElectionTest, RunLeadsThenStopsLeaderWorkAndReleasesOnStop) {
  // The lease API: whatever was last written is what a GET returns.
  std::mutex mutex;
  json stored;
  EXPECT_CALL(transport, send(_)).WillRepeatedly([&](const kube::HttpRequest& request) {
    std::lock_guard lock(mutex);
    if (request.method == "GET") {
      if (stored.is_null()) return json_response(404, kNotFound);
      return json_response(200, stored.dump());
    }
    stored = json::parse(request.body);
    return json_response(200, stored.dump());
  });
  LeaderElectionConfig config;
  config.lease_namespace = "ops";
  config.lease_name = "perimeter";
  config.identity = "me";
  config.retry_period = std::chrono::seconds(1);
  std::promise<void> leading;
  auto leading_future = leading.get_future();
  std::atomic<bool> work_stopped{false};
  std::atomic<bool> stopped_callback{false};
  LeaderCallbacks callbacks{[&](std::stop_token token) {
                              leading.set_value();
                              while (!token.stop_requested())
                                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                              work_stopped = true;
                            },
                            [&] { stopped_callback = true; }, nullptr};
  LeaderElector elector(leases, config, callbacks, metrics, Logger("le", sink));
  std::jthread runner([&](std::stop_token stop) { elector.run(stop); });
  ASSERT_EQ(leading_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(elector.is_leader());
  EXPECT_EQ(perimeter::testing::metric_value(registry, "perimeter_leader_election_is_leader",
                                             {{"lease", "ops/perimeter"}}),
            1);
  runner.request_stop();
  runner.join();
  EXPECT_TRUE(work_stopped);
  EXPECT_TRUE(stopped_callback);
  EXPECT_FALSE(elector.is_leader());
  std::lock_guard lock(mutex);
  EXPECT_EQ(stored["spec"]["holderIdentity"], "");
}

TEST_F(LeaderElectionTest, ALeaderWhoseLeaseIsTakenStopsItsWorkAtOnceAndDoesNotRelease) {
  std::mutex mutex;
  json stored;
  int writes_after_theft = 0;
  bool stolen = false;
  EXPECT_CALL(transport, send(_)).WillRepeatedly([&](const kube::HttpRequest& request) {
    std::lock_guard lock(mutex);
    if (request.method == "GET") {
      if (stored.is_null()) return json_response(404, kNotFound);
      return json_response(200, stored.dump());
    }
    if (stolen) ++writes_after_theft;
    stored = json::parse(request.body);
    return json_response(200, stored.dump());
  });
  LeaderElectionConfig config;
  config.lease_namespace = "ops";
  config.lease_name = "perimeter";
  config.identity = "me";
  config.retry_period = std::chrono::seconds(1);
  std::promise<void> leading;
  auto leading_future = leading.get_future();
  std::promise<void> work_stopped;
  auto work_stopped_future = work_stopped.get_future();
  LeaderCallbacks callbacks{[&](std::stop_token token) {
                              leading.set_value();
                              while (!token.stop_requested())
                                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                              work_stopped.set_value();
                            },
                            nullptr, nullptr};
  LeaderElector elector(leases, config, callbacks, metrics, Logger("le", sink));
  std::thread runner([&] { elector.run(std::stop_token{}); });
  ASSERT_EQ(leading_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  {
    // Someone else (an operator with a skewed clock, a manual edit) now holds the lease.
    std::lock_guard lock(mutex);
    stored["spec"]["holderIdentity"] = "thief";
    stored["metadata"]["resourceVersion"] = "999";
    stolen = true;
  }
  // The next renewal sees it: the work stops, and run() returns without waiting the deadline.
  ASSERT_EQ(work_stopped_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  runner.join();
  EXPECT_FALSE(elector.is_leader());
  std::lock_guard lock(mutex);
  EXPECT_EQ(stored["spec"]["holderIdentity"], "thief");
  EXPECT_EQ(writes_after_theft, 0);
}

TEST(LeaderElectionFormatTest, MicroTimeIsRfc3339WithMicroseconds) {
  const auto time =
      std::chrono::system_clock::time_point(std::chrono::microseconds(1700000000123456));
  EXPECT_EQ(LeaderElector::format_micro_time(time), "2023-11-14T22:13:20.123456Z");
}

}  // namespace
}  // namespace perimeter::runtime
