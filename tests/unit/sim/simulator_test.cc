#include "sim/simulator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentapi/work_secret.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

json body(const ApiReply& reply) {
  return json::parse(reply.body);
}

Scenario one_bash_step() {
  return parse_scenario(R"(
name: unit
steps:
  - tool: bash
    input: {command: "echo hi"}
    expect: {is_error: false, text: "hi\n"}
)");
}

class SimulatorTest : public ::testing::Test {
 protected:
  SimulatorTest() : simulator_(options(), clock_, random_) {
    environment_ = simulator_.create_environment("unit", "env-key")["id"];
  }
  static SimulatorOptions options() {
    SimulatorOptions o;
    o.default_lease_ttl = seconds(60);
    o.default_reclaim_older_than = milliseconds(5000);
    return o;
  }
  // Enqueues one session and returns {work_id, session_id}.
  std::pair<std::string, std::string> enqueue(Scenario scenario = one_bash_step()) {
    const json reply = body(simulator_.enqueue_session(environment_, std::move(scenario)));
    return {reply["work_id"], reply["session_id"]};
  }
  // Polls and acks the next item; returns its sessions token.
  std::string claim(const std::string& work_id) {
    const json item = body(simulator_.poll(environment_, "env-key", "worker-a", std::nullopt));
    EXPECT_EQ(item["id"], work_id);
    EXPECT_EQ(simulator_.ack(environment_, work_id, "env-key").status, 200);
    return token_of(item["secret"]);
  }
  static std::string token_of(const std::string& secret) {
    return agentapi::decode_work_secret(secret).sessions_token;
  }

  testing::FakeClock clock_;
  testing::FakeRandom random_;
  Simulator simulator_;
  std::string environment_;
};

TEST_F(SimulatorTest, PollReturnsNullWhenTheQueueIsEmpty) {
  const ApiReply reply = simulator_.poll(environment_, "env-key", "w", std::nullopt);
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "null");
}

TEST_F(SimulatorTest, WorkEndpointsRefuseAWrongKeyAndUnknownEnvironments) {
  EXPECT_EQ(simulator_.poll(environment_, "wrong", "w", std::nullopt).status, 401);
  EXPECT_EQ(simulator_.poll(environment_, "", "w", std::nullopt).status, 401);
  EXPECT_EQ(simulator_.poll("env_missing", "env-key", "w", std::nullopt).status, 404);
  EXPECT_EQ(body(simulator_.stats(environment_, "wrong"))["error"]["type"], "authentication_error");
}

