// The scenarios that existed before sessions could span turns must behave byte for byte as they
// did: every event, the session and the work item as the API renders them. A scripted in-process
// worker plays each conformance scenario on an injected clock and random source; the transcript is
// compared with tests/unit/sim/testdata/single_turn_golden.json, recorded from the simulator
// before multi-turn sessions were added. PERIMETER_UPDATE_GOLDEN=1 rewrites the file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "agentapi/work_secret.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "sim/simulator.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

std::string source_dir() {
  const char* dir = std::getenv("PERIMETER_SOURCE_DIR");
  return dir ? dir : "";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string token_of(const std::string& secret) {
  return agentapi::decode_work_secret(secret).sessions_token;
}

// Plays one scenario to its end the way a worker does: poll, ack, beat, answer every open call
// (a fixed text per call), stop. Returns everything the API showed along the way.
json play(const std::string& scenario_name) {
  testing::FakeClock clock;
  testing::FakeRandom random;
  Simulator simulator(SimulatorOptions{}, clock, random);
  const std::string environment = simulator.create_environment("golden", "env-key")["id"];
  const std::string yaml =
      read_file(source_dir() + "/sim/scenarios/conformance/" + scenario_name + ".yaml");
  EXPECT_FALSE(yaml.empty()) << scenario_name;
  const json enqueued =
      json::parse(simulator.enqueue_session(environment, parse_scenario(yaml)).body);
  const std::string session_id = enqueued["session_id"];
  json transcript = {{"enqueued", enqueued}};
  const json polled = json::parse(simulator.poll(environment, "env-key", "w", std::nullopt).body);
  transcript["polled"] = polled;
  const std::string work_id = polled["id"];
  const std::string token = token_of(polled["secret"]);
  transcript["ack"] = json::parse(simulator.ack(environment, work_id, "env-key").body);
  transcript["beat"] =
      json::parse(simulator.heartbeat(environment, work_id, token, "NO_HEARTBEAT", 30).body);
  transcript["session_at_start"] = json::parse(simulator.retrieve_session(session_id, token).body);
  std::set<std::string> answered;
  json sends = json::array();
  for (int round = 0; round < 50 && !simulator.session_terminated(session_id); ++round) {
    clock.advance(std::chrono::milliseconds(100));
    const json events =
        json::parse(simulator.list_events(session_id, token, 1000, "").body)["data"];
    std::set<std::string> denied;
    for (const json& event : events) {
      if (event["type"] == "user.tool_confirmation" && event["result"] == "deny") {
        denied.insert(event["tool_use_id"].get<std::string>());
      }
    }
    bool sent = false;
    for (const json& event : events) {
      const std::string type = event["type"];
      if (type != "agent.tool_use" && type != "agent.custom_tool_use") continue;
      const std::string id = event["id"];
      if (answered.count(id) || denied.count(id) ||
          event.value("evaluated_permission", "") == "deny")
        continue;
      const bool custom = type == "agent.custom_tool_use";
      json result = {{"type", custom ? "user.custom_tool_result" : "user.tool_result"},
                     {custom ? "custom_tool_use_id" : "tool_use_id", id},
                     {"is_error", false},
                     {"content", json::array({{{"type", "text"}, {"text", "answer " + id}}})}};
      const ApiReply reply = simulator.send_events(session_id, token, {{"events", {result}}});
      sends.push_back({{"status", reply.status}, {"body", reply.body}});
      answered.insert(id);
      sent = true;
      break;
    }
    if (!sent && !simulator.session_terminated(session_id)) break;
  }
  transcript["sends"] = sends;
  transcript["events"] = json::parse(simulator.list_events(session_id, token, 1000, "").body);
  transcript["session_at_end"] = json::parse(simulator.retrieve_session(session_id, token).body);
  transcript["stop"] = json::parse(simulator.stop(environment, work_id, token, true).body);
  transcript["work_after_stop"] =
      json::parse(simulator.retrieve_work(environment, work_id, "env-key").body);
  transcript["list"] = json::parse(simulator.list_work(environment, "env-key", 20, "").body);
  transcript["stats"] = json::parse(simulator.stats(environment, "env-key").body);
  return transcript;
}

TEST(SingleTurnGolden, ExistingScenariosBehaveExactlyAsBeforeMultiTurnSessions) {
  ASSERT_FALSE(source_dir().empty()) << "PERIMETER_SOURCE_DIR is not set (run via ctest)";
  json all = json::object();
  for (const char* name : {"builtin-tools", "custom-tool", "long-lease", "permissions", "skills"}) {
    all[name] = play(name);
  }
  const std::string path = source_dir() + "/tests/unit/sim/testdata/single_turn_golden.json";
  if (const char* update = std::getenv("PERIMETER_UPDATE_GOLDEN"); update && *update == '1') {
    std::ofstream(path) << all.dump(1) << "\n";
  }
  const std::string golden = read_file(path);
  ASSERT_FALSE(golden.empty()) << path << " is missing";
  const json expected = json::parse(golden);
  for (const auto& [name, transcript] : expected.items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(all.contains(name));
    for (const auto& [part, value] : transcript.items()) {
      EXPECT_EQ(all[name][part].dump(), value.dump()) << "differs in `" << part << "`";
    }
  }
  EXPECT_EQ(all.size(), expected.size());
}

}  // namespace
}  // namespace perimeter::sim
