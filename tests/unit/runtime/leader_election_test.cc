#include "runtime/leader_election.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "kube/fake_api_server.h"
#include "kube/metric_value.h"
#include "kube/mock_transport.h"
#include "kube/slow_transport.h"

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

TEST_F(LeaderElectionTest, EveryLeaseRequestIsBoundedByWhatRemainsOfTheRenewDeadline) {
  auto elector = make("me");  // renew deadline 10 s
  InSequence in_order;
  EXPECT_CALL(transport, send(MethodIs("GET"))).WillOnce([&](const kube::HttpRequest& request) {
    EXPECT_EQ(request.timeout, std::chrono::seconds(10));
    clock.advance(std::chrono::milliseconds(3500));  // a slow answer
    return json_response(200, lease("me").dump());
  });
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce([&](const kube::HttpRequest& request) {
    EXPECT_EQ(request.timeout, std::chrono::seconds(6));  // 6.5 s left, in whole seconds
    return json_response(200, request.body);
  });
  EXPECT_TRUE(elector.try_acquire_or_renew());

  EXPECT_CALL(transport, send(MethodIs("GET"))).WillOnce([&](const kube::HttpRequest&) {
    clock.advance(std::chrono::milliseconds(9750));
    return json_response(200, lease("me").dump());
  });
  EXPECT_CALL(transport, send(MethodIs("PUT"))).WillOnce([&](const kube::HttpRequest& request) {
    EXPECT_EQ(request.timeout, std::chrono::milliseconds(200));  // under a second: tenths
    return json_response(200, request.body);
  });
  EXPECT_TRUE(elector.try_acquire_or_renew());

  // With no time left the write is not sent at all: the attempt fails.
  EXPECT_CALL(transport, send(MethodIs("GET"))).WillOnce([&](const kube::HttpRequest&) {
    clock.advance(std::chrono::milliseconds(9950));
    return json_response(200, lease("me").dump());
  });
  EXPECT_FALSE(elector.try_acquire_or_renew());
}

TEST_F(LeaderElectionTest, RefusesTimingsThatCannotKeepOneLeader) {
  auto build = [&](int lease_s, int renew_s, int retry_s) {
    LeaderElectionConfig config;
    config.lease_namespace = "ops";
    config.lease_name = "perimeter";
    config.identity = "me";
    config.lease_duration = std::chrono::seconds(lease_s);
    config.renew_deadline = std::chrono::seconds(renew_s);
    config.retry_period = std::chrono::seconds(retry_s);
    LeaderElector elector(leases, config, {}, metrics, Logger("le", sink), clock, random);
  };
  EXPECT_NO_THROW(build(15, 10, 2));
  EXPECT_THAT([&] { build(15, 15, 2); },
              ::testing::ThrowsMessage<std::invalid_argument>(::testing::HasSubstr(
                  "renew deadline (15 s) must be shorter than the lease duration (15 s)")));
  EXPECT_THAT([&] { build(15, 10, 10); },
              ::testing::ThrowsMessage<std::invalid_argument>(::testing::HasSubstr(
                  "retry period (10 s) must be shorter than the renew deadline (10 s)")));
  EXPECT_THROW(build(15, 10, 0), std::invalid_argument);
}

// One clock for both replicas and the slow path to the apiserver, moved only by the test; the
// electors wait on it through set_waiter, so no test sleeps for the seconds a lease takes.
class SharedTime {
 public:
  bool wait_until(Clock::TimePoint until, const std::stop_token& stop) {
    std::unique_lock lock(mutex_);
    moved_.wait(lock, stop, [&] { return clock.now() >= until; });
    return !stop.stop_requested();
  }
  void advance(Clock::Duration step) {
    {
      std::lock_guard lock(mutex_);
      clock.advance(step);
    }
    moved_.notify_all();
    for (auto* transport : slow_transports) transport->clock_moved();
  }

  testing::FakeClock clock;
  std::vector<perimeter::testing::SlowTransport*> slow_transports;

 private:
  std::mutex mutex_;
  std::condition_variable_any moved_;
};

// Polls a condition for up to `limit` of real time: a bound on waiting for another thread, never
// a statement about how long something took.
template <typename Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

void wait_for_stop(const std::stop_token& token) {
  std::mutex mutex;
  std::condition_variable_any never;
  std::unique_lock lock(mutex);
  never.wait(lock, token, [] { return false; });
}