TEST_F(SimulatorTest, PolledItemCarriesASecretWithItsSessionsTokenAndMovesThroughTheStates) {
  auto [work_id, session_id] = enqueue();
  const json polled = body(simulator_.poll(environment_, "env-key", "worker-a", std::nullopt));
  EXPECT_EQ(polled["state"], "queued");
  EXPECT_EQ(polled["data"], json({{"type", "session"}, {"id", session_id}}));
  const std::string token = token_of(polled["secret"]);
  EXPECT_FALSE(token.empty());
  // The secret is only on the poll response.
  EXPECT_TRUE(body(simulator_.retrieve_work(environment_, work_id, "env-key"))["secret"].is_null());

  EXPECT_EQ(body(simulator_.ack(environment_, work_id, "env-key"))["state"], "starting");
  const json beat = body(simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", 30));
  EXPECT_EQ(beat["type"], "work_heartbeat");
  EXPECT_EQ(beat["state"], "active");
  EXPECT_EQ(beat["lease_extended"], true);
  EXPECT_EQ(beat["ttl_seconds"], 30);
  clock_.advance(seconds(1));
  const json second = body(
      simulator_.heartbeat(environment_, work_id, token, beat["last_heartbeat"], std::nullopt));
  EXPECT_NE(second["last_heartbeat"], beat["last_heartbeat"]);
  EXPECT_EQ(body(simulator_.stop(environment_, work_id, token, true))["state"], "stopped");
  EXPECT_EQ(simulator_.stop(environment_, work_id, token, true).status, 409);
}

TEST_F(SimulatorTest, AMismatchedHeartbeatIs412WithTheServersLeaseState) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  const json beat = body(simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", {}));
  const ApiReply stale = simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", {});
  ASSERT_EQ(stale.status, 412);
  const json details = body(stale)["error"]["details"];
  EXPECT_EQ(details["error_code"], "heartbeat_precondition_failed");
  EXPECT_EQ(details["current_state"]["last_heartbeat"], beat["last_heartbeat"]);
  EXPECT_EQ(details["current_state"]["state"], "active");
  EXPECT_EQ(details["current_state"]["ttl_seconds"], 60);
}

TEST_F(SimulatorTest, AStolenLeaseRefusesTheNextEcho) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  const json beat = body(simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", {}));
  ASSERT_TRUE(simulator_.steal_lease(work_id));
  EXPECT_EQ(simulator_.heartbeat(environment_, work_id, token, beat["last_heartbeat"], {}).status,
            412);
}

TEST_F(SimulatorTest, GracefulStopIsSeenOnTheNextHeartbeatWithoutComparing) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  body(simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", {}));
  EXPECT_EQ(body(simulator_.stop(environment_, work_id, "env-key", false))["state"], "stopping");
  const json beat = body(simulator_.heartbeat(environment_, work_id, token, "anything", {}));
  EXPECT_EQ(beat["state"], "stopping");
  EXPECT_EQ(beat["lease_extended"], false);
  EXPECT_EQ(body(simulator_.stop(environment_, work_id, token, true))["state"], "stopped");
}

TEST_F(SimulatorTest, AnItemPolledButNotAckedIsReclaimedAfterTheWindow) {
  auto [work_id, session_id] = enqueue();
  EXPECT_EQ(body(simulator_.poll(environment_, "env-key", "a", std::nullopt))["id"], work_id);
  EXPECT_EQ(simulator_.poll(environment_, "env-key", "b", std::nullopt).body, "null");
  clock_.advance(milliseconds(4999));
  EXPECT_EQ(simulator_.poll(environment_, "env-key", "b", std::nullopt).body, "null");
  clock_.advance(milliseconds(1));
  EXPECT_EQ(body(simulator_.poll(environment_, "env-key", "b", std::nullopt))["id"], work_id);
  // The caller's reclaim_older_than_ms wins over the default.
  clock_.advance(milliseconds(100));
  EXPECT_EQ(body(simulator_.poll(environment_, "env-key", "c", 100))["id"], work_id);
}

TEST_F(SimulatorTest, AReissuingQueueHandsAReclaimedItemOutWithANewSecret) {
  auto [work_id, session_id] = enqueue();
  const json first = body(simulator_.poll(environment_, "env-key", "a", std::nullopt, false, true));
  clock_.advance(milliseconds(5000));
  const json second =
      body(simulator_.poll(environment_, "env-key", "b", std::nullopt, false, true));
  ASSERT_EQ(second["id"], work_id);
  const std::string old_token = token_of(first["secret"]);
  const std::string new_token = token_of(second["secret"]);
  EXPECT_NE(old_token, new_token);
  ASSERT_EQ(simulator_.ack(environment_, work_id, "env-key").status, 200);
  // Only the secret handed out last opens the item's lease.
  EXPECT_EQ(simulator_.heartbeat(environment_, work_id, old_token, "NO_HEARTBEAT", {}).status, 401);
  EXPECT_EQ(simulator_.heartbeat(environment_, work_id, new_token, "NO_HEARTBEAT", {}).status, 200);
}

TEST_F(SimulatorTest, WithoutTheKnobAReclaimedItemKeepsItsSecret) {
  auto [work_id, session_id] = enqueue();
  const json first = body(simulator_.poll(environment_, "env-key", "a", std::nullopt));
  clock_.advance(milliseconds(5000));
  const json second = body(simulator_.poll(environment_, "env-key", "b", std::nullopt));
  EXPECT_EQ(first["secret"], second["secret"]);
}

TEST_F(SimulatorTest, ALapsedLeaseRequeuesTheItemAndTheOldHolderGets412) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  const json beat = body(simulator_.heartbeat(environment_, work_id, token, "NO_HEARTBEAT", 10));
  clock_.advance(seconds(11));
  simulator_.tick();
  EXPECT_EQ(body(simulator_.retrieve_work(environment_, work_id, "env-key"))["state"], "queued");
  EXPECT_EQ(simulator_.heartbeat(environment_, work_id, token, beat["last_heartbeat"], {}).status,
            412);
  EXPECT_EQ(body(simulator_.poll(environment_, "env-key", "b", std::nullopt))["id"], work_id);
}

TEST_F(SimulatorTest, AckOfAnItemNotQueuedIsAConflict) {
  auto [work_id, session_id] = enqueue();
  claim(work_id);
  EXPECT_EQ(simulator_.ack(environment_, work_id, "env-key").status, 409);
  EXPECT_EQ(simulator_.ack(environment_, "work_missing", "env-key").status, 404);
}

