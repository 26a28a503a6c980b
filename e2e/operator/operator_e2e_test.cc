// perimeter-operator end to end, as separate processes over loopback: a real control plane
// (kube-apiserver, etcd, controller manager, scheduler, KWOK nodes), perimeter-sim as the Managed
// Agents API, and the operator binary. KWOK runs no containers, so these tests prove claiming,
// pods, limits and crash safety; the runner's own work is tested elsewhere.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "core/log.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "localcluster/tools.h"
#include "operator/exposition.h"
#include "operator/operator_process.h"
#include "process/process.h"
#include "runtime/informer.h"

namespace perimeter::e2e {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::metric_sum;

kube::ResourceType agent_environments() {
  return {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true};
}

std::string source_dir() {
  return std::getenv("PERIMETER_SOURCE_DIR");
}
std::string bin_dir() {
  return std::getenv("PERIMETER_BIN_DIR");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Waits for `done`, polling; fails the test with `what` when it does not happen in `limit`.
// The limit is a generous bound on a shared machine, not a performance assertion.
template <typename Pred>
bool eventually(Pred done, seconds limit, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(100));
  }
  ADD_FAILURE() << "timed out waiting for " << what;
  return false;
}

class OperatorE2eTest : public ::testing::Test {
 protected:
  static testing::LocalClusterOptions cluster_options() {
    testing::LocalClusterOptions options;
    options.controller_manager = true;  // the default ServiceAccount in each namespace
    options.scheduler = true;
    options.kwok_nodes = 3;
    return options;
  }

  static void SetUpTestSuite() {
    auto& cluster = testing::shared_cluster(cluster_options());
    const std::string kubectl =
        localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") + " --kubeconfig " +
        cluster.kubeconfig_path();
    const std::string command = kubectl + " apply -f " + source_dir() + "/crds/ >/dev/null && " +
                                kubectl + " wait --for condition=established --timeout=60s" +
                                " crd/agentenvironments.perimeter.dev >/dev/null";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  void SetUp() override {
    auto& cluster = testing::shared_cluster(cluster_options());
    kubeconfig_ = cluster.kubeconfig_path();
    config_ = kube::Config::from_kubeconfig_file(kubeconfig_);
    config_.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config_);
    ns_ = "e2e-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    client(kube::resources::namespaces())
        ->create("", {{"apiVersion", "v1"},
                      {"kind", "Namespace"},
                      {"metadata",
                       {{"name", ns_},
                        {"labels", {{"pod-security.kubernetes.io/enforce", "restricted"}}}}}});
    // Items are acked but never heartbeated on KWOK; keep their leases from lapsing mid-test.
    sim_ = std::make_unique<testing::SimProcess>(
        std::vector<std::string>{"--lease-ttl-seconds", "3600"});
    const auto created =
        testing::http_call(sim_->url(), "POST", "/admin/environments", json{{"name", ns_}}.dump())
            .json();
    environment_id_ = created["id"];
    environment_key_ = created["key"];
    client(kube::resources::secrets())
        ->create(ns_, {{"apiVersion", "v1"},
                       {"kind", "Secret"},
                       {"metadata", {{"name", "env-key"}}},
                       {"stringData", {{"environment-key", environment_key_}}}});
    scenario_ = read_file(source_dir() + "/sim/scenarios/conformance/builtin-tools.yaml");
    logs_ = std::make_unique<testing::TempDir>();
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- operator log (tail) ----\n" << tail(logs_->path() + "/operator.log");
    }
  }

  static std::string tail(const std::string& path) {
    const std::string text = read_file(path);
    return text.size() > 6000 ? text.substr(text.size() - 6000) : text;
  }

  std::unique_ptr<kube::ResourceClient> client(const kube::ResourceType& type) {
    return std::make_unique<kube::ResourceClient>(*transport_, type, metrics_);
  }

  void create_environment(int limit, json runner_extra, json spec_extra = json::object()) {
    json runner = {{"image", "perimeter-runner:e2e"}};
    runner.update(runner_extra);
    json spec = {{"environmentId", environment_id_},
                 {"environmentKeySecretRef", {{"name", "env-key"}}},
                 {"apiBaseUrl", sim_->url()},
                 {"maxConcurrentSessions", limit},
                 {"runner", runner}};
    spec.update(spec_extra);
    client(agent_environments())
        ->create(ns_, {{"apiVersion", "perimeter.dev/v1alpha1"},
                       {"kind", "AgentEnvironment"},
                       {"metadata", {{"name", "agents"}}},
                       {"spec", spec}});
  }

  std::vector<std::string> enqueue(int count) {
    std::vector<std::string> work_ids;
    for (int i = 0; i < count; ++i) {
      const auto reply = testing::http_call(sim_->url(), "POST",
                                            "/admin/environments/" + environment_id_ + "/sessions",
                                            json{{"scenario_yaml", scenario_}}.dump());
      EXPECT_EQ(reply.status, 201) << reply.body;
      work_ids.push_back(reply.json()["work_id"]);
    }
    return work_ids;
  }

  json work_view(const std::string& work_id) {
    return testing::http_call(sim_->url(), "GET", "/admin/work/" + work_id).json();
  }

  std::unique_ptr<testing::OperatorProcess> start_operator() {
    return std::make_unique<testing::OperatorProcess>(
        testing::OperatorProcessOptions{bin_dir() + "/perimeter-operator",
                                        kubeconfig_,
                                        logs_->path() + "/operator.log",
                                        {"--poll-threads", "4"}});
  }

  json list(const kube::ResourceType& type) { return client(type)->list(ns_)["items"]; }

  static inline int counter_ = 0;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  std::string kubeconfig_;
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  std::string ns_;
  std::unique_ptr<testing::SimProcess> sim_;
  std::string environment_id_, environment_key_, scenario_;
  std::unique_ptr<testing::TempDir> logs_;
};

