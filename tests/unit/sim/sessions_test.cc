// Sessions that span work items: later turns sent by the scripted user, new items for a session no
// worker holds, interrupts after a failed item, the session's state through the API.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentapi/work_secret.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "sim/simulator.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

json body(const ApiReply& reply) {
  return json::parse(reply.body);
}

std::string token_of(const std::string& secret) {
  return agentapi::decode_work_secret(secret).sessions_token;
}

// Two turns of one bash call each; `second_turn` is spliced into the second turn's mapping.
Scenario two_turns(const std::string& second_turn, const std::string& top = "") {
  return parse_scenario(top + R"(
name: two
turns:
  - prompt: first
    steps:
      - tool: bash
        input: {command: "echo one"}
        expect: {text: "one\n"}
  - prompt: second
    )" + second_turn + R"(
    steps:
      - tool: bash
        input: {command: "echo two"}
        expect: {text: "two\n"}
)");
}

class SessionsTest : public ::testing::Test {
 protected:
  SessionsTest() : simulator_(SimulatorOptions{}, clock_, random_) {
    environment_ = simulator_.create_environment("unit", "env-key")["id"];
  }

  void enqueue(Scenario scenario) {
    const json reply = body(simulator_.enqueue_session(environment_, std::move(scenario)));
    first_work_ = reply["work_id"];
    session_ = reply["session_id"];
  }
  struct Claimed {
    std::string work_id;
    std::string token;
  };
  // Polls, acks and beats the next item, which must be one of this session's; its first beat
  // must answer `state`.
  Claimed claim(const std::string& state = "active") {
    const json item = body(simulator_.poll(environment_, "env-key", "worker", std::nullopt));
    EXPECT_TRUE(item.is_object()) << "nothing to claim";
    if (!item.is_object()) return {};
    EXPECT_EQ(item["data"]["id"], session_);
    Claimed claimed{item["id"], token_of(item["secret"])};
    EXPECT_EQ(simulator_.ack(environment_, claimed.work_id, "env-key").status, 200);
    EXPECT_EQ(body(simulator_.heartbeat(environment_, claimed.work_id, claimed.token,
                                        "NO_HEARTBEAT", 30))["state"],
              state);
    return claimed;
  }
  // The last agent.tool_use of the session's event log.
  std::string open_call(const std::string& token) {
    const json events = body(simulator_.list_events(session_, token, 1000, ""))["data"];
    std::string id;
    for (const json& event : events) {
      if (event["type"] == "agent.tool_use") id = event["id"];
    }
    return id;
  }
  ApiReply answer(const std::string& token, const std::string& text) {
    const json result = {{"type", "user.tool_result"},
                         {"tool_use_id", open_call(token)},
                         {"content", json::array({{{"type", "text"}, {"text", text}}})}};
    return simulator_.send_events(session_, token, {{"events", {result}}});
  }
  json admin() { return body(simulator_.session_admin_view(session_)); }
  std::vector<std::string> event_types() {
    std::vector<std::string> types;
    const json events = body(simulator_.list_events(session_, "env-key", 1000, ""))["data"];
    for (const json& event : events) types.push_back(event["type"]);
    return types;
  }
  std::int64_t depth() { return body(simulator_.stats(environment_, "env-key"))["depth"]; }

  testing::FakeClock clock_;
  testing::FakeRandom random_;
  Simulator simulator_;
  std::string environment_;
  std::string session_;
  std::string first_work_;
};

