// perimeter-runner run exactly as in a runner pod: a child process with the env contract
// (ANTHROPIC_WORK_ID, _ENVIRONMENT_ID, _SESSION_ID, _WORK_SECRET, _BASE_URL; no environment key),
// serving one item claimed from perimeter-sim. Nothing here skips: a missing binary fails.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "runner_harness.h"

namespace perimeter {
namespace {

using namespace runner_harness;

TEST(RunnerIntegration, EveryConformanceScenarioItServesCompletesWithTheExpectedResults) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  for (const char* name : {"builtin-tools", "permissions", "long-lease", "skills"}) {
    serve_scenario(sim, environment, name);
  }
}

TEST(RunnerIntegration, DroppedStreamsAndServerErrorsStillRunEveryCallExactlyOnce) {
  SimProcess sim({"--lease-ttl-seconds", "20", "--faults",
                  R"({"sse_drop_rate":1.0,"sse_drop_after_events":2,"error_5xx_rate":0.05,)"
                  R"("error_429_rate":0.05,"latency_ms":5})"});
  Environment environment(sim);
  for (const char* name : {"builtin-tools", "permissions"}) {
    serve_scenario(sim, environment, name, {}, /*faults=*/true);
  }
  const std::string metrics = testing::http_call(sim.url(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("perimeter_sim_faults_injected_total{kind=\"sse_drop\"}"),
            std::string::npos)
      << "no stream was dropped, so the test proved nothing about reconnects";
}

TEST(RunnerIntegration, IdleCountdownEndsASessionThatWasNotTerminated) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const Claimed claimed = environment.enqueue_and_claim(
      "name: idle-end\nprompt: say hi\nterminate: false\nsteps:\n  - tool: bash\n"
      "    input: {command: \"echo hi\"}\n    expect: {is_error: false, text: \"hi\"}\n");
  RunnerProcess runner(sim, environment.id(), claimed, workdir, {"PERIMETER_MAX_IDLE_MS=1500"});
  ASSERT_EQ(runner.wait(60s), 0) << runner.log();
  EXPECT_NE(runner.log().find("session idle after its turn ended; stopping"), std::string::npos)
      << runner.log();
  expect_all_matched(results_of(sim, claimed.session_id));
  EXPECT_EQ(work_of(sim, claimed.work_id)["state"], "stopped");
}

TEST(RunnerIntegration, LeaseTheftEndsTheRunnerWithoutStoppingTheItem) {
  SimProcess sim({"--lease-ttl-seconds", "2"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const Claimed claimed = environment.enqueue_and_claim(
      "name: slow\nprompt: wait\nsteps:\n  - tool: bash\n    input: {command: \"sleep 20\"}\n"
      "    expect: {is_error: false}\n");
  RunnerProcess runner(sim, environment.id(), claimed, workdir);
  // Wait for the first beat, then let another worker take the lease.
  for (int i = 0; i < 200 && work_of(sim, claimed.work_id)["lease_history"].empty(); ++i) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_FALSE(work_of(sim, claimed.work_id)["lease_history"].empty()) << runner.log();
  ASSERT_EQ(
      testing::http_call(sim.url(), "POST", "/admin/work/" + claimed.work_id + "/steal").status,
      200);
  const int code = runner.wait(60s);
  EXPECT_EQ(code, 3) << runner.log();
  const json item = work_of(sim, claimed.work_id);
  EXPECT_EQ(item["lease_history"].back()["status"], 412) << item.dump(2);
  EXPECT_NE(item["state"], "stopped") << "a stolen item belongs to its new holder";
  EXPECT_NE(runner.log().find("lease lost"), std::string::npos);
}

TEST(RunnerIntegration, SigtermMidSessionStopsGracefullyAndStopsTheItem) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  // The call waits for the user: the runner is idle on the stream when SIGTERM comes.
  const Claimed claimed = environment.enqueue_and_claim(
      "name: held\nprompt: wait\nsteps:\n  - tool: bash\n    input: {command: \"echo x\"}\n"
      "    permission: ask\n    confirm: allow\n    expect: {is_error: false}\n"
      "  - tool: lookup_ticket\n    custom: true\n    input: {id: PER-7}\n"
      "    expect: {is_error: false, text: \"ticket PER-7: open\"}\n");
  RunnerProcess runner(sim, environment.id(), claimed, workdir);
  // The custom tool belongs to another client: the runner leaves it pending and keeps serving.
  for (int i = 0;
       i < 200 && runner.log().find("leaving the tool_use_id pending") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_NE(runner.log().find("leaving the tool_use_id pending"), std::string::npos)
      << runner.log();
  runner.signal(SIGTERM);
  EXPECT_EQ(runner.wait(30s), 0) << runner.log();
  EXPECT_NE(runner.log().find("shutdown signal received"), std::string::npos);
  EXPECT_EQ(work_of(sim, claimed.work_id)["state"], "stopped");
  const json record = results_of(sim, claimed.session_id);
  EXPECT_TRUE(record["steps"][0]["matched"].get<bool>()) << record.dump(2);
  EXPECT_FALSE(record["steps"][1]["matched"].get<bool>()) << "nothing may answer an unowned call";
  EXPECT_TRUE(record["unexpected"].empty()) << record.dump(2);
}

TEST(RunnerIntegration, TheRunningBinaryHoldsNoCredentialInItsProcEnviron) {
  // /proc/PID/environ shows the block the kernel laid out at exec; the runner wipes the secret
  // there after reading it (a unit test shows a same-uid reader refused outright; this test runs
  // as whoever runs the suite, root included, who may read it).
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const Claimed claimed = environment.enqueue_and_claim(
      "name: slow\nprompt: wait\nsteps:\n  - tool: bash\n    input: {command: \"touch started; "
      "sleep 3\"}\n    expect: {is_error: false}\n");
  RunnerProcess runner(sim, environment.id(), claimed, workdir,
                       {"ANTHROPIC_ENVIRONMENT_KEY=" + std::string(kKey)});
  for (int i = 0; i < 200 && !std::ifstream(workdir + "/started").good(); ++i) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(std::ifstream(workdir + "/started").good()) << runner.log();
  const std::string environ_text = read_file("/proc/" + std::to_string(runner.pid()) + "/environ");
  EXPECT_NE(environ_text.find("ANTHROPIC_WORK_ID=" + claimed.work_id), std::string::npos)
      << "the rest of the environment is left as it was";
  EXPECT_EQ(environ_text.find(claimed.secret), std::string::npos);
  EXPECT_EQ(environ_text.find("ANTHROPIC_WORK_SECRET"), std::string::npos);
  EXPECT_EQ(environ_text.find(kKey), std::string::npos);
  EXPECT_EQ(environ_text.find("ANTHROPIC_ENVIRONMENT_KEY"), std::string::npos);
  EXPECT_EQ(runner.wait(60s), 0) << runner.log();
}

TEST(RunnerIntegration, TheAgentsToolsSeeTheProxyVariables) {
  // The egress gateway's URL stays in the environment for bash, curl and git, unlike the
  // credential variables the runner wipes. The API (the simulator, http://) goes direct: only
  // HTTPS_PROXY is set.
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const std::string proxy = "http://team-a~agents~sesn_01ABC:3f%3A9a@127.0.0.1:9";
  const std::string no_proxy = "localhost,127.0.0.1,::1,.svc,.cluster.local,10.20.0.0/16";
  const Claimed claimed = environment.enqueue_and_claim(
      "name: proxy-env\nprompt: show\nsteps:\n  - tool: bash\n"
      "    input: {command: \"echo \\\"$HTTPS_PROXY|$https_proxy|$NO_PROXY\\\"\"}\n"
      "    expect: {is_error: false, text: \"" +
      proxy + "|" + proxy + "|" + no_proxy + "\"}\n");
  RunnerProcess runner(sim, environment.id(), claimed, workdir,
                       {"HTTPS_PROXY=" + proxy, "https_proxy=" + proxy, "NO_PROXY=" + no_proxy});
  EXPECT_EQ(runner.wait(60s), 0) << runner.log();
  expect_all_matched(results_of(sim, claimed.session_id));
  EXPECT_EQ(runner.log().find("3f%3A9a"), std::string::npos) << "the log shows no proxy password";
  EXPECT_NE(runner.log().find("http://<redacted>@127.0.0.1:9"), std::string::npos) << runner.log();
}

TEST(RunnerIntegration, AProxyUrlThatDoesNotParseStopsTheRunnerBeforeItsFirstCall) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const Claimed claimed = environment.enqueue_and_claim(
      "name: unused\nprompt: none\nsteps:\n  - tool: bash\n    input: {command: \"true\"}\n"
      "    expect: {is_error: false}\n");
  RunnerProcess runner(sim, environment.id(), claimed, workdir,
                       {"HTTPS_PROXY=http://user:topsecret@perimeter-egress:31x8"});
  EXPECT_EQ(runner.wait(30s), 2) << runner.log();
  EXPECT_NE(runner.log().find("HTTPS_PROXY: proxy URL 'http://<redacted>@perimeter-egress:31x8' "
                              "has a malformed host or port"),
            std::string::npos)
      << runner.log();
  EXPECT_EQ(runner.log().find("topsecret"), std::string::npos);
  EXPECT_TRUE(work_of(sim, claimed.work_id)["lease_history"].empty()) << "no call reached the API";
}

}  // namespace
}  // namespace perimeter