// Follows the namespace's runner pods through a watch and remembers what a test asserts on.
class PodTracker {
 public:
  PodTracker(kube::ResourceClient& pods, const std::string& ns, runtime::RuntimeMetrics& metrics)
      : informer_(pods, options(ns), metrics,
                  Logger("pod-tracker", StderrSink::instance(), LogLevel::kWarn)) {
    runtime::EventHandlers handlers;
    handlers.on_add = [this](const runtime::ObjectPtr& pod) { observe(*pod, true); };
    handlers.on_update = [this](const runtime::ObjectPtr&, const runtime::ObjectPtr& pod) {
      observe(*pod, false);
    };
    handlers.on_delete = [this](const runtime::ObjectPtr& pod) {
      std::lock_guard lock(mutex_);
      unfinished_.erase((*pod)["metadata"]["name"].get<std::string>());
    };
    informer_.add_handlers(std::move(handlers));
    informer_.start();
    informer_.wait_for_sync(std::chrono::seconds(30));
  }
  ~PodTracker() { informer_.stop(); }

  size_t max_unfinished() const {
    std::lock_guard lock(mutex_);
    return max_unfinished_;
  }
  std::map<std::string, int> adds_per_work_id() const {
    std::lock_guard lock(mutex_);
    return adds_;
  }

 private:
  static runtime::InformerOptions options(const std::string& ns) {
    runtime::InformerOptions options;
    options.ns = ns;
    options.label_selector = "app.kubernetes.io/component=runner";
    return options;
  }

  void observe(const json& pod, bool added) {
    std::lock_guard lock(mutex_);
    const std::string name = pod["metadata"]["name"];
    if (added) ++adds_[pod["metadata"]["annotations"].value("perimeter.dev/work-id", "")];
    const std::string phase = pod.value("status", json::object()).value("phase", "");
    if (phase == "Succeeded" || phase == "Failed") {
      unfinished_.erase(name);
    } else {
      unfinished_.insert(name);
    }
    max_unfinished_ = std::max(max_unfinished_, unfinished_.size());
  }