// Two replicas, one apiserver. Replica A leads; then its path to the apiserver stalls (an
// overloaded apiserver instance, a congested node): every request A sends hangs for a minute.
// B's path is fine. B takes the lease once it has seen no renewal for lease_duration (15 s); by
// then A must have stopped its leader-only work, since its renewals could not be proven within
// renew_deadline (10 s). One renew blocked for the client's 30 s default timeout must not keep A
// "leading" while B leads.
TEST(LeaderElectionSlowApiServerTest, ALeaderWhoseRenewalsHangStepsDownBeforeAnotherCanLead) {
  using std::chrono::seconds;
  perimeter::testing::FakeApiServer api;
  SharedTime time;
  perimeter::testing::SlowTransport path_a(api, time.clock);
  time.slow_transports.push_back(&path_a);
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics{registry};
  RuntimeMetrics metrics{registry};
  kube::ResourceClient leases_a(path_a, kube::resources::leases(), client_metrics);
  kube::ResourceClient leases_b(api, kube::resources::leases(), client_metrics);
  auto sink = std::make_shared<perimeter::testing::CapturingLogSink>();
  testing::FakeRandom random(0.0);  // no jitter: B retries every 2 s exactly

  auto config_for = [](const std::string& identity) {
    LeaderElectionConfig config;  // the defaults: 15 s lease, 10 s renew deadline, 2 s retry
    config.lease_namespace = "ops";
    config.lease_name = "perimeter";
    config.identity = identity;
    return config;
  };

  std::atomic<bool> a_working{false};
  LeaderCallbacks callbacks_a{[&](std::stop_token token) {
                                a_working = true;
                                wait_for_stop(token);
                                a_working = false;
                              },
                              nullptr, nullptr};
  LeaderElector a(leases_a, config_for("a"), callbacks_a, metrics, Logger("a", sink), time.clock,
                  random);
  a.set_waiter([&](Clock::TimePoint until, std::stop_token stop) {
    return time.wait_until(until, stop);
  });

  // What B sees of A at the moment B starts its leader-only work.
  std::atomic<bool> b_started{false};
  std::atomic<bool> a_leader_when_b_started{false};
  std::atomic<bool> a_working_when_b_started{false};
  std::atomic<Clock::TimePoint> b_started_at{};
  std::atomic<bool> b_saw_a{false};
  LeaderCallbacks callbacks_b{[&](std::stop_token token) {
                                a_leader_when_b_started = a.is_leader();
                                a_working_when_b_started = a_working.load();
                                b_started_at = time.clock.now();
                                b_started = true;
                                wait_for_stop(token);
                              },
                              nullptr, [&](const std::string& holder) {
                                if (holder == "a") b_saw_a = true;
                              }};
  LeaderElector b(leases_b, config_for("b"), callbacks_b, metrics, Logger("b", sink), time.clock,
                  random);
  // Where B's campaign waits, so the test moves time only once B has caught up with it.
  std::atomic<Clock::TimePoint> b_parked_until{Clock::TimePoint::min()};
  b.set_waiter([&](Clock::TimePoint until, std::stop_token stop) {
    b_parked_until = until;
    const bool woke = time.wait_until(until, stop);
    b_parked_until = Clock::TimePoint::min();
    return woke;
  });

  std::atomic<bool> a_returned{false};
  std::jthread run_a([&](std::stop_token stop) {
    a.run(stop);
    a_returned = true;
  });
  // Declared after the threads, so it runs first when the test ends early: whatever A still has
  // in flight fails, and the threads can be joined.
  struct ReleaseHeld {
    perimeter::testing::SlowTransport& path;
    ~ReleaseHeld() { path.release_all(); }
  } release_held{path_a};
  ASSERT_TRUE(eventually([&] { return a.is_leader() && a_working.load(); }));
  std::jthread run_b([&](std::stop_token stop) { b.run(stop); });
  ASSERT_TRUE(eventually([&] { return b_saw_a.load() && b_parked_until.load() > time.clock.now(); }));

  path_a.set_latency(seconds(60));  // from now on nothing A sends is answered for a minute
  const auto stalled_at = time.clock.now();
  bool a_stopped_by_deadline = false;
  for (int second = 1; second <= 25 && !b_started; ++second) {
    time.advance(seconds(1));
    if (time.clock.now() - stalled_at == seconds(2)) {
      // A's first renewal after the stall is on its way and hangs.
      ASSERT_TRUE(eventually([&] { return path_a.held() == 1; }));
    }
    if (time.clock.now() - stalled_at == seconds(10)) {
      // A's last proven renewal was at most 10 s ago: its renew deadline has passed.
      a_stopped_by_deadline = eventually([&] { return !a_working.load(); }, seconds(3));
    }
    // Let B act on this second before the next one (its attempt, or its start as leader).
    eventually([&] {
      return b_started.load() ||
             (!b.is_leader() && b_parked_until.load() > time.clock.now());
    });
  }
  ASSERT_TRUE(eventually([&] { return b_started.load(); }))
      << "B never took over the lease A could not renew";
  EXPECT_TRUE(a_stopped_by_deadline)
      << "A's leader work still ran 10 s (the renew deadline) after its last renewal";
  // B waited out the whole lease from the last record it saw (A's, when the stall began).
  EXPECT_GE(b_started_at.load() - stalled_at, seconds(15));
  EXPECT_FALSE(a_leader_when_b_started) << "both replicas claimed leadership at once";
  EXPECT_FALSE(a_working_when_b_started) << "both replicas ran leader-only work at once";
  EXPECT_TRUE(eventually([&] { return a_returned.load(); }, seconds(3)))
      << "A's elector still waits on a renewal past its deadline";
  EXPECT_GE(perimeter::testing::metric_value(registry,
                                             "perimeter_leader_election_renew_failures_total",
                                             {{"lease", "ops/perimeter"}}),
            1);

  run_b.request_stop();
  run_a.request_stop();
}

TEST(LeaderElectionFormatTest, MicroTimeIsRfc3339WithMicroseconds) {
  const auto time =
      std::chrono::system_clock::time_point(std::chrono::microseconds(1700000000123456));
  EXPECT_EQ(LeaderElector::format_micro_time(time), "2023-11-14T22:13:20.123456Z");
}

}  // namespace
}  // namespace perimeter::runtime
