// The AgentEnvironment reconciler against the in-memory apiserver, with the informer caches
// filled by hand: every interleaving of a claim, a sweep, a lagging cache and a status write is
// replayed here step by step, which the end-to-end tests can only hope to hit.
#include "controllers/agentenvironment/reconciler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <functional>
#include <future>

#include "agentapi/mock_agent_api.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/session_workspace.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "core/time_format.h"
#include "fake_agent_api.h"
#include "kube/fake_api_server.h"
#include "kube/metric_value.h"
#include "pki/pki.h"
#include "runtime/conditions.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;
using testing_support::FakeFactory;
using testing_support::kSecret;
using testing_support::session_item;

constexpr const char* kNamespace = "agents";
constexpr const char* kName = "payments";
constexpr const char* kKey = "agents/payments";

kube::ResourceType agent_environments() {
  return {kGroup, kVersion, "agentenvironments", kKind, true};
}

class AgentEnvironmentReconcilerTest : public ::testing::Test {
 protected:
  AgentEnvironmentReconcilerTest() {
    server_.use_clock(&clock_);
    server_.seed(
        std::string("/api/v1/namespaces/") + kNamespace + "/secrets",
        {{"apiVersion", "v1"},
         {"kind", "Secret"},
         {"metadata",
          {{"name", "payments-key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
         {"data", {{"environment-key", "c2stYW50LWtleQ=="}}}});
    ON_CALL(api_, stats()).WillByDefault(Return(agentapi::WorkQueueStats{}));
  }

  json environment_object(const json& spec_overrides = json::object()) {
    json spec = {{"environmentId", "env_1"},
                 {"environmentKeySecretRef", {{"name", "payments-key"}}},
                 {"apiBaseUrl", "https://api.anthropic.com"},
                 {"runner", {{"image", "perimeter-runner:1"}}}};
    spec.merge_patch(spec_overrides);
    return {{"apiVersion", std::string(kGroup) + "/" + kVersion},
            {"kind", kKind},
            {"metadata", {{"name", kName}, {"namespace", kNamespace}, {"generation", 1}}},
            {"spec", spec}};
  }

  // Stores the resource in the apiserver and the cache, as the informer would have; returns it
  // as parsed.
  AgentEnvironment given(const json& object) {
    const json stored = server_.seed(
        std::string("/apis/perimeter.dev/v1alpha1/namespaces/") + kNamespace + "/agentenvironments",
        object);
    environments_.upsert(std::make_shared<const json>(stored));
    return parse_agent_environment(stored);
  }

  ReconcilerOptions options() {
    ReconcilerOptions o;
    o.poll_threads = 0;  // the test drives the poller
    return o;
  }

  std::unique_ptr<AgentEnvironmentReconciler> make_reconciler(ReconcilerOptions o,
                                                              bool with_workspaces = false) {
    return std::make_unique<AgentEnvironmentReconciler>(
        ReconcilerDependencies{environments_,
                               pods_,
                               network_policies_,
                               environment_client_,
                               secret_client_,
                               pod_client_,
                               network_policy_client_,
                               events_,
                               factory_,
                               writer_,
                               census_,
                               metrics_,
                               clock_,
                               random_,
                               Logger("test", log_sink_, log_level_),
                               [this](const std::string& key) { enqueued_.push_back(key); },
                               &cilium_policies_,
                               &cilium_policy_client_,
                               &config_map_client_,
                               with_workspaces ? &claims_ : nullptr,
                               with_workspaces ? &workspaces_ : nullptr},
        std::move(o));
  }

  // What a claim of `work_id` polled now writes.
  ClaimedSession session(const std::string& work_id, const std::string& secret = kSecret) {
    return {work_id, "sesn_" + work_id, secret, format_rfc3339_micros(clock_.wall_now())};
  }

  std::optional<json> stored_secret(const std::string& work_id) {
    return server_.object_at(std::string("/api/v1/namespaces/") + kNamespace + "/secrets/" +
                             runner_object_name(work_id));
  }
  // A runner pod of the environment in the apiserver and the cache.
  json given_runner_pod(const AgentEnvironment& env, const std::string& work_id,
                        const std::string& phase) {
    json pod = build_runner_pod(env, session(work_id));
    pod["status"] = {{"phase", phase}};
    const json stored =
        server_.seed(std::string("/api/v1/namespaces/") + kNamespace + "/pods", pod);
    cache_pod(stored);
    return stored;
  }
  // The pod cache holds what the operator's informer keeps of a pod.
  void cache_pod(json pod) {
    trim_runner_pod(pod);
    pods_.upsert(std::make_shared<const json>(std::move(pod)));
  }
  // The informer catches up with the apiserver.
  void refresh_caches() {
    for (const auto& key : pods_.keys()) {
      const auto stored =
          server_.object_at(std::string("/api/v1/namespaces/") + key.substr(0, key.find('/')) +
                            "/pods/" + key.substr(key.find('/') + 1));
      if (stored) {
        cache_pod(*stored);
      } else {
        pods_.remove(key);
      }
    }
    environments_.upsert(std::make_shared<const json>(stored_environment()));
    const std::string policy = network_policy_name(parse_agent_environment(stored_environment()));
    const auto stored_policy =
        server_.object_at(std::string("/apis/networking.k8s.io/v1/namespaces/") + kNamespace +
                          "/networkpolicies/" + policy);
    if (stored_policy) {
      network_policies_.upsert(std::make_shared<const json>(*stored_policy));
    } else {
      network_policies_.remove(std::string(kNamespace) + "/" + policy);
    }
  }
  json stored_environment() {
    return *server_.object_at(std::string("/apis/perimeter.dev/v1alpha1/namespaces/") + kNamespace +
                              "/agentenvironments/" + kName);
  }
  std::int64_t count(const std::string& field) {
    return stored_environment()["status"]["sessions"].value(field, std::int64_t{-1});
  }
  // Writes the operator sent since `from` (an index into the request log): creates, updates,
  // patches and deletes, Events excluded.
  std::vector<std::string> writes_since(size_t from) {
    std::vector<std::string> writes;
    const auto requests = server_.requests();
    for (size_t i = from; i < requests.size(); ++i) {
      const auto& r = requests[i];
      if (r.rfind("GET", 0) == 0 || r.find("/events") != std::string::npos) continue;
      writes.push_back(r);
    }
    return writes;
  }
  double succeeded_metric() {
    return metrics_.sessions_succeeded_total.Add({{"environment", kKey}}).Value();
  }

  std::optional<json> stored_pod(const std::string& work_id) {
    return server_.object_at(std::string("/api/v1/namespaces/") + kNamespace + "/pods/" +
                             runner_object_name(work_id));
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  runtime::RuntimeMetrics runtime_metrics_{registry_};
  kube::ResourceClient environment_client_{server_, agent_environments(), client_metrics_};
  kube::ResourceClient secret_client_{server_, kube::resources::secrets(), client_metrics_};
  kube::ResourceClient pod_client_{server_, kube::resources::pods(), client_metrics_};
  kube::ResourceClient network_policy_client_{server_, kube::resources::network_policies(),
                                              client_metrics_};
  kube::ResourceClient event_client_{server_, kube::resources::events(), client_metrics_};
  kube::ResourceClient config_map_client_{server_, kube::resources::config_maps(), client_metrics_};
  kube::ResourceClient cilium_policy_client_{server_, kube::resources::cilium_network_policies(),
                                             client_metrics_};
  testing::FakeClock clock_;
  testing::FakeRandom random_{0.5};
  runtime::EventRecorder events_{event_client_,
                                 {},
                                 runtime_metrics_,
                                 Logger("events", StderrSink::instance(), LogLevel::kError),
                                 clock_};
  runtime::Store environments_, pods_, network_policies_, cilium_policies_;
  NiceMock<testing::MockAgentApi> api_;
  FakeFactory factory_{api_};
  KubeSessionObjectWriter writer_{secret_client_, pod_client_};
  kube::ResourceClient claim_client_{server_, kube::resources::persistent_volume_claims(),
                                     client_metrics_};
  KubeSessionWorkspaces workspaces_{claim_client_, pod_client_};
  runtime::Store claims_;
  StoreRunnerPodCensus census_{pods_};
  OperatorMetrics metrics_{registry_};
  std::vector<std::string> enqueued_;
  // Where the reconciler's log goes: errors to stderr, unless a test reads the lines.
  std::shared_ptr<LogSink> log_sink_ = StderrSink::instance();
  LogLevel log_level_ = LogLevel::kError;
};

// Issue 15, item 1: a claim retried long after its first attempt only rewrites the Secret that
// attempt left, so the Secret still looks old; the sweep must not take it from the pod the retry
// has just created (and the informer has not shown yet).
TEST_F(AgentEnvironmentReconcilerTest, TheOrphanSweepSparesTheSecretOfAClaimRetriedLater) {
  const AgentEnvironment env = given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});

  // The first claim wrote the Secret, and the operator died before the pod.
  writer_.ensure_secret(build_session_secret(env, session("work_1")));
  clock_.advance(minutes(10));  // the item waited in the queue; no one took it
  // The retry: the Secret is there already, the pod is created, and the pod cache lags.
  const ClaimedSession retried = session("work_1");
  writer_.ensure_secret(build_session_secret(env, retried));
  ASSERT_TRUE(writer_.ensure_pod(build_runner_pod(env, retried)));
  clock_.advance(minutes(2));  // the next sweep is due

  reconciler->reconcile({kNamespace, kName});

  EXPECT_TRUE(stored_secret("work_1").has_value())
      << "the sweep removed the Secret of a pod that is about to run";
}

// A Secret whose pod never came is removed once no claim can use it: its item is over, or
// still queued long after that claim (a retry would write it again); never when the item was
// acknowledged, for then its pod is made.
TEST_F(AgentEnvironmentReconcilerTest, TheClaimsSweepRemovesASecretNoClaimWillUse) {
  const AgentEnvironment env = given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  for (const std::string state : {"stopped", "queued"}) {
    SCOPED_TRACE(state);
    agentapi::WorkItem item = session_item("work_1");
    item.state = state;
    ON_CALL(api_, retrieve_work("work_1")).WillByDefault(Return(item));
    writer_.ensure_secret(build_session_secret(env, session("work_1")));
    clock_.advance(minutes(1));
    reconciler->reconcile({kNamespace, kName});
    EXPECT_TRUE(stored_secret("work_1").has_value()) << "removed within the horizon";
    clock_.advance(minutes(10));
    reconciler->reconcile({kNamespace, kName});
    EXPECT_FALSE(stored_secret("work_1").has_value());
    EXPECT_FALSE(stored_pod("work_1").has_value());
  }
}

// Issue 15, throughput: the claim acknowledges before it makes the pod, so an operator that dies
// between the two leaves an acknowledged item with only its Secret. The next leader's first pass
// makes the pod from the Secret's claim, and does not wait for any horizon.
TEST_F(AgentEnvironmentReconcilerTest, ANewLeaderMakesThePodOfAClaimItsPredecessorAcknowledged) {
  const AgentEnvironment env = given(environment_object());
  const ClaimedSession claim = session("work_1");
  writer_.ensure_secret(build_session_secret(env, claim));
  agentapi::WorkItem item = session_item("work_1");
  item.state = "starting";
  ON_CALL(api_, retrieve_work("work_1")).WillByDefault(Return(item));
  clock_.advance(seconds(20));

  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});