  runtime::Informer informer_;
  mutable std::mutex mutex_;
  std::set<std::string> unfinished_;
  size_t max_unfinished_ = 0;
  std::map<std::string, int> adds_;
};

TEST_F(OperatorE2eTest, FiftySessionsGetFiftyPodsAndTheLimitHoldsExactly) {
  constexpr int kSessions = 50;
  constexpr int kLimit = 5;
  // Each pod "exits" a second after it runs (a KWOK stage of the harness); succeeded pods are
  // removed at once.
  create_environment(kLimit, {{"podAnnotations", {{"perimeter.dev/kwok-complete-after", "1s"}}}});
  auto pods = client(kube::resources::pods());
  runtime::RuntimeMetrics runtime_metrics(registry_);
  PodTracker tracker(*pods, ns_, runtime_metrics);
  auto operator_process = start_operator();
  const auto work_ids = enqueue(kSessions);

  auto environments = client(agent_environments());
  eventually(
      [&] {
        const auto status = environments->get(ns_, "agents").value("status", json::object());
        return status.value("sessions", json::object()).value("succeeded", 0) == kSessions;
      },
      seconds(300), "every session's pod to succeed and be counted");

  const auto adds = tracker.adds_per_work_id();
  EXPECT_EQ(adds.size(), static_cast<size_t>(kSessions));
  for (const auto& work_id : work_ids) {
    const auto it = adds.find(work_id);
    ASSERT_NE(it, adds.end()) << work_id << " never got a pod";
    EXPECT_EQ(it->second, 1) << work_id << " got more than one pod";
    EXPECT_EQ(work_view(work_id)["state"], "starting") << work_id << " was not acknowledged";
  }
  EXPECT_LE(tracker.max_unfinished(), static_cast<size_t>(kLimit));
  // The limit was reached, so the bound above was really exercised.
  EXPECT_EQ(tracker.max_unfinished(), static_cast<size_t>(kLimit));
  const auto status = environments->get(ns_, "agents")["status"];
  EXPECT_EQ(status["sessions"]["claimed"], kSessions);
  EXPECT_EQ(status["sessions"]["failed"], 0);
  EXPECT_EQ(status["activeSessions"], 0);
  // Succeeded pods are removed with their Secrets (retention.succeededSeconds defaults to 0).
  eventually([&] { return list(kube::resources::secrets()).size() == 1; }, seconds(60),
             "session Secrets to be removed with their pods (only the key remains)");
  const std::string metrics = operator_process->metrics();
  EXPECT_EQ(metric_sum(metrics, "perimeter_sessions_started_total"), kSessions);
  EXPECT_EQ(metric_sum(metrics, "perimeter_sessions_succeeded_total"), kSessions);
  EXPECT_EQ(metric_sum(metrics, "perimeter_claim_to_pod_created_seconds_count"), kSessions);
}

