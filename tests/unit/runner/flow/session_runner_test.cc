#include "runner/session_runner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "flow_fakes.h"

namespace perimeter::runner {
namespace {

using agentapi::SessionEvent;
using nlohmann::json;
using std::chrono::milliseconds;
using ::testing::_;
using ::testing::AnyNumber;
using ::testing::Eq;
using ::testing::InSequence;
using ::testing::Invoke;
using ::testing::NiceMock;
using ::testing::Return;
using ::testing::StrictMock;
using ::testing::Throw;

using OnEvent = std::function<bool(const SessionEvent&)>;

SessionEvent event(json raw) {
  SessionEvent e;
  e.id = raw.value("id", "");
  e.type = raw.value("type", "");
  e.raw = std::move(raw);
  return e;
}

SessionEvent tool_use(const std::string& id, const std::string& name,
                      json input = {{"command", "ls"}}, const char* permission = nullptr) {
  json raw = {{"id", id}, {"type", "agent.tool_use"}, {"name", name}, {"input", input}};
  if (permission) raw["evaluated_permission"] = permission;
  return event(raw);
}
SessionEvent tool_result(const std::string& id, const std::string& answers) {
  return event({{"id", id}, {"type", "user.tool_result"}, {"tool_use_id", answers}});
}
SessionEvent confirmation(const std::string& id, const std::string& answers,
                          const std::string& verdict) {
  return event({{"id", id},
                {"type", "user.tool_confirmation"},
                {"tool_use_id", answers},
                {"result", verdict}});
}
SessionEvent idle(const std::string& id, const std::string& reason) {
  return event({{"id", id}, {"type", "session.status_idle"}, {"stop_reason", {{"type", reason}}}});
}
SessionEvent terminated(const std::string& id) {
  return event({{"id", id}, {"type", "session.status_terminated"}});
}

agentapi::EventPage page(std::vector<SessionEvent> events) {
  return agentapi::EventPage{std::move(events), std::nullopt};
}

// A stream that delivers `events` and then ends as the server would after a termination.
auto deliver(std::vector<SessionEvent> events) {
  return [events](const std::string&, const std::string&, const OnEvent& on_event,
                  const std::atomic<bool>&) {
    std::string last;
    for (const auto& e : events) {
      last = e.id;
      if (!on_event(e)) break;
    }
    return last;
  };
}

json result_for(const std::string& tool_use_id, const std::string& text, bool is_error = false) {
  return json::array({{{"type", "user.tool_result"},
                       {"tool_use_id", tool_use_id},
                       {"is_error", is_error},
                       {"content", json::array({{{"type", "text"}, {"text", text}}})}}});
}

class SessionRunnerTest : public ::testing::Test {
 protected:
  SessionRunnerTest() : sleeper(clock), random(0.0) {
    ON_CALL(tools, owns(_)).WillByDefault([](std::string_view name) {
      return name == "bash" || name == "read";
    });
    EXPECT_CALL(tools, owns(_)).Times(AnyNumber());
  }