  const auto pod = stored_pod("work_1");
  ASSERT_TRUE(pod.has_value()) << "the acknowledged item was left without its runner";
  EXPECT_EQ((*pod)["metadata"]["labels"]["perimeter.dev/session-id"], "sesn_work_1");
  EXPECT_EQ((*pod)["metadata"]["annotations"]["perimeter.dev/claimed-at"], claim.claimed_at);
  EXPECT_FALSE((*pod)["spec"].contains("schedulingGates"));
  EXPECT_TRUE(stored_secret("work_1").has_value());
}

// Issue 15, throughput: a claim costs the apiserver two writes, its Secret and its Pod (and, once
// per generation of the spec, a dry run of the pod). No gate to lift, no status write per claim.
TEST_F(AgentEnvironmentReconcilerTest, AClaimWritesItsSecretAndItsPodAndNothingElse) {
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  SessionPoller& poller = *reconciler->poller(kKey);
  const std::string secrets = std::string("POST /api/v1/namespaces/") + kNamespace + "/secrets";
  const std::string pods = std::string("POST /api/v1/namespaces/") + kNamespace + "/pods";

  EXPECT_CALL(api_, poll(_))
      .WillOnce(Return(session_item("work_1")))
      .WillOnce(Return(session_item("work_2")));
  size_t from = server_.requests().size();
  ASSERT_EQ(poller.poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(writes_since(from), (std::vector<std::string>{secrets, pods + "?dryRun=All", pods}));
  from = server_.requests().size();
  ASSERT_EQ(poller.poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(writes_since(from), (std::vector<std::string>{secrets, pods}));
  const auto pod = stored_pod("work_2");
  ASSERT_TRUE(pod.has_value());
  EXPECT_FALSE((*pod)["spec"].contains("schedulingGates"));
}

// Issue 15, item 2: the outcome is decided from the cache, which may not show the mark the
// previous pass wrote; that pass's session must not be counted again, in status or in metrics.
TEST_F(AgentEnvironmentReconcilerTest, AFinishedSessionIsCountedOnceWhenTheCacheLagsBehindItsMark) {
  const AgentEnvironment env =
      given(environment_object({{"retention", {{"succeededSeconds", 3600}}}}));
  given_runner_pod(env, "work_1", "Succeeded");
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  ASSERT_EQ(count("succeeded"), 1);
  // The pod cache has not seen the mark yet; the environment cache has the new status.
  environments_.upsert(std::make_shared<const json>(stored_environment()));
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(count("succeeded"), 1);
  EXPECT_EQ(succeeded_metric(), 1);
}

// Issue 15, item 2: a pass that marks a pod and then fails to write the count must not lose it.
TEST_F(AgentEnvironmentReconcilerTest, ACountSurvivesAStatusWriteThatFailed) {
  const AgentEnvironment env = given(environment_object());
  given_runner_pod(env, "work_1", "Failed");
  auto reconciler = make_reconciler(options());
  server_.fail_next("PUT", "/status", 500,
                    R"({"kind":"Status","code":500,"message":"etcdserver: request timed out"})");
  try {
    reconciler->reconcile({kNamespace, kName});
  } catch (const std::exception&) {
    // the controller retries the key with backoff
  }
  refresh_caches();
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(count("failed"), 1);
  EXPECT_EQ(count("claimed"), 1);
}

// Issue 15, item 2: an operator restarted between the count and the mark counts nothing again.
TEST_F(AgentEnvironmentReconcilerTest, ARestartedOperatorDoesNotCountAgain) {
  const AgentEnvironment env = given(environment_object());
  given_runner_pod(env, "work_1", "Succeeded");
  given_runner_pod(env, "work_2", "Running");
  make_reconciler(options())->reconcile({kNamespace, kName});
  refresh_caches();
  clock_.advance(seconds(2));
  make_reconciler(options())->reconcile({kNamespace, kName});
  EXPECT_EQ(count("succeeded"), 1);
  EXPECT_EQ(count("claimed"), 2);
}

// Issue 15, item 5: polls that keep succeeding while nothing changes write nothing, over ten
// minutes: past the key refresh, the periodic NetworkPolicy check and the sweeps.
TEST_F(AgentEnvironmentReconcilerTest, AnIdleEnvironmentCausesNoApiserverWrites) {
  ON_CALL(api_, poll(_)).WillByDefault(Return(std::nullopt));
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  reconciler->poller(kKey)->poll_once();
  reconciler->poller(kKey)->refresh_stats();
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});  // the first answers are news: Polling, the queue
  refresh_caches();
  ASSERT_EQ(stored_environment()["status"]["conditions"][0]["reason"], "Polling");
  const size_t from = server_.requests().size();
  for (int second = 0; second < 600; ++second) {  // past every periodic refresh
    clock_.advance(seconds(1));
    reconciler->poller(kKey)->poll_once();
    if (second % 5 == 0) reconciler->poller(kKey)->refresh_stats();
    reconciler->reconcile({kNamespace, kName});
    refresh_caches();
  }
  EXPECT_THAT(writes_since(from), ::testing::IsEmpty());
}