TEST_F(OperatorE2eTest, KillingTheOperatorMidClaimTenTimesLosesAndDoublesNothing) {
  constexpr int kSessions = 40;
  // 150 ms on every API reply keeps each claim (poll ... ack) open for a few hundred
  // milliseconds, so the kills below land in the middle of claims rather than between them.
  ASSERT_EQ(
      testing::http_call(sim_->url(), "POST", "/admin/faults", json{{"latency_ms", 150}}.dump())
          .status,
      200);
  create_environment(100, json::object(), {{"poll", {{"reclaimOlderThanMs", 1000}}}});
  const auto work_ids = enqueue(kSessions);
  std::mt19937 random(20261123);
  std::uniform_int_distribution<int> lifetime_ms(150, 1500);
  for (int round = 0; round < 10; ++round) {
    auto operator_process = start_operator();
    std::this_thread::sleep_for(milliseconds(lifetime_ms(random)));
    operator_process->kill9();
  }
  auto operator_process = start_operator();
  eventually(
      [&] {
        for (const auto& work_id : work_ids) {
          if (work_view(work_id)["state"] != "starting") return false;
        }
        return true;
      },
      seconds(180), "every work item to be acknowledged");
  // Evidence that kills hit between a poll and its ack: those items were handed out again.
  int reclaimed = 0;
  for (const auto& work_id : work_ids) {
    const auto transitions = work_view(work_id)["transitions"];
    reclaimed +=
        static_cast<int>(std::count(transitions.begin(), transitions.end(), json("reclaimed")));
  }
  std::cout << "items handed out again after a kill: " << reclaimed << "\n";
  EXPECT_GT(reclaimed, 0) << "no kill landed mid-claim; the test proved nothing";

  const auto pods = list(kube::resources::pods());
  std::map<std::string, int> pods_per_work_id;
  for (const auto& pod : pods)
    ++pods_per_work_id[pod["metadata"]["annotations"]["perimeter.dev/work-id"]];
  EXPECT_EQ(pods.size(), static_cast<size_t>(kSessions));
  for (const auto& work_id : work_ids) {
    EXPECT_EQ(pods_per_work_id[work_id], 1) << work_id;
    // Acknowledged exactly once: a doubled claim would show a second queued->starting.
    const auto transitions = work_view(work_id)["transitions"];
    EXPECT_EQ(std::count(transitions.begin(), transitions.end(), json("queued->starting")), 1)
        << work_id << ": " << transitions.dump();
  }
  // No orphan: one Secret per pod, plus the environment key.
  EXPECT_EQ(list(kube::resources::secrets()).size(), static_cast<size_t>(kSessions) + 1);
}

TEST_F(OperatorE2eTest, EverySessionGetsItsPodWhileTwentyPercentOfApiCallsFail) {
  constexpr int kSessions = 30;
  const auto faults = testing::http_call(sim_->url(), "POST", "/admin/faults",
                                         json{{"error_5xx_rate", 0.2}}.dump());
  ASSERT_EQ(faults.status, 200) << faults.body;
  create_environment(100, json::object(), {{"poll", {{"reclaimOlderThanMs", 1000}}}});
  const auto work_ids = enqueue(kSessions);
  auto operator_process = start_operator();
  eventually(
      [&] {
        for (const auto& work_id : work_ids) {
          if (work_view(work_id)["state"] != "starting") return false;
        }
        return list(kube::resources::pods()).size() == static_cast<size_t>(kSessions);
      },
      seconds(240), "every session to get its pod and be acknowledged");
  std::set<std::string> pod_work_ids;
  for (const auto& pod : list(kube::resources::pods())) {
    pod_work_ids.insert(pod["metadata"]["annotations"]["perimeter.dev/work-id"].get<std::string>());
  }
  EXPECT_EQ(pod_work_ids, std::set<std::string>(work_ids.begin(), work_ids.end()));
  // The faults really happened and were retried.
  const std::string metrics = operator_process->metrics();
  EXPECT_GT(metric_sum(metrics, "perimeter_agentapi_retries_total"), 0) << metrics;
}

