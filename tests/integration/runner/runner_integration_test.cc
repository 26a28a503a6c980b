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

#include "agentapi/sim_process.h"
#include "agentapi/work_secret.h"

namespace perimeter {
namespace {

using nlohmann::json;
using testing::HttpResult;
using testing::SimProcess;
using testing::TempDir;
using namespace std::chrono_literals;

const char* kKey = "runner-integration-environment-key";

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::pair<std::string, std::string>> api_headers(const std::string& bearer) {
  return {{"Authorization", "Bearer " + bearer},
          {"anthropic-version", "2023-06-01"},
          {"anthropic-beta", "managed-agents-2026-04-01"},
          {"Content-Type", "application/json"}};
}

struct Claimed {
  std::string work_id;
  std::string session_id;
  std::string secret;
};

class Environment {
 public:
  explicit Environment(const SimProcess& sim) : sim_(sim) {
    HttpResult created = testing::http_call(sim.url(), "POST", "/admin/environments",
                                            json({{"name", "runner"}, {"key", kKey}}).dump());
    EXPECT_EQ(created.status, 201) << created.body;
    id_ = created.json().value("id", "");
  }

  // Enqueues a session for `scenario` (YAML text) and claims it as the operator does.
  Claimed enqueue_and_claim(const std::string& yaml) {
    HttpResult enqueued =
        testing::http_call(sim_.url(), "POST", "/admin/environments/" + id_ + "/sessions",
                           json({{"scenario_yaml", yaml}}).dump());
    EXPECT_EQ(enqueued.status, 201) << enqueued.body;
    const std::string work_id = enqueued.json().value("work_id", "");
    Claimed claimed;
    for (int attempt = 0; attempt < 20 && claimed.work_id.empty(); ++attempt) {
      HttpResult polled = testing::http_call(sim_.url(), "GET",
                                             "/v1/environments/" + id_ + "/work/poll?block_ms=999",
                                             "", api_headers(kKey));
      EXPECT_EQ(polled.status, 200) << polled.body;
      const json item = polled.json();
      if (!item.is_object()) continue;
      HttpResult acked = testing::http_call(
          sim_.url(), "POST",
          "/v1/environments/" + id_ + "/work/" + item["id"].get<std::string>() + "/ack", "",
          api_headers(kKey));
      EXPECT_EQ(acked.status, 200) << acked.body;
      EXPECT_EQ(item["id"], work_id) << "one item at a time is enqueued";
      claimed.work_id = item["id"];
      claimed.session_id = item["data"]["id"];
      claimed.secret = item["secret"];
    }
    EXPECT_FALSE(claimed.work_id.empty()) << "the enqueued item was never claimable";
    return claimed;
  }

  const std::string& id() const { return id_; }

 private:
  const SimProcess& sim_;
  std::string id_;
};

std::string scenario(const std::string& name) {
  const std::string text = read_file(env_or_empty("PERIMETER_SOURCE_DIR") +
                                     "/sim/scenarios/conformance/" + name + ".yaml");
  EXPECT_FALSE(text.empty()) << "scenario " << name << " not found";
  return text;
}

// The runner as a child process; stderr (its JSON-line log) goes to a file.
class RunnerProcess {
 public:
  RunnerProcess(const SimProcess& sim, const std::string& environment_id, const Claimed& claimed,
                const std::string& workdir, std::vector<std::string> extra_env = {})
      : log_path_(workdir + "/../runner-" + claimed.work_id + ".log") {
    const std::string binary = env_or_empty("PERIMETER_BIN_DIR") + "/perimeter-runner";
    EXPECT_EQ(access(binary.c_str(), X_OK), 0) << binary << " is not built";
    std::vector<std::string> env = {"ANTHROPIC_WORK_ID=" + claimed.work_id,
                                    "ANTHROPIC_ENVIRONMENT_ID=" + environment_id,
                                    "ANTHROPIC_SESSION_ID=" + claimed.session_id,
                                    "ANTHROPIC_WORK_SECRET=" + claimed.secret,
                                    "ANTHROPIC_BASE_URL=" + sim.url(),
                                    "PATH=/usr/bin:/bin",
                                    "HOME=" + workdir};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    pid_ = fork();
    if (pid_ == 0) {
      if (chdir(workdir.c_str()) != 0) _exit(126);
      const int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) dup2(fd, STDERR_FILENO);
      std::vector<char*> envp;
      for (auto& entry : env) envp.push_back(entry.data());
      envp.push_back(nullptr);
      char* argv[] = {const_cast<char*>(binary.c_str()), nullptr};
      execve(binary.c_str(), argv, envp.data());
      _exit(127);
    }
  }
  ~RunnerProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // The exit code, or -1 when it did not exit within `timeout` (then it is killed).
  int wait(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(50ms);
    }
    return -1;
  }
  void signal(int number) { kill(pid_, number); }
  std::string log() const { return read_file(log_path_); }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string log_path_;
};