TEST_F(SessionsTest, AMessageToASessionNoWorkerHoldsQueuesANewItemForTheSameSession) {
  enqueue(two_turns("after: released"));
  const Claimed first = claim();
  ASSERT_EQ(first.work_id, first_work_);
  ASSERT_EQ(answer(first.token, "one\n").status, 200);
  // Turn one is over: the session is idle, the worker still holds it, nothing new is queued.
  EXPECT_EQ(body(simulator_.retrieve_session(session_, "env-key"))["status"], "idle");
  EXPECT_EQ(depth(), 0);
  EXPECT_EQ(admin()["next_turn"]["after"], "released");
  EXPECT_TRUE(admin()["next_turn"]["due_in_ms"].is_null());
  clock_.advance(seconds(10));
  simulator_.tick();
  EXPECT_EQ(depth(), 0) << "the user must wait until the worker lets the session go";

  // The worker ends its item idle: the scripted user sends turn two, which queues a new item.
  ASSERT_EQ(simulator_.stop(environment_, first.work_id, first.token, true).status, 200);
  EXPECT_EQ(depth(), 1);
  // Turn two's call waits for a worker: idle on requires_action, no longer at end_turn.
  EXPECT_EQ(body(simulator_.retrieve_session(session_, "env-key"))["status"], "idle");
  const json view = admin();
  EXPECT_EQ(view["phase"], "awaiting_result");
  ASSERT_EQ(view["items"].size(), 2u);
  EXPECT_EQ(view["items"][0]["ended"], "released");
  EXPECT_EQ(view["items"][1]["queued_because"], "user_message");
  EXPECT_EQ(view["turn"], 2);
  const Simulator::Wakes wakes = simulator_.take_wakes();
  EXPECT_EQ(wakes.environments.count(environment_), 1u) << "a waiting poll must learn of it";
  EXPECT_EQ(wakes.sessions.count(session_), 1u);

  const Claimed second = claim();
  EXPECT_NE(second.work_id, first.work_id);
  EXPECT_NE(second.token, first.token);
  EXPECT_EQ(view["holder"], second.work_id);
  ASSERT_EQ(answer(second.token, "two\n").status, 200);
  const json results = body(simulator_.session_results(session_));
  EXPECT_TRUE(results["all_matched"].get<bool>()) << results.dump(2);
  EXPECT_EQ(results["work_ids"], json({first.work_id, second.work_id}));
  EXPECT_EQ(results["steps"][1]["turn"], 2);
  EXPECT_EQ(body(simulator_.retrieve_session(session_, "env-key"))["status"], "terminated");
  EXPECT_EQ(event_types(),
            (std::vector<std::string>{
                "user.message", "session.status_running", "agent.tool_use", "session.status_idle",
                "user.tool_result", "session.status_running", "agent.message",
                "session.status_idle", "user.message", "session.status_running", "agent.tool_use",
                "session.status_idle", "user.tool_result", "session.status_running",
                "agent.message", "session.status_idle", "session.status_terminated"}));
}

TEST_F(SessionsTest, AFollowUpWhileTheWorkerStillHoldsTheSessionGoesToThatSameItem) {
  enqueue(two_turns("delay_ms: 500"));
  const Claimed first = claim();
  ASSERT_EQ(answer(first.token, "one\n").status, 200);
  EXPECT_EQ(admin()["next_turn"]["due_in_ms"], 500);
  clock_.advance(milliseconds(499));
  simulator_.tick();
  EXPECT_EQ(admin()["phase"], "turn_ended");
  clock_.advance(milliseconds(1));
  simulator_.tick();
  EXPECT_EQ(admin()["phase"], "awaiting_result");
  EXPECT_EQ(depth(), 0) << "the item that holds the session serves the next turn too";
  EXPECT_EQ(simulator_.take_wakes().sessions.count(session_), 1u)
      << "the worker's stream must learn of the timer's message";
  ASSERT_EQ(answer(first.token, "two\n").status, 200);
  const json results = body(simulator_.session_results(session_));
  EXPECT_TRUE(results["all_matched"].get<bool>()) << results.dump(2);
  EXPECT_EQ(results["work_ids"].size(), 1u);
}

TEST_F(SessionsTest, AMessageDueAfterTheWorkerLeftQueuesANewItem) {
  enqueue(two_turns("delay_ms: 1000"));
  const Claimed first = claim();
  ASSERT_EQ(answer(first.token, "one\n").status, 200);
  ASSERT_EQ(simulator_.stop(environment_, first.work_id, first.token, true).status, 200);
  EXPECT_EQ(depth(), 0) << "after: end_turn waits its delay even once the item is gone";
  clock_.advance(milliseconds(1000));
  simulator_.tick();
  EXPECT_EQ(depth(), 1);
  EXPECT_EQ(admin()["items"][1]["queued_because"], "user_message");
}

TEST_F(SessionsTest, AnAdminTurnWaitsForTheCallAndCannotBeSentWhileATurnIsOpen) {
  enqueue(two_turns("after: admin"));
  EXPECT_EQ(simulator_.send_next_turn(session_).status, 409) << "turn one is open";
  const Claimed first = claim();
  ASSERT_EQ(answer(first.token, "one\n").status, 200);
  ASSERT_EQ(simulator_.stop(environment_, first.work_id, first.token, true).status, 200);
  clock_.advance(seconds(3600));
  simulator_.tick();
  EXPECT_EQ(depth(), 0);
  const json sent = body(simulator_.send_next_turn(session_));
  EXPECT_EQ(sent["turn"], 2);
  EXPECT_EQ(depth(), 1);
  EXPECT_EQ(simulator_.send_next_turn(session_).status, 409);
  EXPECT_EQ(simulator_.send_next_turn("sesn_missing").status, 404);
}