// The periodic NetworkPolicy check reads first, but a policy someone edited or deleted is still
// put back.
TEST_F(AgentEnvironmentReconcilerTest, AnEditedOrDeletedNetworkPolicyIsPutBackAtTheNextCheck) {
  const AgentEnvironment env = given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  const std::string path = std::string("/apis/networking.k8s.io/v1/namespaces/") + kNamespace +
                           "/networkpolicies/" + network_policy_name(env);
  const json applied = *server_.object_at(path);
  network_policy_client_.merge_patch(kNamespace, network_policy_name(env),
                                     {{"spec", {{"egress", json::array({json::object()})}}}});
  refresh_caches();
  clock_.advance(minutes(5));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ((*server_.object_at(path))["spec"], applied["spec"]);

  network_policy_client_.remove(kNamespace, network_policy_name(env));
  refresh_caches();
  clock_.advance(minutes(5));
  reconciler->reconcile({kNamespace, kName});
  ASSERT_TRUE(server_.object_at(path).has_value());
  EXPECT_EQ((*server_.object_at(path))["spec"], applied["spec"]);
}

// Issue 17, item 4: a NetworkPolicy deleted or edited by hand is put back by the pass its watch
// event wakes, seconds later, not at the next periodic check minutes later; and once the cache
// shows it back, further passes write nothing.
TEST_F(AgentEnvironmentReconcilerTest,
       ADeletedOrEditedNetworkPolicyIsPutBackByThePassItsEventWakes) {
  const AgentEnvironment env = given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  refresh_caches();
  const std::string path = std::string("/apis/networking.k8s.io/v1/namespaces/") + kNamespace +
                           "/networkpolicies/" + network_policy_name(env);
  const json applied = *server_.object_at(path);

  // Opened to everything: one empty egress rule allows any destination.
  network_policy_client_.merge_patch(kNamespace, network_policy_name(env),
                                     {{"spec", {{"egress", json::array({json::object()})}}}});
  refresh_caches();  // the watch delivers the edit
  clock_.advance(seconds(1));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ((*server_.object_at(path))["spec"], applied["spec"]) << "the edit was left in force";

  network_policy_client_.remove(kNamespace, network_policy_name(env));
  refresh_caches();
  clock_.advance(seconds(1));
  reconciler->reconcile({kNamespace, kName});
  ASSERT_TRUE(server_.object_at(path).has_value()) << "the deleted policy was not put back";
  EXPECT_EQ((*server_.object_at(path))["spec"], applied["spec"]);

  refresh_caches();
  const size_t from = server_.requests().size();
  clock_.advance(seconds(1));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_THAT(writes_since(from), ::testing::IsEmpty());
}

// Issue 15, item 5: however many sessions finish, status is written a bounded number of times.
TEST_F(AgentEnvironmentReconcilerTest, SessionsFinishingTogetherCoalesceIntoFewStatusWrites) {
  const AgentEnvironment env = given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  refresh_caches();
  const size_t from = server_.requests().size();
  // Forty sessions end within one second; each pod event wakes a pass.
  for (int i = 0; i < 40; ++i) {
    given_runner_pod(env, "work_" + std::to_string(i), "Succeeded");
    clock_.advance(std::chrono::milliseconds(25));
    reconciler->reconcile({kNamespace, kName});
    refresh_caches();
  }
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});
  refresh_caches();
  int status_writes = 0;
  for (const auto& write : writes_since(from)) {
    if (write.find("/status") != std::string::npos) ++status_writes;
  }
  EXPECT_LE(status_writes, 3);
  EXPECT_EQ(count("succeeded"), 40);
}

// Issue 15, item 6: one failed read of the key Secret (a timeout, a 500) is not a reason to stop
// claiming, flip Ready and warn: the last good key serves for a bounded time.
TEST_F(AgentEnvironmentReconcilerTest, ATransientFailureToReadTheKeyKeepsTheLastGoodKey) {
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  ASSERT_EQ(reconciler->poller_count(), 1u);
  refresh_caches();
  clock_.advance(seconds(31));  // the key is due to be read again
  server_.fail_next("GET", "/secrets/payments-key", 500,
                    R"({"kind":"Status","code":500,"message":"etcdserver: request timed out"})");
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(reconciler->poller_count(), 1u);
  refresh_caches();
  for (const auto& condition : stored_environment()["status"]["conditions"]) {
    if (condition["type"] == "CredentialsReady") {
      EXPECT_EQ(condition["status"], "True");
    }
  }
}

TEST_F(AgentEnvironmentReconcilerTest, AKeyUnreadableForLongerThanTheGraceStopsThePoller) {
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  for (int i = 0; i < 12; ++i) {  // six minutes of failed reads
    clock_.advance(seconds(31));
    server_.fail_next("GET", "/secrets/payments-key", 500,
                      R"({"kind":"Status","code":500,"message":"etcdserver: request timed out"})");
    refresh_caches();
    reconciler->reconcile({kNamespace, kName});
  }
  EXPECT_EQ(reconciler->poller_count(), 0u);
}

std::string condition_of(const json& object, const std::string& type) {
  for (const auto& c : object["status"].value("conditions", json::array())) {
    if (c["type"] == type)
      return c["status"].get<std::string>() + "/" + c["reason"].get<std::string>();
  }
  return "";
}

// A CA certificate in PEM, as a ConfigMap would hold it.
std::string test_ca_pem(const std::string& name) {
  const auto key = pki::PrivateKey::generate_ec_p256();
  pki::CaRequest request;
  request.common_name = name;
  request.lifetime = std::chrono::hours(24);
  return pki::issue_self_signed_ca(request, key, std::chrono::system_clock::now()).pem();
}

// spec.apiCAConfigMapRef is trusted by the operator's own client of the API as well as by the
// runner pods: the poll carries the ConfigMap's certificates.
TEST_F(AgentEnvironmentReconcilerTest, TheOperatorsOwnApiClientTrustsTheApiCaConfigMap) {
  const std::string pem = test_ca_pem("corporate-proxy-ca");
  server_.seed(std::string("/api/v1/namespaces/") + kNamespace + "/configmaps",
               {{"apiVersion", "v1"},
                {"kind", "ConfigMap"},
                {"metadata", {{"name", "api-ca"}}},
                {"data", {{"ca.crt", pem}}}});
  given(environment_object({{"apiCAConfigMapRef", {{"name", "api-ca"}}}}));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  ASSERT_EQ(reconciler->poller_count(), 1u);
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  reconciler->poller(kKey)->poll_once();
  ASSERT_FALSE(factory_.extra_ca_pems.empty());
  EXPECT_EQ(factory_.extra_ca_pems.back(), pem);
  refresh_caches();
  EXPECT_EQ(condition_of(stored_environment(), "CredentialsReady"), "True/KeyFound");
}