TEST_F(OperatorE2eTest, AMissingKeyIsAConditionThatClearsWhenTheSecretAppears) {
  client(kube::resources::secrets())->remove(ns_, "env-key");
  create_environment(3, json::object());
  auto operator_process = start_operator();
  auto environments = client(agent_environments());
  const auto condition = [&](const std::string& type) {
    const auto object = environments->get(ns_, "agents");
    for (const auto& c :
         object.value("status", json::object()).value("conditions", json::array())) {
      if (c["type"] == type) return c;
    }
    return json::object();
  };
  eventually([&] { return condition("CredentialsReady").value("reason", "") == "SecretNotFound"; },
             seconds(60), "CredentialsReady=False/SecretNotFound");
  EXPECT_EQ(condition("Ready")["status"], "False");
  EXPECT_TRUE(operator_process->running()) << "a missing key must not crash the operator";

  client(kube::resources::secrets())
      ->create(ns_, {{"apiVersion", "v1"},
                     {"kind", "Secret"},
                     {"metadata", {{"name", "env-key"}}},
                     {"stringData", {{"environment-key", "not-the-key"}}}});
  eventually([&] { return condition("CredentialsReady").value("reason", "") == "KeyRejected"; },
             seconds(120), "CredentialsReady=False/KeyRejected for a wrong key");

  client(kube::resources::secrets())
      ->merge_patch(ns_, "env-key", {{"stringData", {{"environment-key", environment_key_}}}});
  eventually([&] { return condition("Ready").value("status", "") == "True"; }, seconds(120),
             "Ready=True once the right key is in the Secret");
  EXPECT_EQ(condition("QueueReachable")["status"], "True");
}

TEST_F(OperatorE2eTest, SuspendClaimsNothingNewAndLetsRunningSessionsFinish) {
  create_environment(10, {{"podAnnotations", {{"perimeter.dev/kwok-complete-after", "3s"}}}});
  auto operator_process = start_operator();
  const auto first = enqueue(2);
  eventually([&] { return list(kube::resources::pods()).size() == 2; }, seconds(60),
             "the first two sessions' pods");
  auto environments = client(agent_environments());
  environments->merge_patch(ns_, "agents", {{"spec", {{"suspend", true}}}});
  const auto status = [&] {
    return environments->get(ns_, "agents").value("status", json::object());
  };
  eventually([&] { return status()["observedGeneration"] == 2; }, seconds(60),
             "the operator to see the suspension");
  const auto later = enqueue(3);
  // The running sessions finish while suspended...
  eventually([&] { return status().value("sessions", json::object()).value("succeeded", 0) == 2; },
             seconds(60), "the two running sessions to finish while suspended");
  // ... and nothing new was claimed meanwhile (polls every few seconds would have taken them).
  std::this_thread::sleep_for(seconds(5));
  EXPECT_EQ(status()["sessions"]["claimed"], 2) << status().dump();
  for (const auto& work_id : later) EXPECT_EQ(work_view(work_id)["state"], "queued") << work_id;
  json ready;
  const json current = status();
  for (const auto& c : current["conditions"]) {
    if (c["type"] == "Ready") ready = c;
  }
  EXPECT_EQ(ready["reason"], "Suspended");

  environments->merge_patch(ns_, "agents", {{"spec", {{"suspend", false}}}});
  eventually([&] { return status().value("sessions", json::object()).value("succeeded", 0) == 5; },
             seconds(90), "the queued sessions to be claimed and finish once resumed");
}

TEST_F(OperatorE2eTest, DeletingTheEnvironmentStopsClaimingAndItsPodsGoWithIt) {
  create_environment(10, json::object());
  auto operator_process = start_operator();
  enqueue(3);
  eventually([&] { return list(kube::resources::pods()).size() == 3; }, seconds(60),
             "three runner pods");
  client(agent_environments())->remove(ns_, "agents");
  // The garbage collector removes what the AgentEnvironment owned.
  eventually(
      [&] {
        return list(kube::resources::pods()).empty() &&
               list(kube::resources::secrets()).size() == 1 &&
               list(kube::resources::network_policies()).empty();
      },
      seconds(120), "the runner pods, their Secrets and the NetworkPolicy to be collected");
  // No poller is left claiming for it.
  const auto after = enqueue(2);
  std::this_thread::sleep_for(seconds(5));
  for (const auto& work_id : after) EXPECT_EQ(work_view(work_id)["state"], "queued") << work_id;
  EXPECT_TRUE(operator_process->running());
}

}  // namespace
}  // namespace perimeter::e2e