TEST_F(SimulatorTest, StatsCountDepthPendingAndRecentPollers) {
  auto first = enqueue();
  clock_.advance(seconds(1));
  enqueue();
  body(simulator_.poll(environment_, "env-key", "worker-a", std::nullopt));
  clock_.advance(seconds(1));
  body(simulator_.poll(environment_, "env-key", "worker-b", std::nullopt));
  json stats = body(simulator_.stats(environment_, "env-key"));
  EXPECT_EQ(stats["type"], "work_queue_stats");
  EXPECT_EQ(stats["depth"], 2);
  EXPECT_EQ(stats["pending"], 2);
  EXPECT_EQ(stats["workers_polling"], 2);
  EXPECT_EQ(stats["oldest_queued_at"],
            body(simulator_.retrieve_work(environment_, first.first, "env-key"))["created_at"]);
  clock_.advance(seconds(29) + milliseconds(500));  // worker-a last polled 30.5 s ago
  stats = body(simulator_.stats(environment_, "env-key"));
  EXPECT_EQ(stats["workers_polling"], 1);
}

TEST_F(SimulatorTest, ListPagesWithACursor) {
  for (int i = 0; i < 3; ++i) enqueue();
  const json first = body(simulator_.list_work(environment_, "env-key", 2, ""));
  ASSERT_EQ(first["data"].size(), 2u);
  ASSERT_TRUE(first["next_page"].is_string());
  const json second = body(simulator_.list_work(environment_, "env-key", 2, first["next_page"]));
  EXPECT_EQ(second["data"].size(), 1u);
  EXPECT_TRUE(second["next_page"].is_null());
  EXPECT_EQ(simulator_.list_work(environment_, "env-key", 2, "bogus").status, 400);
}

TEST_F(SimulatorTest, MetadataMergesAndNullDeletes) {
  auto [work_id, session_id] = enqueue();
  simulator_.update_work_metadata(environment_, work_id, "env-key", {{"a", "1"}, {"b", "2"}});
  const json item =
      body(simulator_.update_work_metadata(environment_, work_id, "env-key", {{"a", nullptr}}));
  EXPECT_EQ(item["metadata"], json({{"b", "2"}}));
  EXPECT_EQ(simulator_.update_work_metadata(environment_, work_id, "env-key", {{"a", 3}}).status,
            400);
}

TEST_F(SimulatorTest, SessionCallsNeedThatSessionsToken) {
  auto [work_id, session_id] = enqueue();
  auto other = enqueue();
  const std::string token = claim(work_id);
  EXPECT_EQ(simulator_.retrieve_session(session_id, token).status, 200);
  EXPECT_EQ(simulator_.retrieve_session(other.second, token).status, 401);
  EXPECT_EQ(simulator_.retrieve_session(session_id, "forged").status, 401);
  EXPECT_EQ(simulator_.retrieve_session("sesn_missing", token).status, 404);
  // The environment key is the fallback credential.
  EXPECT_EQ(simulator_.retrieve_session(session_id, "env-key").status, 200);
}

TEST_F(SimulatorTest, TheScriptedAgentWaitsForEachResultAndRecordsIt) {
  Scenario scenario = one_bash_step();
  scenario.terminate = false;  // an idle session still takes events, so the duplicate is seen
  auto [work_id, session_id] = enqueue(std::move(scenario));
  const std::string token = claim(work_id);
  auto events = simulator_.events_after(session_id, "");
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[0].type, "user.message");
  EXPECT_EQ(events[1].type, "session.status_running");
  EXPECT_EQ(events[2].type, "agent.tool_use");
  EXPECT_EQ(events[3].type, "session.status_idle");
  const json tool_use = json::parse(events[2].data);
  EXPECT_EQ(tool_use["evaluated_permission"], "allow");
  EXPECT_EQ(tool_use["input"], json({{"command", "echo hi"}}));
  EXPECT_EQ(json::parse(events[3].data)["stop_reason"]["type"], "requires_action");
  EXPECT_EQ(body(simulator_.retrieve_session(session_id, token))["status"], "idle");

  const json result = {{"type", "user.tool_result"},
                       {"tool_use_id", tool_use["id"]},
                       {"is_error", false},
                       {"content", {{{"type", "text"}, {"text", "hi\n"}}}}};
  EXPECT_EQ(simulator_.send_events(session_id, token, {{"events", {result}}}).status, 200);
  // A second answer to the same call is refused and recorded.
  EXPECT_EQ(simulator_.send_events(session_id, token, {{"events", {result}}}).status, 400);

  const auto after = simulator_.events_after(session_id, events[3].id);
  std::vector<std::string> types;
  for (const auto& e : after) types.push_back(e.type);
  EXPECT_THAT(types, ::testing::ElementsAre("user.tool_result", "session.status_running",
                                            "agent.message", "session.status_idle"));
  EXPECT_FALSE(simulator_.session_terminated(session_id));
  const json results = body(simulator_.session_results(session_id));
  EXPECT_EQ(results["finished"], true);
  // The first answer is what was recorded; the second marks the step as run twice.
  EXPECT_EQ(results["steps"][0]["received"]["text"], "hi\n");
  EXPECT_EQ(results["steps"][0]["matched"], false);
  EXPECT_EQ(results["steps"][0]["mismatch"], "the call was answered 2 times");
  EXPECT_EQ(results["unexpected"].size(), 1u);  // the duplicate
  EXPECT_EQ(results["all_matched"], false);
}