TEST_F(AgentEnvironmentReconcilerTest, AnApiCaThatCannotBeUsedStopsClaimingAndSaysWhy) {
  given(environment_object({{"apiCAConfigMapRef", {{"name", "api-ca"}, {"key", "bundle.pem"}}}}));
  auto reconciler = make_reconciler(options());
  const std::string configmaps = std::string("/api/v1/namespaces/") + kNamespace + "/configmaps";
  const std::vector<std::pair<json, std::string>> cases = {
      {nullptr, "False/ApiCAConfigMapNotFound"},
      {{{"ca.crt", test_ca_pem("wrong-key")}}, "False/ApiCAMissing"},
      {{{"bundle.pem", "not a certificate"}}, "False/ApiCAInvalid"},
      {{{"bundle.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}},
       "False/ApiCAInvalid"},
  };
  for (const auto& [data, expected] : cases) {
    SCOPED_TRACE(expected + " " + data.dump());
    if (server_.object_at(configmaps + "/api-ca")) config_map_client_.remove(kNamespace, "api-ca");
    if (!data.is_null()) {
      server_.seed(configmaps, {{"apiVersion", "v1"},
                                {"kind", "ConfigMap"},
                                {"metadata", {{"name", "api-ca"}}},
                                {"data", data}});
    }
    clock_.advance(std::chrono::minutes(5));  // the credentials are due to be read again
    reconciler->reconcile({kNamespace, kName});
    EXPECT_EQ(reconciler->poller_count(), 0u);
    refresh_caches();
    EXPECT_EQ(condition_of(stored_environment(), "CredentialsReady"), expected);
  }
}

// Issue 15, item 11: a runner pod the apiserver refuses (admission, validation) cannot be made by
// trying again. Ready turns false with the server's message, nothing more is claimed until the
// spec changes, and the item, never acknowledged, goes back to the queue.
TEST_F(AgentEnvironmentReconcilerTest,
       ARunnerPodTheApiserverRefusesTurnsReadyFalseAndStopsClaiming) {
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_1")));
  EXPECT_CALL(api_, ack(_)).Times(0);
  server_.fail_next(
      "POST", "/pods", 422,
      R"({"kind":"Status","code":422,"reason":"Invalid","message":"Pod \"run-work-1\" is invalid: spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"10 parsecs\""})");
  reconciler->poller(kKey)->poll_once();
  EXPECT_FALSE(stored_pod("work_1").has_value());
  // No more polls while the spec is what it is.
  reconciler->poller(kKey)->poll_once();
  clock_.advance(seconds(2));
  refresh_caches();
  reconciler->reconcile({kNamespace, kName});
  const json stored = stored_environment();
  EXPECT_EQ(condition_of(stored, "Ready"), "False/RunnerPodRejected");
  EXPECT_THAT(stored["status"]["conditions"].dump(), ::testing::HasSubstr("10 parsecs"));
  EXPECT_EQ(condition_of(stored, "QueueReachable"), "True/Polling");
  ::testing::Mock::VerifyAndClearExpectations(&api_);

  // A new generation of the spec: claiming resumes.
  json fixed = stored;
  fixed["metadata"]["generation"] = 2;
  environments_.upsert(std::make_shared<const json>(fixed));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  reconciler->poller(kKey)->poll_once();
}

// A status change held back to coalesce writes is written later: the pass asks to run again
// even when it would otherwise wait for a new generation (a spec the operator cannot act on).
TEST_F(AgentEnvironmentReconcilerTest, AStatusWriteHeldBackToCoalesceIsStillMade) {
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  refresh_caches();
  // Within the second after that write, the spec turns into one the operator cannot act on.
  json broken = stored_environment();
  broken["spec"].erase("runner");
  broken["metadata"]["generation"] = 2;
  environments_.upsert(std::make_shared<const json>(broken));
  const auto result = reconciler->reconcile({kNamespace, kName});
  ASSERT_TRUE(result.requeue_after.has_value()) << "the held-back write would never be made";
  clock_.advance(*result.requeue_after);
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(condition_of(stored_environment(), "Ready"), "False/InvalidSpec");
}

// Issue 15, item 6: a deleted environment's poller may be inside a long poll (or a claim); the
// reconcile that stops it must not wait for that, or one slow API holds a reconcile worker.
TEST_F(AgentEnvironmentReconcilerTest, StoppingAPollerDoesNotHoldTheReconcileWorker) {
  std::promise<void> poll_entered, release_poll;
  std::shared_future<void> released = release_poll.get_future().share();
  std::atomic<bool> first{true};
  ON_CALL(api_, poll(_)).WillByDefault([&](const agentapi::PollOptions&) {
    if (first.exchange(false)) poll_entered.set_value();
    released.wait();
    return std::optional<agentapi::WorkItem>();
  });
  given(environment_object());
  ReconcilerOptions threaded = options();
  threaded.poll_threads = 1;
  auto reconciler = make_reconciler(threaded);
  reconciler->reconcile({kNamespace, kName});
  poll_entered.get_future().wait();  // the poller is inside its long poll

  environments_.remove(kKey);  // the resource was deleted
  auto reconcile = std::async(std::launch::async, [&] {
    return reconciler->reconcile({kNamespace, kName});
  });
  const bool returned = reconcile.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  release_poll.set_value();
  EXPECT_TRUE(returned) << "the reconcile waited for the poller's long poll to end";
  reconcile.wait();
  EXPECT_EQ(reconciler->poller_count(), 0u);
  reconciler->stop_all();  // and leadership lost or shutdown waits for every poller to end
}

// Issue 17, item 3: told the cluster runs Cilium, the operator holds runner pods in with a
// CiliumNetworkPolicy (toFQDNs) and turns the NetworkPolicy into deny-all, so the API's port is
// no longer open to every public address; a Cilium policy opened by hand is put back by the pass
// its watch event wakes; status says which mode is in force.
TEST_F(AgentEnvironmentReconcilerTest, InCiliumModeTheCiliumPolicyAllowsAndIsPutBackWhenOpened) {
  auto object = environment_object();
  object["spec"]["egress"]["allowedHosts"] = {{{"host", "*.pypi.org"}}};
  const AgentEnvironment env = given(object);
  ReconcilerOptions o = options();
  o.egress.mode = EgressMode::kCiliumFqdn;
  auto reconciler = make_reconciler(o);
  reconciler->reconcile({kNamespace, kName});

  const std::string policy_path = std::string("/apis/networking.k8s.io/v1/namespaces/") +
                                  kNamespace + "/networkpolicies/" + network_policy_name(env);
  const std::string cilium_path = std::string("/apis/cilium.io/v2/namespaces/") + kNamespace +
                                  "/ciliumnetworkpolicies/" + network_policy_name(env);
  ASSERT_TRUE(server_.object_at(policy_path).has_value());
  EXPECT_TRUE((*server_.object_at(policy_path))["spec"]["egress"].empty())
      << "the NetworkPolicy still allows: " << (*server_.object_at(policy_path)).dump();
  ASSERT_TRUE(server_.object_at(cilium_path).has_value()) << "no CiliumNetworkPolicy";
  const json applied = *server_.object_at(cilium_path);
  EXPECT_EQ(applied["spec"], build_cilium_network_policy(
                                 parse_agent_environment(stored_environment()), o.egress)["spec"]);
  EXPECT_EQ(stored_environment()["status"]["egress"]["mode"], "CiliumFQDN");

  // Opened to the world; the watch delivers the edit.
  cilium_policy_client_.merge_patch(
      kNamespace, network_policy_name(env),
      {{"spec", {{"egress", json::array({{{"toEntities", {"world"}}}})}}}});
  cilium_policies_.upsert(std::make_shared<const json>(*server_.object_at(cilium_path)));
  refresh_caches();
  clock_.advance(seconds(1));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ((*server_.object_at(cilium_path))["spec"], applied["spec"])
      << "the opened Cilium policy was left in force";
}

TEST_F(AgentEnvironmentReconcilerTest, StatusSaysTheDefaultModeOpensTheApiPortToPublicAddresses) {
  given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(stored_environment()["status"]["egress"]["mode"], "PublicAddresses");
  EXPECT_FALSE(server_
                   .object_at(std::string("/apis/cilium.io/v2/namespaces/") + kNamespace +
                              "/ciliumnetworkpolicies/" +
                              network_policy_name(parse_agent_environment(stored_environment())))
                   .has_value());
}

// The apiserver drops an empty list from what it stores: a policy read back has no "ingress"
// (and in Cilium mode no "egress") where the operator sent []. That is the policy as written,
// not a drift: a pass must not re-apply it every time.
TEST_F(AgentEnvironmentReconcilerTest, APolicyReadBackWithoutItsEmptyListsIsNotADrift) {
  const AgentEnvironment env = given(environment_object());
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  // What a real apiserver returns: the empty ingress list omitted.
  network_policy_client_.merge_patch(kNamespace, network_policy_name(env),
                                     {{"spec", {{"ingress", nullptr}}}});
  refresh_caches();
  const size_t from = server_.requests().size();
  clock_.advance(seconds(1));
  reconciler->reconcile({kNamespace, kName});
  clock_.advance(minutes(5));  // the periodic check reads and still writes nothing
  reconciler->reconcile({kNamespace, kName});
  EXPECT_THAT(writes_since(from), ::testing::IsEmpty());
}

// The runner-pod gauges say what the cache says of the environment's unfinished pods, and go
// with the environment: a deleted one must not keep a Pending pod's alert firing.
TEST_F(AgentEnvironmentReconcilerTest, RunnerPodGaugesFollowTheCacheAndGoWithTheEnvironment) {
  using perimeter::testing::metric_value;
  const auto pods_in = [&](const char* phase) {
    return metric_value(registry_, "perimeter_runner_pods",
                        {{"environment", kKey}, {"phase", phase}});
  };
  const auto oldest_pending = [&] {
    return metric_value(registry_, "perimeter_runner_pod_oldest_pending_timestamp_seconds",
                        {{"environment", kKey}});
  };
  const auto created = [](const json& pod) {
    const auto at = parse_rfc3339(pod["metadata"]["creationTimestamp"].get<std::string>());
    EXPECT_TRUE(at);
    return at ? std::chrono::duration<double>(at->time_since_epoch()).count() : -2.0;
  };
  const AgentEnvironment env = given(environment_object());
  // Runner pods created now, as the apiserver stamps them.
  const auto pod_created_now = [&](const std::string& work_id, const std::string& phase) {
    json pod = build_runner_pod(env, session(work_id));
    pod["status"] = {{"phase", phase}};
    pod["metadata"]["creationTimestamp"] = format_rfc3339(clock_.wall_now());
    const json stored =
        server_.seed(std::string("/api/v1/namespaces/") + kNamespace + "/pods", pod);
    cache_pod(stored);
    return stored;
  };
  json first = pod_created_now("work_1", "Pending");
  clock_.advance(seconds(30));
  const json second = pod_created_now("work_2", "Pending");
  pod_created_now("work_3", "Running");
  pod_created_now("work_4", "Succeeded");
  ASSERT_LT(created(first), created(second));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(pods_in("Pending"), 2);
  EXPECT_EQ(pods_in("Running"), 1);
  EXPECT_EQ(pods_in("Unknown"), 0);
  EXPECT_EQ(oldest_pending(), created(first));

  // The oldest starts running: the next one is the oldest Pending.
  first["status"]["phase"] = "Running";
  cache_pod(first);
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(pods_in("Pending"), 1);
  EXPECT_EQ(pods_in("Running"), 2);
  EXPECT_EQ(oldest_pending(), created(second));

  // None Pending: no pending-since time at all (an alert on time() - it stays quiet).
  json running = second;
  running["status"]["phase"] = "Running";
  cache_pod(running);
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(pods_in("Pending"), 0);
  EXPECT_EQ(oldest_pending(), -1);

  // Refused (here: its namespace left sessionNamespaces): its pods are no longer surveyed, so
  // their gauges go rather than keep their last values.
  auto refusing_options = options();
  refusing_options.session_namespaces = std::set<std::string>{"elsewhere"};
  clock_.advance(seconds(2));
  make_reconciler(refusing_options)->reconcile({kNamespace, kName});
  EXPECT_EQ(pods_in("Running"), -1);
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(pods_in("Running"), 3);

  // Deleted: every runner-pod gauge of it goes.
  environments_.remove(kKey);
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(pods_in("Pending"), -1);
  EXPECT_EQ(pods_in("Running"), -1);
  EXPECT_EQ(pods_in("Unknown"), -1);
  EXPECT_EQ(oldest_pending(), -1);
}

// Issue 20: claim-to-start latency, observed once per runner pod from the pod's status as the
// cache holds it: not again on the pod's later events or a resync, not again by a restarted
// operator that lists the pod anew, never for a pod an earlier leadership term claimed, and
// still for a pod created and started between two reconciles (its events coalesced).
TEST_F(AgentEnvironmentReconcilerTest,
       ClaimToRunnerStartIsObservedOncePerPodAcrossEventsAndRestarts) {
  // Sample count and sum of the histogram, by name as Prometheus scrapes it; {-1, -1} when the
  // environment has no series.
  const auto latency = [&]() -> std::pair<double, double> {
    for (const auto& family : registry_.Collect()) {
      if (family.name != "perimeter_claim_to_runner_started_seconds") continue;
      for (const auto& metric : family.metric) {
        if (metric.label.size() == 1 && metric.label[0].value == kKey) {
          return {static_cast<double>(metric.histogram.sample_count), metric.histogram.sample_sum};
        }
      }
    }
    return {-1, -1};
  };
  // The kubelet reports the runner container running since `at` (whole seconds).
  const auto runner_running = [&](json pod, std::chrono::system_clock::time_point at) {
    pod["status"] = {
        {"phase", "Running"},
        {"containerStatuses",
         json::array({{{"name", "runner"},
                       {"state", {{"running", {{"startedAt", format_rfc3339(at)}}}}}}})}};
    cache_pod(pod);
    return pod;
  };
  const AgentEnvironment env = given(environment_object());
  // Claimed before this term began (by the operator this one replaced).
  const json earlier = given_runner_pod(env, "work_0", "Pending");
  clock_.advance(seconds(1));
  auto reconciler = make_reconciler(options());
  clock_.advance(seconds(1));
  json pod = given_runner_pod(env, "work_1", "Pending");  // claimed now, by this term
  const auto claimed = clock_.wall_now();
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(latency(), std::make_pair(-1.0, -1.0)) << "nothing has started";

  clock_.advance(seconds(7));
  pod = runner_running(pod, clock_.wall_now());
  runner_running(earlier, clock_.wall_now());
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(latency(), std::make_pair(1.0, 7.0)) << "work_1 once; work_0 is an earlier term's";

  // The same pod's later events: resyncs, then it finishes (its startedAt stays).
  clock_.advance(seconds(2));
  reconciler->reconcile({kNamespace, kName});
  json finished = pod;
  finished["status"]["phase"] = "Succeeded";
  finished["status"]["containerStatuses"][0]["state"] = {
      {"terminated",
       {{"reason", "Completed"},
        {"exitCode", 0},
        {"startedAt", format_rfc3339(claimed + seconds(7))}}}};
  cache_pod(finished);
  reconciler->reconcile({kNamespace, kName});
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(latency(), std::make_pair(1.0, 7.0));

  // Restarted: the new term lists every pod again, and observes none of the old term's.
  clock_.advance(seconds(1));
  auto restarted = make_reconciler(options());
  restarted->reconcile({kNamespace, kName});
  EXPECT_EQ(latency(), std::make_pair(1.0, 7.0));

  // Created and already running when the first reconcile after its claim looks.
  clock_.advance(seconds(1));
  const json quick = given_runner_pod(env, "work_2", "Pending");
  runner_running(quick, clock_.wall_now() + seconds(2));
  restarted->reconcile({kNamespace, kName});
  restarted->reconcile({kNamespace, kName});
  EXPECT_EQ(latency(), std::make_pair(2.0, 9.0));
}

// Issue 18: an operator started without access to PersistentVolumeClaims cannot honour a spec
// that asks for session workspaces on them; it says so rather than claim sessions it would start
// with the wrong workspace.
TEST_F(AgentEnvironmentReconcilerTest, AClaimWorkspaceWithoutClaimAccessIsAnInvalidSpec) {
  given(environment_object(
      {{"runner", {{"workspace", {{"persistentVolumeClaim", json::object()}}}}}}));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(condition_of(stored_environment(), "Ready"), "False/InvalidSpec");
  EXPECT_EQ(reconciler->poller_count(), 0u);
}

// Issue 18: status.workspaces counts the environment's session claims, from the claims' cache.
TEST_F(AgentEnvironmentReconcilerTest, StatusCountsTheSessionWorkspaces) {
  const AgentEnvironment env = given(environment_object(
      {{"runner", {{"workspace", {{"persistentVolumeClaim", json::object()}}}}}}));
  for (const std::string session : {"sesn_a", "sesn_b"}) {
    const json stored = claim_client_.create(
        kNamespace, build_workspace_claim(env, session, format_rfc3339_micros(clock_.wall_now())));
    claims_.upsert(std::make_shared<const json>(stored));
  }
  auto reconciler = make_reconciler(options(), true);
  reconciler->reconcile({kNamespace, kName});
  const json workspaces = stored_environment()["status"]["workspaces"];
  EXPECT_EQ(workspaces.value("claims", -1), 2);
  EXPECT_EQ(workspaces.value("pending", -1), 2);
  EXPECT_EQ(workspaces.value("inUse", -1), 2) << "just claimed: their pods may not be cached yet";
  EXPECT_NE(condition_of(stored_environment(), "Ready"), "False/InvalidSpec");
}

// Issue 19: the warm pool against the in-memory apiserver. The pod cache is filled from the
// apiserver by hand, as the informer would (a pass may run before it catches up).
class WarmPoolReconcilerTest : public AgentEnvironmentReconcilerTest {
 protected:
  static json warm_pool(int min_ready, int max_ready) {
    return {{"warmPool", {{"minReady", min_ready}, {"maxReady", max_ready}}}};
  }
  ReconcilerOptions warm_options() {
    ReconcilerOptions o = options();
    o.assignment_endpoint =
        AssignmentEndpoint{"https://perimeter-assignment.perimeter-system.svc:8443",
                           "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"};
    return o;
  }
  std::vector<json> stored(const std::string& resource) {
    std::vector<json> out;
    kube::ResourceClient& client = resource == "pods" ? pod_client_ : secret_client_;
    for (const auto& item : client.list(kNamespace).value("items", json::array())) {
      out.push_back(item);
    }
    return out;
  }
  // Unassigned warm pods in the apiserver, by name.
  std::set<std::string> warm_pod_names() {
    std::set<std::string> names;
    for (const auto& pod : stored("pods")) {
      if (unassigned_warm_pod(pod)) names.insert(pod["metadata"].value("name", ""));
    }
    return names;
  }
  std::set<std::string> warm_secret_names() {
    std::set<std::string> names;
    for (const auto& secret : stored("secrets")) {
      if (secret["metadata"].value("labels", json::object()).value(std::string(kLabelWarm), "") ==
          "true")
        names.insert(secret["metadata"].value("name", ""));
    }
    return names;
  }
  // The pod informer shows every pod the apiserver has, and no other.
  void sync_pods() {
    std::set<std::string> seen;
    for (const auto& pod : stored("pods")) {
      seen.insert(std::string(kNamespace) + "/" + pod["metadata"].value("name", ""));
      cache_pod(pod);
    }
    for (const auto& key : pods_.keys()) {
      if (!seen.contains(key)) pods_.remove(key);
    }
    environments_.upsert(std::make_shared<const json>(stored_environment()));
  }
  void set_pod_status(const std::string& name, const json& status) {
    json pod = pod_client_.get(kNamespace, name);
    pod["status"] = status;
    pod_client_.update_status(kNamespace, pod);
  }
  void make_ready(const std::set<std::string>& names) {
    for (const auto& name : names) {
      set_pod_status(name,
                     {{"phase", "Running"},
                      {"containerStatuses",
                       {{{"name", "runner"},
                         {"state", {{"running", {{"startedAt", "2026-12-01T10:00:00Z"}}}}}}}}});
    }
  }
  // A pass after the status-write interval, with the caches caught up.
  void pass(AgentEnvironmentReconciler& reconciler) {
    clock_.advance(seconds(2));
    sync_pods();
    reconciler.reconcile({kNamespace, kName});
  }
  json warm_status() { return stored_environment()["status"].value("warmPool", json()); }
  // A spec edit as a user's apply makes it: the next generation.
  void change_spec(const std::function<void(json& spec)>& edit) {
    json object = stored_environment();
    edit(object["spec"]);
    object["metadata"]["generation"] = object["metadata"].value("generation", 1) + 1;
    environment_client_.update(kNamespace, object);
  }
  // A claim's assignment of the warm pod `name`, as it stands in the apiserver, to `work_id`.
  bool assign(const std::string& name, const std::string& work_id) {
    const json metadata = pod_client_.get(kNamespace, name)["metadata"];
    return writer_.assign_warm_pod(
        kNamespace, {name, metadata.value("uid", ""), metadata.value("resourceVersion", "")},
        session(work_id), runner_object_name(work_id), 3600);
  }
  std::vector<std::string> event_reasons() {
    std::vector<std::string> reasons;
    for (const auto& event : event_client_.list(kNamespace).value("items", json::array())) {
      reasons.push_back(event.value("reason", ""));
    }
    return reasons;
  }
};

TEST_F(WarmPoolReconcilerTest, AnEmptyPoolIsFilledToMinReadyOnceEachPodWithItsOwnSecret) {
  given(environment_object(warm_pool(2, 5)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  const auto pods = warm_pod_names();
  EXPECT_EQ(pods.size(), 2u);
  EXPECT_EQ(warm_secret_names(), pods) << "each warm pod has its own Secret, named like it";
  for (const auto& name : pods) EXPECT_EQ(name.rfind("warm-payments-", 0), 0u) << name;

  // The pod cache has not shown them yet: the next pass must not make them again.
  reconciler->reconcile({kNamespace, kName});
  EXPECT_EQ(warm_pod_names(), pods);
  EXPECT_EQ(warm_status(), (json{{"ready", 0}, {"starting", 2}, {"target", 2}}));
  EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "False/Starting");

  make_ready(pods);
  pass(*reconciler);
  EXPECT_EQ(warm_pod_names(), pods);
  EXPECT_EQ(warm_status(), (json{{"ready", 2}, {"starting", 0}, {"target", 2}}));
  EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "True/Ready");
  EXPECT_EQ(stored_environment()["status"].value("activeSessions", -1), 0)
      << "a warm pod is not a session";
  EXPECT_EQ(metrics_.warm_pool_pods.Add({{"environment", kKey}, {"state", "ready"}}).Value(), 2);
}

TEST_F(WarmPoolReconcilerTest, ThePoolGrowsWithClaimsButNeverPastMaxReadyOrTheSessionLimit) {
  json spec = warm_pool(1, 3);
  spec["maxConcurrentSessions"] = 4;
  const AgentEnvironment env = given(environment_object(spec));
  // Two sessions claimed a moment ago, still running.
  given_runner_pod(env, "work_1", "Running");
  given_runner_pod(env, "work_2", "Running");
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  // minReady 1 + 2 claims = 3, but 4 slots less 2 sessions leave room for 2.
  EXPECT_EQ(warm_pod_names().size(), 2u);
  EXPECT_EQ(warm_status().value("target", -1), 3);
  EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "False/AtSessionLimit");
  EXPECT_EQ(stored_environment()["status"].value("activeSessions", -1), 2);

  // Both sessions end (retention removes their pods at once) and three more are claimed: the
  // slots are free, the target is capped at maxReady.
  set_pod_status(runner_object_name("work_1"), {{"phase", "Succeeded"}});
  set_pod_status(runner_object_name("work_2"), {{"phase", "Succeeded"}});
  for (const std::string work : {"work_3", "work_4", "work_5"}) {
    given_runner_pod(env, work, "Succeeded");
  }
  pass(*reconciler);
  pass(*reconciler);  // counted, marked, then removed by retention
  pass(*reconciler);
  EXPECT_FALSE(stored_pod("work_1").has_value()) << "retention 0 removes the finished pods";
  EXPECT_EQ(warm_pod_names().size(), 3u);
  EXPECT_EQ(warm_secret_names(), warm_pod_names());
  EXPECT_EQ(warm_status().value("target", -1), 3) << "the claims outlive their pods' retention";
  EXPECT_EQ(count("succeeded"), 5) << "only the sessions were counted";

  // A minute later the claims are out of the window: back to minReady, the newest pods go first.
  clock_.advance(seconds(61));
  pass(*reconciler);
  EXPECT_EQ(warm_pod_names().size(), 1u);
  EXPECT_EQ(warm_secret_names(), warm_pod_names()) << "each removed pod's Secret goes with it";
  pass(*reconciler);
  EXPECT_EQ(warm_status(), (json{{"ready", 0}, {"starting", 1}, {"target", 1}}));
}