  SessionRunner make_runner(milliseconds max_idle = milliseconds(60'000)) {
    SessionRunnerOptions options;
    options.max_idle = max_idle;
    return SessionRunner(api, "sess_1", tools, stop, clock, sleeper, random,
                         Logger("session", logs), &metrics, options);
  }

  StrictMock<perimeter::testing::MockAgentApi> api;
  StrictMock<testing::MockToolExecutor> tools;
  perimeter::testing::FakeClock clock;
  testing::RecordingStoppableSleeper sleeper;
  perimeter::testing::FakeRandom random;
  StopSource stop;
  RunnerMetrics metrics;
  std::shared_ptr<perimeter::testing::CapturingLogSink> logs =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

TEST_F(SessionRunnerTest, ReconcilesHistoryAndResumesTheStreamWithoutRunningAnyCallTwice) {
  // tu_1 was answered before this runner started; tu_2 was not. The stream (resumed after the
  // last listed event) replays tu_2, then brings tu_3 and the termination.
  EXPECT_CALL(api, list_events("sess_1", 1000, ""))
      .WillOnce(Return(
          page({tool_use("tu_1", "bash"), tool_result("ev_1", "tu_1"), tool_use("tu_2", "bash")})));
  EXPECT_CALL(tools, execute(Eq("bash"), _))
      .Times(2)
      .WillRepeatedly(Return(tools::ToolResult::from_text("done", false)));
  EXPECT_CALL(api, send_events("sess_1", result_for("tu_2", "done")));
  EXPECT_CALL(api, stream_events("sess_1", "tu_2", _, _))
      .WillOnce(Invoke(
          deliver({tool_use("tu_2", "bash"), tool_use("tu_3", "bash"), terminated("ev_9")})));
  EXPECT_CALL(api, send_events("sess_1", result_for("tu_3", "done")));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(metrics.tool_calls("ok"), 2);
}

TEST_F(SessionRunnerTest, DroppedStreamsReconnectWithDoublingBackoffCappedAtTenSeconds) {
  EXPECT_CALL(api, list_events(_, _, _)).WillRepeatedly(Return(page({})));
  {
    InSequence order;
    EXPECT_CALL(api, stream_events(_, _, _, _))
        .Times(6)
        .WillRepeatedly(Throw(agentapi::TransportError("connection reset")));
    EXPECT_CALL(api, stream_events(_, _, _, _)).WillOnce(Invoke(deliver({terminated("ev_1")})));
  }
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(sleeper.delays(), (std::vector<milliseconds>{
                                  milliseconds(500), milliseconds(1'000), milliseconds(2'000),
                                  milliseconds(4'000), milliseconds(8'000), milliseconds(10'000)}));
  EXPECT_EQ(metrics.stream_reconnects(), 6);
}

TEST_F(SessionRunnerTest, EventsAfterAReconnectResetTheBackoff) {
  EXPECT_CALL(api, list_events(_, _, _)).WillRepeatedly(Return(page({})));
  {
    InSequence order;
    EXPECT_CALL(api, stream_events(_, _, _, _))
        .WillOnce(Throw(agentapi::TransportError("reset")))
        .WillOnce(Throw(agentapi::TransportError("reset")));
    // Delivers one event, then drops: the next wait starts from 0.5 s again.
    EXPECT_CALL(api, stream_events(_, _, _, _))
        .WillOnce(Invoke([](const std::string&, const std::string&, const OnEvent& on_event,
                            const std::atomic<bool>&) -> std::string {
          on_event(event({{"id", "ev_1"}, {"type", "session.status_running"}}));
          throw agentapi::ProtocolError("events.stream: event data is not JSON");
        }));
    EXPECT_CALL(api, stream_events(_, _, _, _)).WillOnce(Invoke(deliver({terminated("ev_2")})));
  }
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(sleeper.delays(),
            (std::vector<milliseconds>{milliseconds(500), milliseconds(1'000), milliseconds(500)}));
}

TEST_F(SessionRunnerTest, PermanentStreamRejectionEndsTheRunner) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Throw(agentapi::ApiError("events.stream", 403, R"({"type":"error"})", "")));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kStreamRejected);
  EXPECT_TRUE(stop.requested());
}

TEST_F(SessionRunnerTest, ResultSendsRetryWithJitteredBackoffWithinTheLeaseWindow) {
  random.push(0.0);  // no trim: 1 s
  random.push(1.0);  // the whole 25% trimmed off 2 s: 1.5 s
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(tools, execute(Eq("bash"), _))
      .WillOnce(Return(tools::ToolResult::from_text("ok", false)));
  {
    InSequence order;
    EXPECT_CALL(api, send_events("sess_1", result_for("tu_1", "ok")))
        .WillOnce(Throw(agentapi::ApiError("events.send", 503, "{}", "")))
        .WillOnce(Throw(agentapi::ApiError("events.send", 429, "{}", "")))
        .WillOnce(Return());
  }
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash"), terminated("ev_2")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(sleeper.delays(),
            (std::vector<milliseconds>{milliseconds(1'000), milliseconds(1'500)}));
  EXPECT_EQ(metrics.result_send_retries(), 2);
}

TEST_F(SessionRunnerTest, ResultSendGivesUpOnceTheLeaseWindowHasPassed) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(tools, execute(_, _)).WillOnce(Return(tools::ToolResult::from_text("ok", false)));
  // Window 2.5 s: waits 1 s, 1.5 s (the rest of the window), then gives up.
  EXPECT_CALL(api, send_events(_, _))
      .Times(3)
      .WillRepeatedly(Throw(agentapi::TransportError("refused")));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash"), terminated("ev_2")})));
  SessionRunner runner = make_runner();
  runner.set_send_retry_window(milliseconds(2'500));
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(sleeper.delays(),
            (std::vector<milliseconds>{milliseconds(1'000), milliseconds(1'500)}));
  EXPECT_EQ(metrics.tool_calls("unposted"), 1);
}

TEST_F(SessionRunnerTest, PermanentSendErrorIsNotRetried) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(tools, execute(_, _)).WillOnce(Return(tools::ToolResult::from_text("ok", false)));
  EXPECT_CALL(api, send_events(_, _))
      .WillOnce(Throw(agentapi::ApiError("events.send", 400, R"({"type":"error"})", "")));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash"), terminated("ev_2")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_TRUE(sleeper.delays().empty());
}

TEST_F(SessionRunnerTest, AskHoldsTheCallUntilTheUserAllowsIt) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(api, send_events("sess_1", result_for("tu_1", "ran")));
  SessionRunner runner = make_runner();
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke([this, &runner](const std::string&, const std::string&,
                                       const OnEvent& on_event, const std::atomic<bool>&) {
        on_event(tool_use("tu_1", "bash", {{"command", "rm x"}}, "ask"));
        // Held: nothing has run yet (the strict mock expects no execute so far), and an idle
        // that ends the turn cannot start the countdown.
        EXPECT_CALL(tools, execute(Eq("bash"), _))
            .WillOnce(Return(tools::ToolResult::from_text("ran", false)));
        on_event(idle("ev_2", "end_turn"));
        clock.advance(std::chrono::minutes(5));
        EXPECT_FALSE(runner.check_idle()) << "a held call defers the countdown";
        on_event(confirmation("ev_3", "tu_1", "allow"));
        on_event(terminated("ev_4"));
        return std::string("ev_4");
      }));
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
}

TEST_F(SessionRunnerTest, DeniedByTheUserOrByPolicyNeverRunsAndPostsNothing) {
  // tu_2's confirmation is already in the history: it resolves when the call is routed.
  EXPECT_CALL(api, list_events(_, _, _))
      .WillOnce(Return(page({confirmation("ev_0", "tu_2", "deny")})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(
          Invoke(deliver({tool_use("tu_1", "bash", {}, "ask"), confirmation("ev_1", "tu_1", "deny"),
                          tool_use("tu_2", "bash", {}, "ask"), tool_use("tu_3", "bash", {}, "deny"),
                          terminated("ev_9")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(metrics.tool_calls("denied"), 3);
}

TEST_F(SessionRunnerTest, AnUnknownPermissionFailsClosed) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash", {}, "maybe"),
                                confirmation("ev_1", "tu_1", "perhaps"), terminated("ev_9")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(metrics.tool_calls("denied"), 1);
}

TEST_F(SessionRunnerTest, CustomToolsItDoesNotOwnAreLeftPending) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({event({{"id", "ctu_1"},
                                       {"type", "agent.custom_tool_use"},
                                       {"name", "lookup_ticket"},
                                       {"input", {{"id", "PER-7"}}}}),
                                terminated("ev_9")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(metrics.tool_calls("unowned"), 1);
}

TEST_F(SessionRunnerTest, CustomToolItOwnsIsAnsweredWithACustomToolResult) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(tools, execute(Eq("read"), json({{"file_path", "a"}})))
      .WillOnce(Return(tools::ToolResult::from_text("", true)));
  EXPECT_CALL(
      api, send_events(
               "sess_1",
               json::array(
                   {{{"type", "user.custom_tool_result"},
                     {"custom_tool_use_id", "ctu_1"},
                     {"is_error", true},
                     {"content", json::array({{{"type", "text"}, {"text", "(no output)"}}})}}})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({event({{"id", "ctu_1"},
                                       {"type", "agent.custom_tool_use"},
                                       {"name", "read"},
                                       {"input", {{"file_path", "a"}}}}),
                                terminated("ev_9")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
}

TEST_F(SessionRunnerTest, IdleCountdownEndsTheRunnerOnlyAfterATurnThatEnded) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  SessionRunner runner = make_runner(milliseconds(60'000));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke([this, &runner](const std::string&, const std::string&,
                                       const OnEvent& on_event, const std::atomic<bool>& cancel) {
        on_event(idle("ev_1", "requires_action"));
        clock.advance(std::chrono::minutes(10));
        EXPECT_FALSE(runner.check_idle()) << "requires_action leaves the turn open";
        on_event(idle("ev_2", "end_turn"));
        clock.advance(milliseconds(59'999));
        EXPECT_FALSE(runner.check_idle());
        // A new event disarms; the next idle re-arms a full window.
        on_event(event({{"id", "ev_3"}, {"type", "session.status_running"}}));
        clock.advance(milliseconds(60'000));
        EXPECT_FALSE(runner.check_idle());
        on_event(idle("ev_4", "end_turn"));
        clock.advance(milliseconds(60'000));
        EXPECT_TRUE(runner.check_idle());
        EXPECT_TRUE(cancel.load()) << "the expiry must cut the open stream";
        return std::string("ev_4");
      }));
  EXPECT_EQ(runner.run(), SessionEnd::kIdle);
}

TEST_F(SessionRunnerTest, AnIdleInTheHistoryArmsTheCountdownAfterAReconnect) {
  EXPECT_CALL(api, list_events(_, _, _))
      .WillOnce(Return(
          page({tool_use("tu_1", "bash"), tool_result("ev_1", "tu_1"), idle("ev_2", "end_turn")})));
  SessionRunner runner = make_runner(milliseconds(1'000));
  EXPECT_CALL(api, stream_events(_, "ev_2", _, _))
      .WillOnce(Invoke([this, &runner](const std::string&, const std::string&, const OnEvent&,
                                       const std::atomic<bool>&) {
        clock.advance(milliseconds(1'000));
        EXPECT_TRUE(runner.check_idle());
        return std::string("ev_2");
      }));
  EXPECT_EQ(runner.run(), SessionEnd::kIdle);
}

TEST_F(SessionRunnerTest, AFailedHistoryReadFallsBackToTheWholeStream) {
  EXPECT_CALL(api, list_events(_, _, _))
      .WillOnce(Throw(agentapi::ApiError("events.list", 500, "{}", "")));
  EXPECT_CALL(tools, execute(Eq("bash"), _))
      .WillOnce(Return(tools::ToolResult::from_text("x", false)));
  EXPECT_CALL(api, send_events(_, result_for("tu_1", "x")));
  EXPECT_CALL(api, stream_events("sess_1", "", _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash"), terminated("ev_2")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
}

TEST_F(SessionRunnerTest, CallsOfATerminatedThreadAreNotRun) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  SessionEvent call = tool_use("tu_1", "bash");
  call.raw["session_thread_id"] = "thr_2";
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({event({{"id", "ev_1"},
                                       {"type", "session.thread_status_terminated"},
                                       {"session_thread_id", "thr_2"}}),
                                call, terminated("ev_9")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
}

TEST_F(SessionRunnerTest, ATerminationAlreadyInTheHistoryEndsTheRunnerWithoutStreaming) {
  // The stream resumes after the history, so it would never deliver the termination again.
  EXPECT_CALL(api, list_events(_, _, _))
      .WillOnce(Return(page({idle("ev_1", "end_turn"), terminated("ev_2")})));
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
}

TEST_F(SessionRunnerTest, AStopEndsTheRunnerBeforeItStreams) {
  stop.request();
  SessionRunner runner = make_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kStopped);
}

// ---- the audit trail: one line per call, of every decision, before the result is sent

class RecordingAuditSink final : public AuditSink {
 public:
  void write_line(std::string_view line) override { lines.push_back(json::parse(line)); }
  std::vector<json> lines;
};

class SessionRunnerAuditTest : public SessionRunnerTest {
 protected:
  SessionRunner make_audited_runner() {
    SessionRunnerOptions options;
    options.audit = &audit;
    return SessionRunner(api, "sess_1", tools, stop, clock, sleeper, random,
                         Logger("session", logs), &metrics, options);
  }
  // The line of one call; fails the test unless there is exactly one.
  json line_of(const std::string& tool_use_id) {
    json found;
    int count = 0;
    for (const auto& line : sink.lines) {
      if (line["tool_use_id"] == tool_use_id) {
        found = line;
        ++count;
      }
    }
    EXPECT_EQ(count, 1) << tool_use_id;
    return found;
  }
  RecordingAuditSink sink;
  AuditLog audit{sink, AuditLevel::kMetadata, {"sess_1", "work_1", "env_1"}, {"tok"}, clock};
};

TEST_F(SessionRunnerAuditTest, AnAllowedCallIsLoggedWithItsOutcomeBeforeItsResultIsSent) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  tools::ToolResult failed = tools::ToolResult::from_text("boom", true);
  failed.exit_code = 3;
  EXPECT_CALL(tools, execute(Eq("bash"), json({{"command", "false"}})))
      .WillOnce(Invoke([this, failed](std::string_view, const json&) {
        clock.advance(milliseconds(250));
        return failed;
      }));
  EXPECT_CALL(api, send_events("sess_1", result_for("tu_1", "boom", true)))
      .WillOnce(Invoke([this](const std::string&, const json&) {
        EXPECT_EQ(sink.lines.size(), 1u) << "the line is written before the result is sent";
      }));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(
          deliver({tool_use("tu_1", "bash", {{"command", "false"}}, "allow"), terminated("e9")})));
  SessionRunner runner = make_audited_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  const json line = line_of("tu_1");
  EXPECT_EQ(line["decision"], "allowed");
  EXPECT_EQ(line["outcome"], "error");
  EXPECT_EQ(line["exit_code"], 3);
  EXPECT_EQ(line["duration_ms"], 250);
  EXPECT_EQ(line["output_bytes"], 4);
  EXPECT_EQ(line["tool"], "bash");
  EXPECT_EQ(line["event_type"], "agent.tool_use");
  EXPECT_EQ(line["input_sha256"], AuditLog::input_digest({{"command", "false"}}));
  EXPECT_EQ(line["work_id"], "work_1");
}

TEST_F(SessionRunnerAuditTest, AConfirmedCallIsAskedAndConfirmed) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(tools, execute(Eq("bash"), _))
      .WillOnce(Return(tools::ToolResult::from_text("ran", false)));
  EXPECT_CALL(api, send_events("sess_1", result_for("tu_1", "ran")));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash", {{"command", "rm x"}}, "ask"),
                                confirmation("ev_1", "tu_1", "allow"), terminated("ev_9")})));
  SessionRunner runner = make_audited_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  ASSERT_EQ(sink.lines.size(), 1u);
  EXPECT_EQ(line_of("tu_1")["decision"], "asked_and_confirmed");
  EXPECT_EQ(line_of("tu_1")["outcome"], "ok");
}

TEST_F(SessionRunnerAuditTest, DenialsByTheUserAndByPolicyEachGetTheirLine) {
  EXPECT_CALL(api, list_events(_, _, _))
      .WillOnce(Return(page({confirmation("ev_0", "tu_2", "deny")})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(
          Invoke(deliver({tool_use("tu_1", "bash", {}, "ask"), confirmation("ev_1", "tu_1", "deny"),
                          tool_use("tu_2", "bash", {}, "ask"), tool_use("tu_3", "bash", {}, "deny"),
                          tool_use("tu_4", "bash", {}, "maybe"),
                          confirmation("ev_2", "tu_4", "perhaps"), terminated("ev_9")})));
  SessionRunner runner = make_audited_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_EQ(sink.lines.size(), 4u);
  for (const char* id : {"tu_1", "tu_2", "tu_3", "tu_4"}) {
    const json line = line_of(id);
    EXPECT_EQ(line["decision"], "denied") << id;
    EXPECT_EQ(line["outcome"], "denied") << id;
    EXPECT_EQ(line["denied_by"], std::string(id) == "tu_3" ? "policy" : "user") << id;
    EXPECT_TRUE(line["exit_code"].is_null());
    EXPECT_EQ(line["output_bytes"], 0);
  }
}

TEST_F(SessionRunnerAuditTest, AnUnownedCallGetsOneNotOwnedLineHoweverOftenItIsRouted) {
  const SessionEvent custom = event({{"id", "ctu_1"},
                                     {"type", "agent.custom_tool_use"},
                                     {"name", "lookup_ticket"},
                                     {"input", {{"id", "PER-7"}}}});
  // Listed unanswered, then replayed by the stream: routed twice, logged once.
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({custom})));
  EXPECT_CALL(api, stream_events(_, _, _, _)).WillOnce(Invoke(deliver({custom, terminated("e9")})));
  SessionRunner runner = make_audited_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  ASSERT_EQ(sink.lines.size(), 1u);
  const json line = line_of("ctu_1");
  EXPECT_EQ(line["decision"], "not_owned");
  EXPECT_EQ(line["outcome"], "not_executed");
  EXPECT_EQ(line["event_type"], "agent.custom_tool_use");
  EXPECT_EQ(line["tool"], "lookup_ticket");
  EXPECT_EQ(line["input_sha256"], AuditLog::input_digest({{"id", "PER-7"}}));
}

TEST_F(SessionRunnerAuditTest, AHeldCallOfAThreadThatTerminatesIsAbandoned) {
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  SessionEvent call = tool_use("tu_1", "bash", {{"command", "x"}}, "ask");
  call.raw["session_thread_id"] = "thr_2";
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({call,
                                event({{"id", "ev_1"},
                                       {"type", "session.thread_status_terminated"},
                                       {"session_thread_id", "thr_2"}}),
                                terminated("ev_9")})));
  SessionRunner runner = make_audited_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  ASSERT_EQ(sink.lines.size(), 1u);
  EXPECT_EQ(line_of("tu_1")["decision"], "abandoned");
  EXPECT_EQ(line_of("tu_1")["outcome"], "not_executed");
}

TEST_F(SessionRunnerAuditTest, ACallNotYetDecidedHasNoLine) {
  // Held for a confirmation that never comes: nothing was decided, so nothing is logged yet.
  EXPECT_CALL(api, list_events(_, _, _)).WillOnce(Return(page({})));
  EXPECT_CALL(api, stream_events(_, _, _, _))
      .WillOnce(Invoke(deliver({tool_use("tu_1", "bash", {}, "ask"), terminated("ev_9")})));
  SessionRunner runner = make_audited_runner();
  EXPECT_EQ(runner.run(), SessionEnd::kTerminated);
  EXPECT_TRUE(sink.lines.empty());
}

}  // namespace
}  // namespace perimeter::runner
