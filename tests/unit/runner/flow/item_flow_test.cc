#include "runner/item_flow.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "core/fake_random.h"
#include "flow_fakes.h"

namespace perimeter::runner {
namespace {

using nlohmann::json;
using ::testing::_;
using ::testing::AnyNumber;
using ::testing::Invoke;
using ::testing::Return;
using ::testing::StrictMock;
using ::testing::Throw;

using OnEvent = std::function<bool(const agentapi::SessionEvent&)>;

agentapi::Session session(const std::string& status) {
  return agentapi::Session{"sess_1", status, json({{"id", "sess_1"}, {"status", status}})};
}

// The flow's threads wait for real here (the heartbeat interval is long, so each test sees one
// beat); the exact intervals are asserted in lease_test.cc on a fake clock.
class ItemFlowTest : public ::testing::Test {
 protected:
  ItemFlowTest() {
    config.work_id = "work_1";
    config.environment_id = "env_1";
    config.session_id = "sess_1";
    config.credential = "token";
    config.credential_source = "work_secret";
    config.workdir = "/nonexistent";
  }

  ExitCode run_flow() {
    ItemFlow flow(
        config, api,
        [this](const ToolRoots&) -> std::unique_ptr<tools::ToolExecutor> {
          ++tools_built;
          auto tools = std::make_unique<StrictMock<testing::MockToolExecutor>>();
          EXPECT_CALL(*tools, close());
          return tools;
        },
        archive, stop, SystemClock::instance(), sleeper, random, Logger("runner", logs), &metrics);
    return flow.run();
  }

  RunnerConfig config;
  StrictMock<perimeter::testing::MockAgentApi> api;
  // No session here names skills, so the archive tools are never run.
  StrictMock<testing::MockArchiveCommand> archive;
  StopSource stop;
  RealStoppableSleeper sleeper;
  perimeter::testing::FakeRandom random;
  RunnerMetrics metrics;
  int tools_built = 0;
  std::shared_ptr<perimeter::testing::CapturingLogSink> logs =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

agentapi::HeartbeatResponse long_lease() {
  return {"hb-1", true, "active", 600};
}

TEST_F(ItemFlowTest, ATerminatedSessionRunsNoToolsAndTheItemIsForceStopped) {
  EXPECT_CALL(api, heartbeat("work_1", "NO_HEARTBEAT", _, _)).WillOnce(Return(long_lease()));
  EXPECT_CALL(api, retrieve_session("sess_1")).WillOnce(Return(session("terminated")));
  EXPECT_CALL(api, stop("work_1", true)).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(run_flow(), kExitServed);
  EXPECT_EQ(tools_built, 0);
}

TEST_F(ItemFlowTest, ServesTheSessionToItsTerminationThenForceStops) {
  EXPECT_CALL(api, heartbeat("work_1", "NO_HEARTBEAT", _, _)).WillOnce(Return(long_lease()));
  EXPECT_CALL(api, retrieve_session("sess_1")).WillOnce(Return(session("running")));
  EXPECT_CALL(api, list_events("sess_1", _, _)).WillOnce(Return(agentapi::EventPage{}));
  EXPECT_CALL(api, stream_events("sess_1", _, _, _))
      .WillOnce(Invoke([](const std::string&, const std::string&, const OnEvent& on_event,
                          const std::atomic<bool>&) {
        on_event({"ev_1", "session.status_terminated", {{"id", "ev_1"}}});
        return std::string("ev_1");
      }));
  EXPECT_CALL(api, stop("work_1", true))
      .WillOnce(Throw(agentapi::ApiError("work.stop", 409, "{}", "")));  // already stopped: fine
  EXPECT_EQ(run_flow(), kExitServed);
  EXPECT_EQ(tools_built, 1);
  EXPECT_FALSE(testing::logged(*logs, "force-stop on exit failed"));
}

TEST_F(ItemFlowTest, ALostLeaseLeavesTheItemAlone) {
  EXPECT_CALL(api, heartbeat("work_1", "NO_HEARTBEAT", _, _))
      .WillOnce(Throw(agentapi::ApiError("work.heartbeat", 412, "{}", "")));
  // The session fetch races the first beat; whether it happens does not matter.
  EXPECT_CALL(api, retrieve_session("sess_1"))
      .Times(AnyNumber())
      .WillRepeatedly(Return(session("running")));
  EXPECT_CALL(api, list_events(_, _, _)).Times(AnyNumber());
  EXPECT_CALL(api, stream_events(_, _, _, _)).Times(AnyNumber());
  EXPECT_EQ(run_flow(), kExitLeaseLost);  // and no stop(): StrictMock fails on one
}

TEST_F(ItemFlowTest, AStopRequestEndsTheSessionGracefullyWithTheSameTeardown) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(long_lease()));
  EXPECT_CALL(api, retrieve_session("sess_1")).WillOnce(Return(session("idle")));
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(agentapi::EventPage{}));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke([this](const std::string&, const std::string&, const OnEvent&,
                              const std::atomic<bool>& cancel) {
        stop.request();  // what SIGTERM does
        EXPECT_TRUE(cancel.load());
        return std::string();
      }));
  EXPECT_CALL(api, stop("work_1", true)).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(run_flow(), kExitServed);
}

TEST_F(ItemFlowTest, AFailedSessionFetchFailsTheItemButStillStopsIt) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _)).WillOnce(Return(long_lease()));
  EXPECT_CALL(api, retrieve_session("sess_1"))
      .WillOnce(Throw(agentapi::ApiError(
          "sessions.retrieve", 404,
          R"({"type":"error","error":{"type":"not_found_error","message":"no such session"}})",
          "req_9")));
  EXPECT_CALL(api, stop("work_1", true)).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(run_flow(), kExitApiRejected);
  EXPECT_TRUE(testing::logged(*logs, "no such session")) << "the server's error body is kept";
}

TEST_F(ItemFlowTest, TheServerStoppingTheItemEndsTheSession) {
  EXPECT_CALL(api, heartbeat(_, "NO_HEARTBEAT", _, _))
      .WillOnce(Return(agentapi::HeartbeatResponse{"hb-1", true, "stopping", 600}));
  EXPECT_CALL(api, retrieve_session("sess_1"))
      .Times(AnyNumber())
      .WillRepeatedly(Return(session("running")));
  EXPECT_CALL(api, list_events(_, _, _)).Times(AnyNumber());
  EXPECT_CALL(api, stream_events(_, _, _, _)).Times(AnyNumber());
  EXPECT_CALL(api, stop("work_1", true)).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(run_flow(), kExitServed);
}

}  // namespace
}  // namespace perimeter::runner
