// The fixture of the tests whose sessions run on the real node (real_node_e2e_test.cc and
// warm_pool_real_node_test.cc): a simulator on the bridge's gateway, an AgentEnvironment whose
// runner pods land on the real node, and perimeter-operator, cold or serving warm pods.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "localcluster/real_node.h"
#include "operator/operator_process.h"
#include "real_node_cluster.h"

namespace perimeter::e2e {

inline std::string source_dir() {
  return required_env("PERIMETER_SOURCE_DIR");
}
inline std::string bin_dir() {
  return required_env("PERIMETER_BIN_DIR");
}

inline std::string tail(const std::string& text, size_t size = 6000) {
  return text.size() > size ? text.substr(text.size() - size) : text;
}

struct Enqueued {
  std::string work_id;
  std::string session_id;
};

class RealNodeE2eTest : public RealNodeTest {
 protected:
  using json = nlohmann::json;
  using seconds = std::chrono::seconds;

  void SetUp() override {
    RealNodeTest::SetUp();
    if (HasFatalFailure()) return;
    gateway_ = node_.at("gateway");
    node_dir_ =
        std::filesystem::path(node_.at("containerd_socket").get<std::string>()).parent_path();
    kubeconfig_ = cluster_->kubeconfig_path();
    apply_crds();
    if (HasFatalFailure()) return;
    logs_ = std::make_unique<testing::TempDir>();
  }

  void TearDown() override {
    if (HasFailure()) {
      if (logs_) {
        std::cerr << "---- operator log (tail) ----\n"
                  << tail(read_file(logs_->path() + "/operator.log"));
      }
      if (sim_) std::cerr << "---- perimeter-sim log (tail) ----\n" << tail(sim_->log());
      if (node_.is_object()) {
        std::cerr << "---- kubelet log (tail) ----\n"
                  << tail(read_file(node_.value("kubelet_log", "")));
      }
    }
    operator_.reset();  // nothing re-creates pods while they are removed
    RealNodeTest::TearDown();
  }

  // The simulator listens on the bridge's gateway: the only host address pods can reach.
  void start_sim(int lease_ttl_seconds) {
    sim_ = std::make_unique<testing::SimProcess>(std::vector<std::string>{
        "--address", gateway_, "--lease-ttl-seconds", std::to_string(lease_ttl_seconds)});
    environment_id_ = create_sim_environment_with_key(sim_->url());
  }

  // An AgentEnvironment whose runner pods land on the real node and run the imported image.
  void create_environment(const json& runner_extra, const json& spec_extra = json::object()) {
    json runner = {{"image", testing::kRunnerImage},
                   {"imagePullPolicy", "Never"},
                   {"nodeSelector", {{localcluster::kRealNodeLabel, "true"}}},
                   {"tolerations",
                    {{{"key", localcluster::kRealNodeTaintKey},
                      {"operator", "Equal"},
                      {"value", "true"},
                      {"effect", "NoSchedule"}}}},
                   // The runner exits soon after its session ends, so the pod completes.
                   {"env", {{{"name", "PERIMETER_MAX_IDLE_MS"}, {"value", "3000"}}}}};
    runner.update(runner_extra);
    json spec = {{"environmentId", environment_id_},
                 {"environmentKeySecretRef", {{"name", "env-key"}}},
                 {"apiBaseUrl", sim_->url()},
                 {"maxConcurrentSessions", 3},
                 {"runner", runner}};
    spec.update(spec_extra);
    client(agent_environments())
        ->create(ns_, {{"apiVersion", "perimeter.dev/v1alpha1"},
                       {"kind", "AgentEnvironment"},
                       {"metadata", {{"name", "agents"}}},
                       {"spec", spec}});
  }

  void start_operator() {
    operator_ = std::make_unique<testing::OperatorProcess>(
        testing::OperatorProcessOptions{bin_dir() + "/perimeter-operator",
                                        kubeconfig_,
                                        logs_->path() + "/operator.log",
                                        {"--allowed-api-hosts", sim_->url()}});
  }

  // The operator serving warm runners their assignments at the bridge's gateway (it runs on the
  // host, where no Service reaches it), its CA Secret kept in the test's namespace. A restarted
  // operator serves on the same port: the warm pods already running were told that one.
  void start_operator_serving_warm_pods() {
    if (assignment_port_ == 0) assignment_port_ = localcluster::pick_free_port();
    operator_ = std::make_unique<testing::OperatorProcess>(testing::OperatorProcessOptions{
        bin_dir() + "/perimeter-operator",
        kubeconfig_,
        logs_->path() + "/operator.log",
        {"--allowed-api-hosts", sim_->url(), "--warm-assignment-port",
         std::to_string(assignment_port_), "--warm-assignment-address", gateway_},
        {"POD_NAMESPACE=" + ns_}});
  }

  // Warm pods of the environment no claim has assigned, Running with the runner started, by the
  // operator's own rules (warm_pool.h).
  std::vector<json> ready_unassigned_warm_pods() {
    std::vector<json> ready;
    for (const auto& pod : list(kube::resources::pods())) {
      if (agentenvironment::unassigned_warm_pod(pod) &&
          agentenvironment::warm_pod_state(pod) == agentenvironment::WarmPodState::kReady) {
        ready.push_back(pod);
      }
    }
    return ready;
  }