TEST_F(WarmPoolReconcilerTest, ALoweredSpecShrinksThePoolAndNeverTakesAnAssignedPod) {
  given(environment_object(warm_pool(3, 3)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  const auto pods = warm_pod_names();
  ASSERT_EQ(pods.size(), 3u);
  make_ready(pods);
  // A claim assigns one of them.
  const std::string assigned = *pods.begin();
  pod_client_.merge_patch(kNamespace, assigned,
                          {{"metadata",
                            {{"annotations",
                              {{std::string(kAnnotationAssignedWorkId), "work_9"},
                               {std::string(kAnnotationAssignedSessionId), "sesn_work_9"},
                               {std::string(kAnnotationAssignedSecret), "run-work-9"}}}}}});
  change_spec([](json& spec) { spec["warmPool"] = {{"minReady", 0}, {"maxReady", 0}}; });
  pass(*reconciler);
  EXPECT_TRUE(warm_pod_names().empty());
  EXPECT_TRUE(pod_client_.get(kNamespace, assigned).is_object())
      << "the assigned pod is a session's now";
  EXPECT_EQ(warm_secret_names(), std::set<std::string>{assigned})
      << "the removed pods' Secrets go with them; the assigned pod's stays for its session";
  pass(*reconciler);
  EXPECT_EQ(stored_environment()["status"].value("activeSessions", -1), 1);
  EXPECT_EQ(warm_status(), (json{{"ready", 0}, {"starting", 0}, {"target", 0}}));
}

// The outcome-count misread (docs/warm-pool.md): a warm pod that ends unassigned, the pool
// shrinking or the runner failing, is no session: not counted, no Event, no outcome mark. The
// pool replaces it and removes it with its own Secret.
TEST_F(WarmPoolReconcilerTest, AFinishedUnassignedWarmPodIsReplacedRemovedAndCountedAsNoSession) {
  given(environment_object(warm_pool(1, 1)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  const auto first = warm_pod_names();
  ASSERT_EQ(first.size(), 1u);
  make_ready(first);
  pass(*reconciler);
  const json before = stored_environment()["status"]["sessions"];

  set_pod_status(*first.begin(),
                 {{"phase", "Succeeded"},
                  {"containerStatuses",
                   {{{"name", "runner"},
                     {"state", {{"terminated", {{"exitCode", 0}, {"reason", "Completed"}}}}}}}}});
  pass(*reconciler);
  const auto now = warm_pod_names();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(*now.begin(), *first.begin()) << "replaced";
  EXPECT_EQ(warm_secret_names(), now) << "the finished pod went with its Secret";
  pass(*reconciler);
  EXPECT_EQ(stored_environment()["status"]["sessions"], before);
  EXPECT_EQ(count("succeeded"), 0);
  EXPECT_EQ(count("claimed"), 0);
  EXPECT_EQ(succeeded_metric(), 0);
  for (const auto& reason : event_reasons()) {
    EXPECT_NE(reason, "SessionSucceeded");
    EXPECT_NE(reason, "SessionFailed");
  }
}

// A warm pod that fails on its own (a broken image or runner) is not replaced at once: the
// pool backs off, further with each failed pod, instead of looping as fast as pods can fail.
TEST_F(WarmPoolReconcilerTest, WarmPodsThatFailUnassignedAreReplacedWithGrowingBackoff) {
  given(environment_object(warm_pool(1, 1)));
  auto reconciler = make_reconciler(warm_options());
  const auto step = [&](seconds by) {
    clock_.advance(by);
    sync_pods();
    reconciler->reconcile({kNamespace, kName});
  };
  const auto fail = [&](const std::string& name) {
    set_pod_status(name,
                   {{"phase", "Failed"},
                    {"containerStatuses",
                     {{{"name", "runner"},
                       {"state", {{"terminated", {{"exitCode", 1}, {"reason", "Error"}}}}}}}}});
  };
  reconciler->reconcile({kNamespace, kName});
  ASSERT_EQ(warm_pod_names().size(), 1u);
  fail(*warm_pod_names().begin());
  step(seconds(1));
  EXPECT_TRUE(warm_pod_names().empty()) << "the failed pod goes, and none is made at once";
  EXPECT_TRUE(warm_secret_names().empty());
  step(seconds(1));
  ASSERT_EQ(warm_pod_names().size(), 1u) << "made again after the first delay (1 s)";

  fail(*warm_pod_names().begin());
  step(seconds(1));
  step(seconds(1));
  EXPECT_TRUE(warm_pod_names().empty()) << "the second failure holds the pool back longer";
  EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "False/WarmPodFailed");
  step(seconds(1));
  EXPECT_EQ(warm_pod_names().size(), 1u);
  EXPECT_EQ(count("failed"), 0) << "a warm pod that failed unassigned is no session";
}

// The runner pods' NetworkPolicy gains the egress to the assignment service only where a warm
// pool can use it.
TEST_F(WarmPoolReconcilerTest, OnlyAnEnvironmentWithAPoolGetsTheEgressToTheAssignmentService) {
  ReconcilerOptions o = warm_options();
  o.assignment_peer =
      AssignmentPeer{{"perimeter-system", {{"app.kubernetes.io/name", "perimeter"}}}, 8443};
  const AgentEnvironment env = given(environment_object(warm_pool(1, 1)));
  auto reconciler = make_reconciler(o);
  reconciler->reconcile({kNamespace, kName});
  const std::string path = std::string("/apis/networking.k8s.io/v1/namespaces/") + kNamespace +
                           "/networkpolicies/" + network_policy_name(env);
  const auto egress_to_assignment = [&] {
    const json policy = *server_.object_at(path);
    for (const auto& rule : policy["spec"]["egress"]) {
      for (const auto& port : rule.value("ports", json::array())) {
        if (port.value("port", json()) == 8443) return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(egress_to_assignment());

  change_spec([](json& spec) { spec.erase("warmPool"); });
  pass(*reconciler);
  EXPECT_FALSE(egress_to_assignment()) << "a cold runner never asks the assignment service";
}

TEST_F(WarmPoolReconcilerTest, WithoutAnAssignmentEndpointNoWarmPodIsMadeAndTheConditionSaysWhy) {
  given(environment_object(warm_pool(2, 4)));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, kName});
  EXPECT_TRUE(warm_pod_names().empty());
  EXPECT_TRUE(warm_secret_names().empty());
  EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "False/AssignmentNotServed");
  EXPECT_EQ(warm_status().value("target", -1), 0);
  EXPECT_NE(condition_of(stored_environment(), "Ready"), "False/InvalidSpec")
      << "cold claims go on";
}

TEST_F(WarmPoolReconcilerTest, GatewayEgressOrAClaimWorkspaceGetsTheReasonAndNoPod) {
  {
    SCOPED_TRACE("gateway egress");
    given(environment_object(warm_pool(2, 4)));
    ReconcilerOptions o = warm_options();
    o.egress.mode = EgressMode::kGateway;
    o.egress.gateway_host = "perimeter-egress-gateway.perimeter-system.svc";
    o.egress.gateway_pods = {"perimeter-system",
                             {{"app.kubernetes.io/name", "perimeter-egress-gateway"}}};
    o.egress.credentials_key = std::string(32, 'k');
    auto reconciler = make_reconciler(o);
    reconciler->reconcile({kNamespace, kName});
    EXPECT_TRUE(warm_pod_names().empty());
    EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "False/NotOffered");
    const json object = stored_environment();
    const json* condition =
        runtime::find_condition(object["status"]["conditions"], "WarmPoolReady");
    ASSERT_NE(condition, nullptr);
    EXPECT_NE((*condition)["message"].get<std::string>().find("gateway egress"), std::string::npos);
    EXPECT_EQ(reconciler->poller_count(), 1u) << "cold claims go on";
  }
  {
    SCOPED_TRACE("a claim workspace");
    json spec = warm_pool(2, 4);
    spec["runner"] = {{"image", "perimeter-runner:1"},
                      {"workspace", {{"persistentVolumeClaim", json::object()}}}};
    json object = environment_object(spec);
    object["metadata"]["name"] = "payments-pvc";
    object["spec"]["environmentId"] = "env_2";
    const json stored = server_.seed(
        std::string("/apis/perimeter.dev/v1alpha1/namespaces/") + kNamespace + "/agentenvironments",
        object);
    environments_.upsert(std::make_shared<const json>(stored));
    auto reconciler = make_reconciler(warm_options(), true);
    reconciler->reconcile({kNamespace, "payments-pvc"});
    EXPECT_TRUE(warm_pod_names().empty());
    const json status = *server_.object_at(std::string("/apis/perimeter.dev/v1alpha1/namespaces/") +
                                           kNamespace + "/agentenvironments/payments-pvc");
    EXPECT_EQ(condition_of(status, "WarmPoolReady"), "False/NotOffered");
  }
}

TEST_F(WarmPoolReconcilerTest, AnIdleFullPoolMakesNoApiserverWrites) {
  given(environment_object(warm_pool(2, 2)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  make_ready(warm_pod_names());
  pass(*reconciler);
  pass(*reconciler);
  ASSERT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "True/Ready");
  const size_t from = server_.requests().size();
  for (int i = 0; i < 300; ++i) pass(*reconciler);  // ten minutes: past every periodic refresh
  EXPECT_THAT(writes_since(from), ::testing::IsEmpty());
}

// A warm pod runs the template of the spec it was made for. After the runner template changes
// (a new image: a fix the platform team rolls out), no session may start on an idle pod of the
// old one: those are replaced, and a pod a claim assigned meanwhile stays its session's.
TEST_F(WarmPoolReconcilerTest, ANewRunnerTemplateReplacesTheIdleWarmPodsOfTheOldOne) {
  given(environment_object(warm_pool(2, 2)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  const auto old_pods = warm_pod_names();
  ASSERT_EQ(old_pods.size(), 2u);
  make_ready(old_pods);
  pass(*reconciler);
  const std::string assigned = *old_pods.begin();
  ASSERT_TRUE(assign(assigned, "work_1"));

  change_spec([](json& spec) { spec["runner"]["image"] = "perimeter-runner:2"; });
  pass(*reconciler);
  const auto new_pods = warm_pod_names();
  EXPECT_EQ(new_pods.size(), 2u);
  for (const auto& name : new_pods) {
    EXPECT_FALSE(old_pods.contains(name)) << name << " is an idle pod of the old template";
    EXPECT_EQ(pod_client_.get(kNamespace, name)["spec"]["containers"][0].value("image", ""),
              "perimeter-runner:2");
  }
  EXPECT_TRUE(pod_client_.get(kNamespace, assigned).is_object())
      << "the assigned pod is a session's: it keeps its template";
  EXPECT_EQ(warm_secret_names(), [&] {
    auto names = new_pods;
    names.insert(assigned);
    return names;
  }()) << "the replaced pods' Secrets go with them";

  // The new pods are the template's: passes that follow replace nothing.
  make_ready(new_pods);
  pass(*reconciler);
  pass(*reconciler);
  EXPECT_EQ(warm_pod_names(), new_pods);
  EXPECT_EQ(warm_status(), (json{{"ready", 2}, {"starting", 0}, {"target", 2}}));
}

TEST_F(WarmPoolReconcilerTest, APoolRemovedFromTheSpecTakesItsPodsConditionAndFigures) {
  given(environment_object(warm_pool(2, 2)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  ASSERT_EQ(warm_pod_names().size(), 2u);
  change_spec([](json& spec) { spec.erase("warmPool"); });
  pass(*reconciler);
  EXPECT_TRUE(warm_pod_names().empty());
  EXPECT_TRUE(warm_secret_names().empty());
  pass(*reconciler);
  EXPECT_EQ(condition_of(stored_environment(), "WarmPoolReady"), "");
  EXPECT_FALSE(stored_environment()["status"].contains("warmPool"));
  EXPECT_FALSE(metrics_.warm_pool_target.Has({{"environment", kKey}}));
}

// Issue 19, item 3: status.sessions says how many claimed sessions a warm pod served and how
// many a cold one, each counted once: a running session by its pod, a finished one when its
// outcome is counted, and never again after its pod is marked, the operator restarted, or the
// pod removed.
TEST_F(WarmPoolReconcilerTest, StatusCountsClaimedSessionsWarmAndColdEachOnce) {
  const AgentEnvironment env = given(environment_object(warm_pool(1, 1)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  const auto pods = warm_pod_names();
  ASSERT_EQ(pods.size(), 1u);
  make_ready(pods);
  pass(*reconciler);
  EXPECT_EQ(count("warm"), 0) << "a warm pod no claim has assigned is no session";
  EXPECT_EQ(count("cold"), 0);

  // One claim takes the warm pod, another makes a cold pod.
  sync_pods();
  ASSERT_TRUE(assign(*pods.begin(), "work_9"));
  given_runner_pod(env, "work_1", "Running");
  pass(*reconciler);
  EXPECT_EQ(count("claimed"), 2);
  EXPECT_EQ(count("warm"), 1);
  EXPECT_EQ(count("cold"), 1);

  // The warm session ends: counted once as it is marked, and still after a restart and after
  // retention removed its pod.
  set_pod_status(*pods.begin(), {{"phase", "Succeeded"}});
  pass(*reconciler);
  EXPECT_EQ(count("succeeded"), 1);
  EXPECT_EQ(count("warm"), 1);
  EXPECT_EQ(count("cold"), 1);
  reconciler = make_reconciler(warm_options());
  pass(*reconciler);
  pass(*reconciler);
  EXPECT_FALSE(
      server_.object_at(std::string("/api/v1/namespaces/") + kNamespace + "/pods/" + *pods.begin())
          .has_value())
      << "retention 0 removed the finished warm pod";
  EXPECT_EQ(count("claimed"), 2);
  EXPECT_EQ(count("warm"), 1);
  EXPECT_EQ(count("cold"), 1);

  // The cold one ends too: the split stays.
  set_pod_status(runner_object_name("work_1"), {{"phase", "Failed"}});
  pass(*reconciler);
  pass(*reconciler);
  EXPECT_EQ(count("failed"), 1);
  EXPECT_EQ(count("claimed"), 2);
  EXPECT_EQ(count("warm"), 1);
  EXPECT_EQ(count("cold"), 1);
}

// A warm pod's item is in perimeter.dev/assigned-work-id, not perimeter.dev/work-id: the
// "session finished" line names it all the same.
TEST_F(WarmPoolReconcilerTest, AFinishedWarmSessionIsLoggedWithItsWorkId) {
  const auto sink = std::make_shared<testing::CapturingLogSink>();
  log_sink_ = sink;
  log_level_ = LogLevel::kInfo;
  given(environment_object(warm_pool(1, 1)));
  auto reconciler = make_reconciler(warm_options());
  reconciler->reconcile({kNamespace, kName});
  const auto pods = warm_pod_names();
  ASSERT_EQ(pods.size(), 1u);
  make_ready(pods);
  pass(*reconciler);
  ASSERT_TRUE(assign(*pods.begin(), "work_9"));
  set_pod_status(*pods.begin(), {{"phase", "Succeeded"}});
  pass(*reconciler);
  std::vector<json> finished;
  for (const auto& line : sink->lines()) {
    const json entry = json::parse(line, nullptr, false);
    if (entry.is_object() && entry.value("msg", "") == "session finished")
      finished.push_back(entry);
  }
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].value("work_id", ""), "work_9");
  EXPECT_EQ(finished[0].value("pod", ""), *pods.begin());
}

}  // namespace
}  // namespace perimeter::agentenvironment