json results_of(const SimProcess& sim, const std::string& session_id) {
  return testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_id + "/results").json();
}
json work_of(const SimProcess& sim, const std::string& work_id) {
  return testing::http_call(sim.url(), "GET", "/admin/work/" + work_id).json();
}

void expect_all_matched(const json& record) {
  EXPECT_TRUE(record["unexpected"].empty()) << record["unexpected"].dump(2);
  ASSERT_FALSE(record["steps"].empty());
  for (const json& step : record["steps"]) {
    EXPECT_TRUE(step["matched"].get<bool>())
        << "step " << step["index"] << " (" << step["tool"] << "): " << step["mismatch"]
        << "\nexpected " << step["expected"].dump() << "\nreceived " << step["received"].dump();
  }
  EXPECT_TRUE(record["all_matched"].get<bool>());
}

void expect_echoed_lease_history(const json& item) {
  const json& history = item["lease_history"];
  ASSERT_FALSE(history.empty()) << "the runner never heartbeat";
  EXPECT_EQ(history[0]["expected"], "NO_HEARTBEAT");
  for (std::size_t beat = 1; beat < history.size(); ++beat) {
    EXPECT_EQ(history[beat]["status"], 200) << history[beat].dump();
    EXPECT_EQ(history[beat]["expected"], history[beat - 1]["returned"]) << "beat " << beat;
  }
}

void expect_no_secret_logged(const std::string& log, const Claimed& claimed) {
  const agentapi::WorkSecret secret = agentapi::decode_work_secret(claimed.secret);
  EXPECT_EQ(log.find(secret.sessions_token), std::string::npos) << "the sessions token was logged";
  EXPECT_EQ(log.find(claimed.secret), std::string::npos) << "the work secret was logged";
  EXPECT_EQ(log.find(kKey), std::string::npos);
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_FALSE(json::parse(line, nullptr, false).is_discarded()) << "not a JSON line: " << line;
  }
}

// Runs one scenario to its end and checks everything the protocol says about it.
void serve_scenario(const SimProcess& sim, Environment& environment, const std::string& name,
                    std::vector<std::string> extra_env = {}) {
  SCOPED_TRACE(name);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const Claimed claimed = environment.enqueue_and_claim(scenario(name));
  RunnerProcess runner(sim, environment.id(), claimed, workdir, std::move(extra_env));
  const int code = runner.wait(90s);
  ASSERT_EQ(code, 0) << "runner log:\n" << runner.log() << "\nsimulator log:\n" << sim.log();
  expect_all_matched(results_of(sim, claimed.session_id));
  const json item = work_of(sim, claimed.work_id);
  EXPECT_EQ(item["state"], "stopped");
  expect_echoed_lease_history(item);
  expect_no_secret_logged(runner.log(), claimed);
  if (name == "long-lease") {
    EXPECT_GE(item["lease_history"].size(), 2u) << "a 5 s call under a 4 s lease needs beats";
  }
  if (name == "permissions") {
    EXPECT_FALSE(std::ifstream(workdir + "/refused-by-user").good());
    EXPECT_FALSE(std::ifstream(workdir + "/denied-by-policy.txt").good());
  }
}

TEST(RunnerIntegration, EveryConformanceScenarioItServesCompletesWithTheExpectedResults) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  for (const char* name : {"builtin-tools", "permissions", "long-lease"}) {
    serve_scenario(sim, environment, name);
  }
}

TEST(RunnerIntegration, DroppedStreamsAndServerErrorsStillRunEveryCallExactlyOnce) {
  SimProcess sim({"--lease-ttl-seconds", "20", "--faults",
                  R"({"sse_drop_rate":1.0,"sse_drop_after_events":2,"error_5xx_rate":0.05,)"
                  R"("error_429_rate":0.05,"latency_ms":5})"});
  Environment environment(sim);
  for (const char* name : {"builtin-tools", "permissions"}) serve_scenario(sim, environment, name);
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

}  // namespace
}  // namespace perimeter
