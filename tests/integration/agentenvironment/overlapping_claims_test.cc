// Two claims of one work item overlapping, against the real apiserver and perimeter-sim with its
// reissue_secret_on_reclaim fault: the first claim is held (as a slow apiserver would) longer
// than the reclaim window, the queue hands the item out again with a new secret, and the second
// claim runs to the end. The pod must be left with the secret the API still honours, and the item
// acknowledged once (docs/claiming.md, "Two claims of one item").
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <cstdlib>
#include <thread>

#include "agentapi/sim_process.h"
#include "agentapi/work_secret.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/api_factory.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "install_crds.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/session_poller.h"
#include "core/base64.h"
#include "core/log.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/tools.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

const char* kScenario = R"(
name: overlap
steps:
  - tool: bash
    input: {command: "echo hi"}
    expect: {is_error: false, text: "hi\n"}
)";

// Writes through to the cluster; the first Secret write first runs `before_first_secret`.
class InterleavingWriter final : public SessionObjectWriter {
 public:
  InterleavingWriter(SessionObjectWriter& target, std::function<void()> before_first_secret)
      : target_(target), before_first_secret_(std::move(before_first_secret)) {}
  std::optional<ObjectVersion> ensure_secret(const json& secret) override {
    if (before_first_secret_) std::exchange(before_first_secret_, nullptr)();
    return target_.ensure_secret(secret);
  }
  bool ensure_pod(const json& pod) override { return target_.ensure_pod(pod); }
  void check_pod(const json& pod) override { target_.check_pod(pod); }
  void release_pod(const std::string& ns, const std::string& name) override {
    target_.release_pod(ns, name);
  }
  void remove_finished(const json& pod) override { target_.remove_finished(pod); }
  bool assign_warm_pod(const std::string& ns, const WarmPodRef& pod, const ClaimedSession& session,
                       const std::string& secret_name, std::int64_t deadline_seconds) override {
    return target_.assign_warm_pod(ns, pod, session, secret_name, deadline_seconds);
  }
  std::optional<std::string> find_assigned_pod(const std::string& ns,
                                               const std::string& environment_name,
                                               const std::string& work_id) override {
    return target_.find_assigned_pod(ns, environment_name, work_id);
  }

 private:
  SessionObjectWriter& target_;
  std::function<void()> before_first_secret_;
};

class EmptyCensus final : public RunnerPodCensus {
 public:
  std::size_t unfinished(const std::string&, const std::string&) override { return 0; }
  std::map<std::string, std::string> gated(const std::string&, const std::string&) override {
    return {};
  }
  bool cached(const std::string&, const std::string&) override { return false; }
  std::vector<WarmPodRef> ready_warm_pods(const std::string&, const std::string&) override {
    return {};
  }
  std::optional<AssignedPod> assigned_pod(const std::string&, const std::string&) override {
    return std::nullopt;
  }
};

class OverlappingClaimsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { install_crds(); }

  void SetUp() override {
    config_ =
        kube::Config::from_kubeconfig_file(perimeter::testing::shared_cluster().kubeconfig_path());
    config_.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config_);
    ns_ = "overlap-" + std::to_string(::getpid());
    kube::ResourceClient(*transport_, kube::resources::namespaces(), client_metrics_)
        .create("", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns_}}}});
    // The ServiceAccount admission wants the namespace's default account; no controller
    // manager runs here to make it.
    kube::ResourceClient(*transport_, kube::resources::service_accounts(), client_metrics_)
        .create(ns_, {{"apiVersion", "v1"},
                      {"kind", "ServiceAccount"},
                      {"metadata", {{"name", "default"}}}});
    const auto created = testing::http_call(sim_.url(), "POST", "/admin/environments",
                                            json({{"name", "overlap"}, {"key", "env-key"}}).dump());
    ASSERT_EQ(created.status, 201) << created.body;
    environment_id_ = created.json()["id"];
    const auto faults = testing::http_call(sim_.url(), "POST", "/admin/faults",
                                           json({{"reissue_secret_on_reclaim", true}}).dump());
    ASSERT_EQ(faults.status, 200) << faults.body;
  }

  // The AgentEnvironment the objects belong to (owned objects need a live owner).
  AgentEnvironment environment() {
    kube::ResourceClient environments(
        *transport_, {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true},
        client_metrics_);
    json stored;
    for (int attempt = 0;; ++attempt) {  // a fresh CRD may not be served for a moment
      try {
        stored = environments.create(ns_, {{"apiVersion", "perimeter.dev/v1alpha1"},
                                           {"kind", "AgentEnvironment"},
                                           {"metadata", {{"name", "overlap"}}},
                                           {"spec",
                                            {{"environmentId", environment_id_},
                                             {"environmentKeySecretRef", {{"name", "env-key"}}},
                                             {"maxConcurrentSessions", 4},
                                             {"poll", {{"reclaimOlderThanMs", 1000}}},
                                             {"runner", {{"image", "perimeter-runner:dev"}}}}}});
        break;
      } catch (const kube::ApiError& e) {
        if (e.kind() != kube::ErrorKind::kNotFound || attempt == 50) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    AgentEnvironment env = parse_agent_environment(stored);
    env.api_base_url = sim_.url();
    return env;
  }

  std::unique_ptr<SessionPoller> poller(const AgentEnvironment& env, SessionObjectWriter& writer,
                                        const std::string& worker) {
    PollerDependencies deps{factory_,
                            writer,
                            census_,
                            metrics_,
                            SystemClock::instance(),
                            SystemRandom::instance(),
                            Logger("poller", StderrSink::instance(), LogLevel::kWarn),
                            [](const std::string&, const std::string&, const std::string&) {},
                            [] {}};
    return std::make_unique<SessionPoller>(PollerSettings{env, "env-key", worker}, std::move(deps),
                                           1);
  }

  testing::SimProcess sim_;
  std::string environment_id_;
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  PrometheusApiMetrics api_metrics_{registry_};
  AgentApiClientFactory factory_{api_metrics_,
                                  Logger("api", StderrSink::instance(), LogLevel::kWarn)};
  EmptyCensus census_;
  OperatorMetrics metrics_{registry_};
  std::string ns_;
};

TEST_F(OverlappingClaimsTest, TheRunnerPodIsLeftWithTheSecretTheQueueIssuedLast) {
  const auto enqueued =
      testing::http_call(sim_.url(), "POST", "/admin/environments/" + environment_id_ + "/sessions",
                         json({{"scenario_yaml", kScenario}}).dump());
  ASSERT_EQ(enqueued.status, 201) << enqueued.body;
  const std::string work_id = enqueued.json()["work_id"];
  const AgentEnvironment env = environment();

  kube::ResourceClient secrets(*transport_, kube::resources::secrets(), client_metrics_);
  kube::ResourceClient pods(*transport_, kube::resources::pods(), client_metrics_);
  KubeSessionObjectWriter cluster_writer(secrets, pods);
  auto later = poller(env, cluster_writer, "worker-b");
  PollOutcome later_outcome = PollOutcome::kEmpty;
  // The first claim is held past the reclaim window before its Secret write; meanwhile the
  // item is handed out again, with a new secret, and the later claim runs to the end.
  InterleavingWriter slow_writer(cluster_writer, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    later_outcome = later->poll_once();
  });
  auto earlier = poller(env, slow_writer, "worker-a");

  earlier->poll_once();
  ASSERT_EQ(later_outcome, PollOutcome::kClaimed) << sim_.log();

  // The Secret holds the secret the queue issued last: its token opens the item's lease.
  const json secret = secrets.get(ns_, runner_object_name(work_id));
  std::string work_secret;
  ASSERT_TRUE(base64_decode_any(
      secret.value("data", json::object()).value("work-secret", std::string()), &work_secret))
      << secret.dump();
  const std::string token = agentapi::decode_work_secret(work_secret).sessions_token;
  try {
    factory_.make(sim_.url(), environment_id_, token, "")
        ->heartbeat(work_id, std::string(agentapi::kNoHeartbeat), std::nullopt,
                    std::chrono::seconds(10));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "the API refused the token the runner pod would use: " << e.what();
  }

  // One pod, never gated; the item acknowledged once.
  const json pod = pods.get(ns_, runner_object_name(work_id));
  EXPECT_FALSE(pod.value("spec", json::object()).contains("schedulingGates"));
  const json work = testing::http_call(sim_.url(), "GET", "/admin/work/" + work_id).json();
  const json transitions = work.value("transitions", json::array());
  int acknowledged = 0;
  for (const auto& transition : transitions) {
    if (transition == "queued->starting") ++acknowledged;
  }
  EXPECT_EQ(acknowledged, 1) << work.dump();
  EXPECT_NE(std::find(transitions.begin(), transitions.end(), "reclaimed"), transitions.end())
      << "the item was never handed out twice: the test did not overlap the claims";
}

}  // namespace
}  // namespace perimeter::agentenvironment