Scenario failing_first_turn(const std::string& top) {
  return parse_scenario(top + R"(
name: fails
turns:
  - steps:
      - tool: bash
        input: {command: "sleep 30"}
        stop_item: true
        expect: {interrupted: true}
  - steps:
      - tool: bash
        input: {command: "echo back"}
        expect: {text: "back\n"}
)");
}

TEST_F(SessionsTest, AStoppedItemWithTheTurnOpenFailsAndTheScriptedInterruptRequeuesTheSession) {
  enqueue(failing_first_turn("interrupt_after_failure_ms: 200\n"));
  const json item = body(simulator_.poll(environment_, "env-key", "worker", std::nullopt));
  const std::string work_id = item["id"];
  const std::string token = token_of(item["secret"]);
  ASSERT_EQ(simulator_.ack(environment_, work_id, "env-key").status, 200);
  // stop_item: the beat that finds the call open tells the worker to stop.
  const json beat = body(simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", 30));
  EXPECT_EQ(beat["state"], "stopping");
  EXPECT_EQ(beat["lease_extended"], false);
  ASSERT_EQ(simulator_.stop(environment_, work_id, token, true).status, 200);
  json view = admin();
  EXPECT_TRUE(view["failed"].get<bool>());
  EXPECT_EQ(view["items"][0]["ended"], "failed");
  EXPECT_EQ(view["session"]["status"], "idle") << "waiting on the call nobody will answer";
  EXPECT_EQ(view["scripted_interrupt"]["due_in_ms"], 200);

  clock_.advance(milliseconds(199));
  simulator_.tick();
  EXPECT_EQ(depth(), 0);
  clock_.advance(milliseconds(1));
  simulator_.tick();
  // The interrupt ends turn one, queues the session's work again, and turn two follows.
  EXPECT_EQ(depth(), 1);
  view = admin();
  ASSERT_EQ(view["items"].size(), 2u);
  EXPECT_EQ(view["items"][1]["queued_because"], "user_interrupt");
  EXPECT_EQ(view["turn"], 2);
  const std::vector<std::string> types = event_types();
  const std::vector<std::string> tail(types.begin() + 4, types.end());
  EXPECT_EQ(tail, (std::vector<std::string>{
                      "user.interrupt", "user.tool_result", "session.status_idle", "user.message",
                      "session.status_running", "agent.tool_use", "session.status_idle"}));

  // The interrupt closed the open call in the log, so a worker reconciling from the history
  // does not run it again.
  const json events = body(simulator_.list_events(session_, token, 1000, ""))["data"];
  EXPECT_EQ(events[5]["tool_use_id"], events[2]["id"]);
  EXPECT_EQ(events[5]["is_error"], true);
  EXPECT_EQ(events[5]["content"][0]["text"], "interrupted by the user");
  // The interrupted call can no longer be answered; the new item serves turn two.
  const json late = {
      {"type", "user.tool_result"},
      {"tool_use_id", body(simulator_.session_results(session_))["steps"][0]["tool_use_id"]},
      {"content", json::array({{{"type", "text"}, {"text", "late"}}})}};
  EXPECT_EQ(simulator_.send_events(session_, token, {{"events", {late}}}).status, 400);
  const Claimed second = claim();
  EXPECT_NE(second.work_id, work_id);
  ASSERT_EQ(answer(second.token, "back\n").status, 200);
  const json results = body(simulator_.session_results(session_));
  EXPECT_TRUE(results["steps"][0]["matched"].get<bool>()) << results.dump(2);
  EXPECT_TRUE(results["steps"][0]["interrupted"].get<bool>());
  EXPECT_TRUE(results["steps"][1]["matched"].get<bool>()) << results.dump(2);
  EXPECT_EQ(results["unexpected"].size(), 1u) << "the late result is recorded as unexpected";
}

TEST_F(SessionsTest, WithoutAScriptedInterruptAFailedSessionWaitsForTheUsersInterrupt) {
  enqueue(failing_first_turn(""));
  const Claimed first = claim("stopping");
  ASSERT_EQ(simulator_.stop(environment_, first.work_id, first.token, true).status, 200);
  clock_.advance(seconds(3600));
  simulator_.tick();
  EXPECT_EQ(depth(), 0) << "nobody interrupted: the session stays stuck";
  EXPECT_TRUE(admin()["failed"].get<bool>());
  // The user interrupts through the public API (here with the environment key).
  const ApiReply sent =
      simulator_.send_events(session_, "env-key", {{"events", {{{"type", "user.interrupt"}}}}});
  ASSERT_EQ(sent.status, 200) << sent.body;
  EXPECT_EQ(depth(), 1);
  EXPECT_EQ(admin()["items"][1]["queued_because"], "user_interrupt");
  EXPECT_EQ(simulator_.take_wakes().environments.count(environment_), 1u);
}

TEST_F(SessionsTest, AnInterruptWhileAWorkerHoldsTheSessionEndsTheTurnWithoutANewItem) {
  enqueue(two_turns("after: admin"));
  const Claimed first = claim();
  ASSERT_EQ(
      simulator_.send_events(session_, first.token, {{"events", {{{"type", "user.interrupt"}}}}})
          .status,
      200);
  EXPECT_EQ(depth(), 0);
  const json view = admin();
  EXPECT_EQ(view["phase"], "turn_ended");
  EXPECT_EQ(view["items"].size(), 1u);
  const json results = body(simulator_.session_results(session_));
  EXPECT_EQ(results["steps"][0]["mismatch"], "interrupted before a result arrived");
  EXPECT_EQ(answer(first.token, "one\n").status, 400) << "the interrupted call is closed";
}

TEST_F(SessionsTest, AStopItemStepStopsNothingUntilItsCallIsTheOpenOne) {
  enqueue(parse_scenario(R"(
turns:
  - steps: [{tool: bash, input: {command: "echo one"}}]
  - steps: [{tool: bash, input: {command: "sleep 30"}, stop_item: true}]
)"));
  const Claimed first = claim();  // asserts that the beat during turn one leaves it active
  ASSERT_EQ(answer(first.token, "one\n").status, 200);  // turn two follows at once
  EXPECT_EQ(body(simulator_.retrieve_work(environment_, first.work_id, "env-key"))["state"],
            "active");
  const std::string last =
      body(simulator_.work_admin_view(first.work_id))["lease_history"].back()["returned"];
  const json beat =
      body(simulator_.heartbeat(environment_, first.work_id, first.token, last, std::nullopt));
  EXPECT_EQ(beat["state"], "stopping");
  EXPECT_EQ(beat["lease_extended"], false);
}

TEST_F(SessionsTest, TheUserTerminatesTheSessionAndTheApiShowsIt) {
  enqueue(two_turns("after: admin", "terminate: false\n"));
  const Claimed first = claim();
  ASSERT_EQ(answer(first.token, "one\n").status, 200);
  EXPECT_EQ(body(simulator_.retrieve_session(session_, first.token))["status"], "idle");
  const ApiReply terminated = simulator_.terminate_session(session_);
  ASSERT_EQ(terminated.status, 200) << terminated.body;
  // What an operator holding only the environment key sees.
  EXPECT_EQ(body(simulator_.retrieve_session(session_, "env-key"))["status"], "terminated");
  EXPECT_TRUE(simulator_.session_terminated(session_));
  EXPECT_EQ(event_types().back(), "session.status_terminated");
  EXPECT_EQ(simulator_.terminate_session(session_).status, 409);
  EXPECT_EQ(simulator_.send_next_turn(session_).status, 409);
  EXPECT_EQ(simulator_.terminate_session("sesn_missing").status, 404);
  EXPECT_EQ(simulator_.take_wakes().sessions.count(session_), 1u);
}

TEST_F(SessionsTest, ALastTurnWithoutTerminateLeavesTheSessionIdle) {
  enqueue(two_turns("delay_ms: 0", "terminate: false\n"));
  const Claimed first = claim();
  ASSERT_EQ(answer(first.token, "one\n").status, 200);
  ASSERT_EQ(answer(first.token, "two\n").status, 200);
  EXPECT_EQ(body(simulator_.retrieve_session(session_, "env-key"))["status"], "idle");
  EXPECT_EQ(admin()["phase"], "finished");
  ASSERT_EQ(simulator_.stop(environment_, first.work_id, first.token, true).status, 200);
  EXPECT_EQ(admin()["items"][0]["ended"], "released");
  EXPECT_EQ(depth(), 0);
}

}  // namespace
}  // namespace perimeter::sim