TEST_F(SimulatorTest, AWrongResultIsRecordedAsAMismatch) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  const json tool_use = json::parse(simulator_.events_after(session_id, "")[2].data);
  simulator_.send_events(session_id, token,
                         {{"events",
                           {{{"type", "user.tool_result"},
                             {"tool_use_id", tool_use["id"]},
                             {"content", {{{"type", "text"}, {"text", "bye\n"}}}}}}}});
  const json results = body(simulator_.session_results(session_id));
  EXPECT_EQ(results["steps"][0]["matched"], false);
  EXPECT_EQ(results["steps"][0]["mismatch"], "text differs");
  EXPECT_EQ(results["all_matched"], false);
}

TEST_F(SimulatorTest, DeniedAndRefusedCallsExpectNoResultAndTheAgentMovesOn) {
  auto [work_id, session_id] = enqueue(parse_scenario(R"(
name: permissions
terminate: false
steps:
  - {tool: bash, input: {command: ls}, permission: deny}
  - {tool: bash, input: {command: rm}, permission: ask, confirm: deny}
)"));
  const std::string token = claim(work_id);
  std::vector<std::string> types;
  std::string denied_id;
  for (const auto& e : simulator_.events_after(session_id, "")) {
    types.push_back(e.type);
    if (e.type == "agent.tool_use" && denied_id.empty()) denied_id = json::parse(e.data)["id"];
  }
  EXPECT_THAT(types, ::testing::ElementsAre(
                         "user.message", "session.status_running", "agent.tool_use",
                         "agent.tool_use", "session.status_idle", "user.tool_confirmation",
                         "session.status_running", "agent.message", "session.status_idle"));
  EXPECT_FALSE(simulator_.session_terminated(session_id));
  EXPECT_EQ(body(simulator_.session_results(session_id))["all_matched"], true);
  // Answering a denied call is a violation the results show.
  EXPECT_EQ(
      simulator_
          .send_events(session_id, token,
                       {{"events", {{{"type", "user.tool_result"}, {"tool_use_id", denied_id}}}}})
          .status,
      400);
  EXPECT_EQ(body(simulator_.session_results(session_id))["all_matched"], false);
}

TEST_F(SimulatorTest, MalformedEventBatchesAre400AndChangeNothing) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  const std::size_t before = simulator_.events_after(session_id, "").size();
  EXPECT_EQ(simulator_.send_events(session_id, token, json::array()).status, 400);
  EXPECT_EQ(simulator_.send_events(session_id, token, {{"events", {{{"type", 5}}}}}).status, 400);
  EXPECT_EQ(simulator_.send_events(session_id, token, {{"events", {{{"type", "agent.tool_use"}}}}})
                .status,
            400);
  EXPECT_EQ(
      simulator_.send_events(session_id, token, {{"events", {{{"type", "user.tool_result"}}}}})
          .status,
      400);
  EXPECT_EQ(simulator_.events_after(session_id, "").size(), before);
}

TEST_F(SimulatorTest, EventPagesFollowTheCursor) {
  auto [work_id, session_id] = enqueue();
  const std::string token = claim(work_id);
  const json first = body(simulator_.list_events(session_id, token, 2, ""));
  ASSERT_EQ(first["data"].size(), 2u);
  const json rest = body(simulator_.list_events(session_id, token, 100, first["next_page"]));
  EXPECT_EQ(first["data"].size() + rest["data"].size(),
            simulator_.events_after(session_id, "").size());
  EXPECT_TRUE(rest["next_page"].is_null());
}

}  // namespace
}  // namespace perimeter::sim