  // The pool full as the apiserver shows it and as the operator's cache does (its status says so):
  // an item that arrives then finds the warm pods the claim reads from that cache.
  bool warm_pool_ready(std::size_t size) {
    const auto status =
        client(agent_environments())->get(ns_, "agents").value("status", json::object());
    return ready_unassigned_warm_pods().size() == size &&
           status.value("warmPool", json::object()).value("ready", std::int64_t{-1}) ==
               static_cast<std::int64_t>(size);
  }

  Enqueued enqueue(const std::string& scenario_yaml) {
    const auto reply = testing::http_call(sim_->url(), "POST",
                                          "/admin/environments/" + environment_id_ + "/sessions",
                                          json{{"scenario_yaml", scenario_yaml}}.dump());
    EXPECT_EQ(reply.status, 201) << reply.body;
    const auto body = reply.json();
    return {body.value("work_id", ""), body.value("session_id", "")};
  }
  static std::string conformance_scenario(const std::string& name) {
    return read_file(source_dir() + "/sim/scenarios/conformance/" + name + ".yaml");
  }

  json work_view(const std::string& work_id) {
    return testing::http_call(sim_->url(), "GET", "/admin/work/" + work_id).json();
  }
  json results(const std::string& session_id) {
    return testing::http_call(sim_->url(), "GET", "/admin/sessions/" + session_id + "/results")
        .json();
  }

  // The runner pods of one work item (the operator annotates each with its work id).
  std::vector<json> pods_of(const std::string& work_id) {
    std::vector<json> found;
    for (const auto& pod : list(kube::resources::pods())) {
      const auto annotations = pod["metadata"].value("annotations", json::object());
      if (annotations.value("perimeter.dev/work-id", "") == work_id) found.push_back(pod);
    }
    return found;
  }
  static std::string phase_of(const json& pod) {
    return pod.value("status", json::object()).value("phase", "");
  }

  // The pod's /workspace as the kubelet lays it out on the node (a disk-backed emptyDir).
  // A session whose first bash step runs long enough to be killed in the middle of; its marker
  // file (`step-started` in the workspace) shows the step really started.
  static std::string slow_then_quick_scenario(const std::string& name) {
    return "name: " + name + R"(
prompt: Run something slow, then something quick.
steps:
  - tool: bash
    input: {command: "touch step-started; sleep 20; echo done"}
    expect: {is_error: false, text: "done"}
  - tool: bash
    input: {command: "echo after"}
    expect: {is_error: false, text: "after"}
)";
  }

  // The item's one pod once it runs the slow step (null when that never happens; the wait
  // failed the test already).
  json wait_for_the_slow_step(const std::string& work_id) {
    json first;
    eventually(
        [&] {
          const auto pods = pods_of(work_id);
          if (pods.size() != 1 || phase_of(pods[0]) != "Running") return false;
          first = pods[0];
          return std::filesystem::exists(workspace_on_node(first) + "/step-started");
        },
        seconds(180), "the first pod to start the slow step");
    return first;
  }

  // Everything the runner container of `pod` wrote, from the kubelet's CRI log files
  // (<pod-logs>/<ns>_<name>_<uid>/runner/), to explain a failure.
  std::string runner_log(const json& pod) const {
    const std::string dir = node_dir_ + "/pod-logs/" +
                            pod["metadata"]["namespace"].get<std::string>() + "_" +
                            pod["metadata"]["name"].get<std::string>() + "_" +
                            pod["metadata"]["uid"].get<std::string>() + "/runner";
    std::vector<std::string> files;
    std::error_code missing;
    for (const auto& entry : std::filesystem::directory_iterator(dir, missing)) {
      files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& file : files) text += read_file(file);
    return text;
  }

  // The lines of `text` that mention `needle`.
  static std::string lines_with(const std::string& text, const std::string& needle) {
    std::istringstream lines(text);
    std::string found;
    for (std::string line; std::getline(lines, line);) {
      if (line.find(needle) != std::string::npos) found += line + "\n";
    }
    return found;
  }

  // What the operator (every run of it), the simulator and each runner pod holding it said about
  // one work item.
  void explain_item(const std::string& work_id, const std::vector<json>& holding) {
    std::cerr << "---- " << work_id << ": operator log ----\n"
              << lines_with(read_file(logs_->path() + "/operator.log"), work_id) << "---- "
              << work_id << ": perimeter-sim log ----\n"
              << lines_with(sim_->log(), work_id);
    for (const auto& pod : holding) {
      std::cerr << "---- " << work_id << ": runner log of " << pod["metadata"].value("name", "")
                << " ----\n"
                << runner_log(pod);
    }
  }

  std::string workspace_on_node(const json& pod) const {
    return node_dir_ + "/kubelet/pods/" + pod["metadata"]["uid"].get<std::string>() +
           "/volumes/kubernetes.io~empty-dir/workspace";
  }

  std::string gateway_, node_dir_, kubeconfig_;
  std::unique_ptr<testing::TempDir> logs_;
  std::unique_ptr<testing::SimProcess> sim_;
  std::string environment_id_;
  std::unique_ptr<testing::OperatorProcess> operator_;
  int assignment_port_ = 0;
};

}  // namespace perimeter::e2e
