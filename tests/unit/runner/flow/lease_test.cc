#include "runner/lease.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "flow_fakes.h"

namespace perimeter::runner {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::_;
using ::testing::InSequence;
using ::testing::Return;
using ::testing::StrictMock;
using ::testing::Throw;

agentapi::HeartbeatResponse beat(std::string last, std::int64_t ttl, std::string state = "active",
                                 bool extended = true) {
  return agentapi::HeartbeatResponse{std::move(last), extended, std::move(state), ttl};
}

agentapi::ApiError api_error(int status, std::string body = R"({"type":"error","error":{}})") {
  return agentapi::ApiError("work.heartbeat", status, std::move(body), "req_1");
}

class LeaseTest : public ::testing::Test {
 protected:
  LeaseTest() : sleeper(clock), lease(stop) {}

  HeartbeatLoop make_loop() {
    return HeartbeatLoop(api, "work_1", lease, clock, sleeper, Logger("lease", logs), &metrics);
  }
  // Ends the loop after `beats` waits.
  void stop_after_waits(std::size_t waits) {
    sleeper.after_sleep = [this, waits](StopSource& s) {
      if (sleeper.delays().size() >= waits) s.request();
    };
  }

  StrictMock<perimeter::testing::MockAgentApi> api;
  perimeter::testing::FakeClock clock;
  testing::RecordingStoppableSleeper sleeper;
  StopSource stop;
  Lease lease;
  RunnerMetrics metrics;
  std::shared_ptr<perimeter::testing::CapturingLogSink> logs =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

// The item's stop (the session ended, SIGTERM) ends the session runner, not the lease: the teardown
// that follows (skills, the final memory sync and flush, up to a minute) still needs the lease, so
// the heartbeat keeps beating until the lease is finished, as the SDK's does.
TEST_F(LeaseTest, KeepsBeatingAfterTheItemIsStoppedUntilTheLeaseIsFinished) {
  {
    InSequence order;
    EXPECT_CALL(api, heartbeat("work_1", "NO_HEARTBEAT", _, _)).WillOnce(Return(beat("hb-1", 60)));
    EXPECT_CALL(api, heartbeat("work_1", "hb-1", _, _)).WillOnce(Return(beat("hb-2", 60)));
    EXPECT_CALL(api, heartbeat("work_1", "hb-2", _, _)).WillOnce(Return(beat("hb-3", 60)));
  }
  sleeper.after_sleep = [this](StopSource&) {
    if (sleeper.delays().size() == 1) stop.request();
    if (sleeper.delays().size() == 3) lease.finish(LeaseEnd::kRunnerDone);
  };
  make_loop().run();
  EXPECT_EQ(sleeper.delays().size(), 3u);
  EXPECT_EQ(lease.end(), LeaseEnd::kRunnerDone);
}

TEST_F(LeaseTest, FirstBeatSendsNoHeartbeatThenEchoesTheServersValueAtHalfTheTtl) {
  {
    InSequence order;
    // Until the server says otherwise: 30 s interval, so the first call is cut off at 30 s.
    EXPECT_CALL(api, heartbeat("work_1", "NO_HEARTBEAT", _, milliseconds(30'000)))
        .WillOnce(Return(beat("hb-1", 4)));
    EXPECT_CALL(api, heartbeat("work_1", "hb-1", _, milliseconds(2'000)))
        .WillOnce(Return(beat("hb-2", 4)));
    EXPECT_CALL(api, heartbeat("work_1", "hb-2", _, milliseconds(2'000)))
        .WillOnce(Return(beat("hb-3", 4)));
  }
  stop_after_waits(3);
  make_loop().run();
  EXPECT_EQ(sleeper.delays(), (std::vector<milliseconds>{milliseconds(2'000), milliseconds(2'000),
                                                         milliseconds(2'000)}));
  EXPECT_EQ(lease.end(), LeaseEnd::kNone);
  EXPECT_EQ(metrics.heartbeats("ok"), 3);
}

TEST_F(LeaseTest, IntervalIsCappedAtThirtySecondsAndFlooredAtOneSecond) {
  {
    InSequence order;
    EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(beat("a", 600)));
    EXPECT_CALL(api, heartbeat(_, "a", _, milliseconds(30'000))).WillOnce(Return(beat("b", 1)));
    EXPECT_CALL(api, heartbeat(_, "b", _, milliseconds(1'000))).WillOnce(Return(beat("c", 1)));
  }
  stop_after_waits(3);
  make_loop().run();
  EXPECT_EQ(sleeper.delays(), (std::vector<milliseconds>{milliseconds(30'000), milliseconds(1'000),
                                                         milliseconds(1'000)}));
}

TEST_F(LeaseTest, PreconditionFailedMeansTheLeaseIsLost) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(beat("a", 10)));
  EXPECT_CALL(api, heartbeat(_, "a", _, _))
      .WillOnce(Throw(api_error(
          412,
          R"({"type":"error","error":{"type":"precondition_failed","message":"lease held",)"
          R"("details":{"current_state":{"state":"active","last_heartbeat":"other","ttl_seconds":10}}}})")));
  make_loop().run();
  EXPECT_EQ(lease.end(), LeaseEnd::kLeaseLost);
  EXPECT_TRUE(lease.lost());
  EXPECT_TRUE(stop.requested());
  EXPECT_EQ(metrics.heartbeats("lost"), 1);
  EXPECT_TRUE(testing::logged(*logs, "lease lost: heartbeat precondition failed"));
  EXPECT_TRUE(testing::logged(*logs, "\"server_last_heartbeat\":\"other\""));
}

TEST_F(LeaseTest, StoppingStateShutsDownWithoutLosingTheItem) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(beat("a", 10, "stopping")));
  make_loop().run();
  EXPECT_EQ(lease.end(), LeaseEnd::kHeartbeatStop);
  EXPECT_FALSE(lease.lost());
  EXPECT_TRUE(sleeper.delays().empty());
}

TEST_F(LeaseTest, LeaseNotExtendedShutsDown) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _))
      .WillOnce(Return(beat("a", 10, "active", /*extended=*/false)));
  make_loop().run();
  EXPECT_EQ(lease.end(), LeaseEnd::kHeartbeatStop);
  EXPECT_TRUE(testing::logged(*logs, "lease not extended"));
}

TEST_F(LeaseTest, TransientFailuresForLongerThanTheTtlMeanTheLeaseIsAssumedLost) {
  // TTL 4 s, interval 2 s: failures at +2, +4 (not yet past the TTL), +6 (past it).
  {
    InSequence order;
    EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(beat("a", 4)));
    EXPECT_CALL(api, heartbeat(_, "a", _, milliseconds(2'000)))
        .Times(3)
        .WillOnce(Throw(api_error(503)))
        .WillOnce(Throw(agentapi::TransportError("connection refused")))
        .WillOnce(Throw(api_error(500)));
  }
  make_loop().run();
  EXPECT_EQ(lease.end(), LeaseEnd::kAssumedLost);
  EXPECT_TRUE(lease.lost());
  EXPECT_EQ(metrics.heartbeats("transient"), 3);
  EXPECT_TRUE(testing::logged(*logs, "lease assumed lost"));
}

TEST_F(LeaseTest, PermanentClientErrorRejectsTheHeartbeat) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Throw(api_error(401)));
  make_loop().run();
  EXPECT_EQ(lease.end(), LeaseEnd::kHeartbeatRejected);
  EXPECT_FALSE(lease.lost());
  EXPECT_EQ(metrics.heartbeats("rejected"), 1);
}

TEST_F(LeaseTest, ReportsTheTtlForTheResultSendWindow) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(beat("a", 42)));
  stop_after_waits(1);
  HeartbeatLoop loop = make_loop();
  std::vector<milliseconds> ttls;
  loop.on_ttl([&ttls](milliseconds ttl) { ttls.push_back(ttl); });
  loop.run();
  EXPECT_EQ(ttls, (std::vector<milliseconds>{milliseconds(42'000)}));
  EXPECT_TRUE(loop.first_beat_done());
}

TEST_F(LeaseTest, FirstRecordedReasonWins) {
  lease.finish(LeaseEnd::kLeaseLost);
  lease.finish(LeaseEnd::kRunnerDone);
  EXPECT_EQ(lease.end(), LeaseEnd::kLeaseLost);
  EXPECT_TRUE(stop.requested());
}

}  // namespace
}  // namespace perimeter::runner
