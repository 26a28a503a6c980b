// The AgentEnvironment CRD and the runner objects the operator builds, against a real
// kube-apiserver: the schema rejects what the operator cannot act on, and the runner Pod is
// admitted under the PodSecurity "restricted" standard.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <thread>

#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/kube_warm_pod_directory.h"
#include "controllers/agentenvironment/kube_warm_pool.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/session_workspace.h"
#include "controllers/agentenvironment/warm_assignment_service.h"
#include "core/clock.h"
#include "core/time_format.h"
#include "install_crds.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/tools.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// A wall clock set by the test: the assignment dates the session's deadline by it.
class SetWallClock final : public Clock {
 public:
  explicit SetWallClock(std::chrono::system_clock::time_point wall) : wall_(wall) {}
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point wall_now() const override { return wall_; }

 private:
  std::chrono::system_clock::time_point wall_;
};

// A warm pod as the pool made it, then Running with its runner started (no node runs it here:
// the status is written as a kubelet would, started `started_after` its creation), and the
// census's view of it from the cache as the operator trims it.
WarmPodRef start_warm_pod(kube::ResourceClient& pods, const AgentEnvironment& env, json pod,
                          std::chrono::seconds started_after) {
  const std::string& ns = env.namespace_;
  json created = pods.create(ns, pod);
  const auto creation = parse_rfc3339(created["metadata"].value("creationTimestamp", ""));
  if (!creation) throw std::runtime_error("no creationTimestamp: " + created.dump());
  const std::string started = format_rfc3339(*creation + started_after);
  created["status"] = {{"phase", "Running"},
                       {"startTime", started},
                       {"containerStatuses",
                        {{{"name", "runner"},
                          {"image", created["spec"]["containers"][0]["image"]},
                          {"imageID", ""},
                          {"ready", true},
                          {"restartCount", 0},
                          {"state", {{"running", {{"startedAt", started}}}}}}}}};
  json running = pods.update_status(ns, created);
  trim_runner_pod(running);
  runtime::Store cache;
  StoreRunnerPodCensus census(cache);
  cache.upsert(std::make_shared<const json>(std::move(running)));
  const auto ready = census.ready_warm_pods(ns, env.name);
  if (ready.size() != 1) throw std::runtime_error("the census shows no ready warm pod");
  return ready[0];
}

kube::ResourceType agent_environments() {
  return {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true};
}

class AgentEnvironmentSchemaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { install_crds(); }

  void SetUp() override {
    auto& cluster = perimeter::testing::shared_cluster();
    config_ = kube::Config::from_kubeconfig_file(cluster.kubeconfig_path());
    config_.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config_);
    namespaces_ = client(kube::resources::namespaces());
    environments_ = client(agent_environments());
    ns_ = "aenv-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    namespaces_->create("", {{"apiVersion", "v1"},
                             {"kind", "Namespace"},
                             {"metadata",
                              {{"name", ns_},
                               {"labels",
                                {{"pod-security.kubernetes.io/enforce", "restricted"},
                                 {"pod-security.kubernetes.io/enforce-version", "latest"}}}}}});
  }

  std::unique_ptr<kube::ResourceClient> client(const kube::ResourceType& type) {
    return std::make_unique<kube::ResourceClient>(*transport_, type, metrics_);
  }

  static json valid_environment(const std::string& name) {
    return {{"apiVersion", "perimeter.dev/v1alpha1"},
            {"kind", "AgentEnvironment"},
            {"metadata", {{"name", name}}},
            {"spec",
             {{"environmentId", "env_01"},
              {"environmentKeySecretRef", {{"name", "env-key"}}},
              {"runner", {{"image", "perimeter-runner:dev"}}}}}};
  }

  // The namespace's "default" ServiceAccount, which runner pods name (no controller-manager
  // makes it here).
  void create_default_service_account() {
    client(kube::resources::service_accounts())
        ->create(ns_, {{"apiVersion", "v1"},
                       {"kind", "ServiceAccount"},
                       {"metadata", {{"name", "default"}}}});
  }

  // Where warm pods are told to ask, as the chart's Service names it.
  static AssignmentEndpoint assignment_endpoint() {
    return {"https://perimeter-assignment.perimeter-system.svc:8443",
            "-----BEGIN CERTIFICATE-----"};
  }

  // The first create on a fresh CRD can race its OpenAPI publication; retry NotFound briefly.
  json create_environment(const json& object) {
    for (int attempt = 0;; ++attempt) {
      try {
        return environments_->create(ns_, object);
      } catch (const kube::ApiError& e) {
        if (e.kind() != kube::ErrorKind::kNotFound || attempt == 50) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }

  static inline int counter_ = 0;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  std::unique_ptr<kube::ResourceClient> namespaces_;
  std::unique_ptr<kube::ResourceClient> environments_;
  std::string ns_;
};

// The schema and the operator agree on allowedHosts: what one accepts, the other reads the same.
TEST_F(AgentEnvironmentSchemaTest, AllowedHostsAreStoredWithPort443ByDefault) {
  auto object = valid_environment("hosts");
  object["spec"]["egress"] = {
      {"allowedHosts",
       {{{"host", "files.pythonhosted.org"}}, {{"host", "*.pypi.org"}, {"ports", {443, 8443}}}}}};
  const auto stored = create_environment(object);
  EXPECT_EQ(stored["spec"]["egress"]["allowedHosts"][0]["ports"], json::array({443}));
  const auto env = parse_agent_environment(stored);
  ASSERT_EQ(env.egress_allowed_hosts.size(), 2u);
  EXPECT_EQ(env.egress_allowed_hosts[1].host, "*.pypi.org");
  EXPECT_EQ(env.egress_allowed_hosts[1].ports, std::vector<int>({443, 8443}));
}

TEST_F(AgentEnvironmentSchemaTest, AValidEnvironmentIsStoredWithEveryDefault) {
  const auto stored = create_environment(valid_environment("defaults"));
  const auto env = parse_agent_environment(stored);
  EXPECT_EQ(stored["spec"]["apiBaseUrl"], "https://api.anthropic.com");
  EXPECT_EQ(stored["spec"]["maxConcurrentSessions"], 10);
  EXPECT_EQ(stored["spec"]["suspend"], false);
  EXPECT_EQ(stored["spec"]["poll"]["blockMs"], 999);
  EXPECT_EQ(stored["spec"]["poll"]["reclaimOlderThanMs"], 5000);
  EXPECT_EQ(stored["spec"]["runner"]["imagePullPolicy"], "IfNotPresent");
  EXPECT_EQ(stored["spec"]["runner"]["workspaceSizeLimit"], "1Gi");
  EXPECT_EQ(stored["spec"]["runner"]["activeDeadlineSeconds"], 3600);
  EXPECT_EQ(stored["spec"]["environmentKeySecretRef"]["key"], "environment-key");
  EXPECT_EQ(stored["spec"]["retention"]["failedSeconds"], 86400);
  EXPECT_EQ(env.name, "defaults");
  EXPECT_FALSE(env.uid.empty());
}

struct InvalidCase {
  const char* what;
  const char* json_patch;  // RFC 6902 operations applied to a valid object
  const char* message;     // a fragment the apiserver's answer must contain
};

TEST_F(AgentEnvironmentSchemaTest, TheApiserverRejectsEachInvalidEnvironment) {
  const InvalidCase cases[] = {
      {"no environment id", R"([{"op":"remove","path":"/spec/environmentId"}])",
       "spec.environmentId: Required value"},
      {"empty environment id", R"([{"op":"replace","path":"/spec/environmentId","value":""}])",
       "spec.environmentId"},
      {"environment id with a slash",
       R"([{"op":"replace","path":"/spec/environmentId","value":"env/1"}])", "spec.environmentId"},
      {"no key secret", R"([{"op":"remove","path":"/spec/environmentKeySecretRef"}])",
       "spec.environmentKeySecretRef: Required value"},
      {"no runner image", R"([{"op":"remove","path":"/spec/runner/image"}])",
       "spec.runner.image: Required value"},
      {"limit of zero", R"([{"op":"add","path":"/spec/maxConcurrentSessions","value":0}])",
       "spec.maxConcurrentSessions"},
      {"limit that is a string",
       R"([{"op":"add","path":"/spec/maxConcurrentSessions","value":"ten"}])",
       "spec.maxConcurrentSessions"},
      {"block over the API's cap", R"([{"op":"add","path":"/spec/poll","value":{"blockMs":1000}}])",
       "spec.poll.blockMs"},
      {"reclaim shorter than a claim",
       R"([{"op":"add","path":"/spec/poll","value":{"reclaimOlderThanMs":10}}])",
       "spec.poll.reclaimOlderThanMs"},
      {"API URL that is not http(s)",
       R"([{"op":"add","path":"/spec/apiBaseUrl","value":"ftp://example.com"}])",
       "apiBaseUrl must be an http or https URL"},
      {"unknown pull policy",
       R"([{"op":"add","path":"/spec/runner/imagePullPolicy","value":"Sometimes"}])",
       "spec.runner.imagePullPolicy"},
      {"reserved env name",
       R"([{"op":"add","path":"/spec/runner/env","value":[{"name":"ANTHROPIC_ENVIRONMENT_KEY","value":"x"}]}])",
       "env names starting with ANTHROPIC_ are set by the operator"},
      {"deadline under a minute",
       R"([{"op":"add","path":"/spec/runner/activeDeadlineSeconds","value":5}])",
       "spec.runner.activeDeadlineSeconds"},
      {"egress that is not a CIDR",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedCIDRs":["10.0.0.1"]}}])",
       "must be a CIDR"},
      {"egress to cloud metadata",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedCIDRs":["169.254.169.254/32"]}}])",
       "link-local addresses (cloud metadata) cannot be allowed"},
      {"egress to IPv6 link-local",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedCIDRs":["fe80::/64"]}}])",
       "link-local addresses (cloud metadata) cannot be allowed"},
      {"allowed host that is an address",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"10.0.0.1"}]}}])",
       "addresses go in allowedCIDRs"},
      {"allowed host that allows everything",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"*"}]}}])",
       "must be a lowercase DNS name"},
      {"allowed host that is a whole top-level domain",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"*.com"}]}}])",
       "must be a lowercase DNS name"},
      {"allowed host with a wildcard inside",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"a.*.example.com"}]}}])",
       "must be a lowercase DNS name"},
      {"allowed host in upper case",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"API.example.com"}]}}])",
       "must be a lowercase DNS name"},
      {"allowed host port out of range",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"example.com","ports":[70000]}]}}])",
       "spec.egress.allowedHosts[0].ports[0]"},
      {"allowed host without ports",
       R"([{"op":"add","path":"/spec/egress","value":{"allowedHosts":[{"host":"example.com","ports":[]}]}}])",
       "spec.egress.allowedHosts[0].ports"},
      {"pod label in the operator's prefix",
       R"([{"op":"add","path":"/spec/runner/podLabels","value":{"perimeter.dev/work-id":"x"}}])",
       "labels under perimeter.dev/"},
      {"workspace size that is not a quantity",
       R"([{"op":"add","path":"/spec/runner/workspaceSizeLimit","value":"10 parsecs"}])",
       "workspaceSizeLimit must be a positive quantity"},
      {"workspace size of zero",
       R"([{"op":"add","path":"/spec/runner/workspaceSizeLimit","value":0}])",
       "workspaceSizeLimit must be a positive quantity"},
      {"image reference with a space",
       R"([{"op":"replace","path":"/spec/runner/image","value":"perimeter runner:dev"}])",
       "spec.runner.image"},
      {"negative retention",
       R"([{"op":"add","path":"/spec/retention","value":{"failedSeconds":-1}}])",
       "spec.retention.failedSeconds"},
      {"session claim of size zero",
       R"([{"op":"add","path":"/spec/runner/workspace","value":{"persistentVolumeClaim":{"size":"0"}}}])",
       "size must be a positive quantity such as 1Gi or 500Mi"},
      {"session claim with an unknown access mode",
       R"([{"op":"add","path":"/spec/runner/workspace","value":{"persistentVolumeClaim":{"accessMode":"ReadOnlyMany"}}}])",
       "spec.runner.workspace.persistentVolumeClaim.accessMode"},
      {"session claim of a storage class that cannot exist",
       R"([{"op":"add","path":"/spec/runner/workspace","value":{"persistentVolumeClaim":{"storageClassName":"Fast SSD"}}}])",
       "storageClassName must be a StorageClass name"},
      {"session claim with a negative retention",
       R"([{"op":"add","path":"/spec/runner/workspace","value":{"persistentVolumeClaim":{"idleRetentionSeconds":-1}}}])",
       "spec.runner.workspace.persistentVolumeClaim.idleRetentionSeconds"},
      {"session claim with an unknown deletion policy",
       R"([{"op":"add","path":"/spec/runner/workspace","value":{"persistentVolumeClaim":{"whenEnvironmentDeleted":"Orphan"}}}])",
       "spec.runner.workspace.persistentVolumeClaim.whenEnvironmentDeleted"},
      {"warm pool whose minimum is over its maximum",
       R"([{"op":"add","path":"/spec/warmPool","value":{"minReady":3,"maxReady":2}}])",
       "warmPool.minReady must not be greater than warmPool.maxReady"},
      {"warm pool without a maximum",
       R"([{"op":"add","path":"/spec/warmPool","value":{"minReady":1}}])",
       "spec.warmPool.maxReady: Required value"},
      {"warm pool over its bound",
       R"([{"op":"add","path":"/spec/warmPool","value":{"maxReady":1001}}])",
       "spec.warmPool.maxReady"},
      {"warm pool with a negative minimum",
       R"([{"op":"add","path":"/spec/warmPool","value":{"minReady":-1,"maxReady":2}}])",
       "spec.warmPool.minReady"},
  };
  int index = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto object =
        valid_environment("invalid-" + std::to_string(index++)).patch(json::parse(c.json_patch));
    try {
      create_environment(object);
      ADD_FAILURE() << "the apiserver accepted: " << object.dump();
    } catch (const kube::ApiError& e) {
      EXPECT_EQ(e.kind(), kube::ErrorKind::kInvalid) << e.what();
      EXPECT_NE(e.status_message().find(c.message), std::string::npos)
          << "message was: " << e.status_message();
    }
  }
}

// Issue 19: a warm pool is stored with minReady's default and read as the schema wrote it; an
// environment without one has no pool.
TEST_F(AgentEnvironmentSchemaTest, AWarmPoolIsStoredWithItsDefaultAndReadAsWritten) {
  auto object = valid_environment("warm");
  object["spec"]["warmPool"] = {{"maxReady", 5}};
  const auto stored = create_environment(object);
  EXPECT_EQ(stored["spec"]["warmPool"]["minReady"], 0);
  const auto env = parse_agent_environment(stored);
  ASSERT_TRUE(env.warm_pool.has_value());
  EXPECT_EQ(env.warm_pool->min_ready, 0);
  EXPECT_EQ(env.warm_pool->max_ready, 5);

  object = valid_environment("warm-equal");
  object["spec"]["warmPool"] = {{"minReady", 1000}, {"maxReady", 1000}};
  EXPECT_EQ(parse_agent_environment(create_environment(object)).warm_pool->min_ready, 1000);
  EXPECT_FALSE(
      parse_agent_environment(create_environment(valid_environment("cold"))).warm_pool.has_value());
}

// Issue 19, item 3: the status keeps the claimed sessions split into warm and cold as the
// operator writes them; a field the schema lacked would be pruned without an error.
TEST_F(AgentEnvironmentSchemaTest, TheStatusKeepsClaimedSessionsWarmAndCold) {
  auto object = create_environment(valid_environment("counted"));
  const json sessions = {{"claimed", 5},
                         {"succeeded", 2},
                         {"failed", 1},
                         {"warm", 3},
                         {"cold", 2},
                         {"finishedWarm", 2},
                         {"pendingMarks", {"0b6d1c1e-3f4a-4c55-9b1e-2f1a2b3c4d5e"}}};
  object["status"] = {{"sessions", sessions}};
  const json stored = environments_->update_status(ns_, object);
  EXPECT_EQ(stored["status"]["sessions"], sessions);
  EXPECT_EQ(environments_->get(ns_, "counted")["status"]["sessions"], sessions);
}

// Issue 18: a session workspace claim asked for with nothing else is stored with every default,
// and the operator reads it as the schema wrote it.
TEST_F(AgentEnvironmentSchemaTest, ASessionClaimWorkspaceIsStoredWithItsDefaults) {
  auto object = valid_environment("claims");
  object["spec"]["runner"]["workspace"] = {{"persistentVolumeClaim", json::object()}};
  const auto stored = create_environment(object);
  const json claim = stored["spec"]["runner"]["workspace"]["persistentVolumeClaim"];
  EXPECT_EQ(claim["size"], "1Gi");
  EXPECT_EQ(claim["accessMode"], "ReadWriteOnce");
  EXPECT_EQ(claim["idleRetentionSeconds"], 604800);
  EXPECT_EQ(claim["whenEnvironmentDeleted"], "Delete");
  EXPECT_FALSE(claim.contains("storageClassName"));
  const auto env = parse_agent_environment(stored);
  ASSERT_TRUE(env.runner.workspace_claim.has_value());
  EXPECT_EQ(env.runner.workspace_claim->idle_retention_seconds, 604800);
  EXPECT_FALSE(parse_agent_environment(create_environment(valid_environment("plain")))
                   .runner.workspace_claim.has_value());
}

// Issue 18: the workspace claim and its pod against the real apiserver: the pod that mounts it
// is admitted under restricted, a later item's stamp clears the idle mark, retention's delete
// loses to a stamp made after the copy it judged, and a claim being deleted (held by the real
// pvc-protection finalizer, as no controller manager runs here) makes the next item wait.
TEST_F(AgentEnvironmentSchemaTest, SessionClaimsAgainstTheRealApiserver) {
  auto object = valid_environment("workspaces");
  object["spec"]["runner"]["workspace"] = {{"persistentVolumeClaim", {{"size", "2Gi"}}}};
  const auto env = parse_agent_environment(create_environment(object));
  create_default_service_account();
  auto pods = client(kube::resources::pods());
  auto claims = client(kube::resources::persistent_volume_claims());
  KubeSessionWorkspaces workspaces(*claims, *pods);
  const std::string session_id = "sesn_01WORKSPACE";
  const std::string name = workspace_claim_name(session_id);

  ASSERT_TRUE(workspaces.ensure_claim(
      build_workspace_claim(env, session_id, "2026-12-01T10:00:00.000001Z")));
  const ClaimedSession first{"work_01FIRST", session_id, "x", "2026-12-01T10:00:00.000001Z"};
  const json pod = pods->create(ns_, build_runner_pod(env, first));
  EXPECT_EQ(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], name);
  EXPECT_EQ(workspaces.live_pods(env, session_id, ""),
            std::vector<std::string>{pod["metadata"]["name"].get<std::string>()});
  EXPECT_TRUE(workspaces.live_pods(env, session_id, pod["metadata"]["name"]).empty());

  const json claimed = claims->get(ns_, name);
  EXPECT_EQ(claimed["spec"]["resources"]["requests"]["storage"], "2Gi");
  EXPECT_EQ(claimed["metadata"]["ownerReferences"][0]["uid"], env.uid);
  workspaces.mark_idle(claimed, "2026-12-01T11:00:00.000000Z");
  const json idle = claims->get(ns_, name);
  EXPECT_EQ(idle["metadata"]["annotations"]["perimeter.dev/workspace-idle-since"],
            "2026-12-01T11:00:00.000000Z");
  // The next turn stamps it (and bumps its resourceVersion): the idle mark goes.
  EXPECT_FALSE(workspaces.ensure_claim(
      build_workspace_claim(env, session_id, "2026-12-01T12:00:00.000000Z")));
  const json stamped = claims->get(ns_, name);
  EXPECT_FALSE(stamped["metadata"]["annotations"].contains("perimeter.dev/workspace-idle-since"));
  EXPECT_EQ(stamped["metadata"]["annotations"]["perimeter.dev/workspace-claimed-at"],
            "2026-12-01T12:00:00.000000Z");
  EXPECT_FALSE(workspaces.remove_claim(idle)) << "a delete decided on an older copy won";
  EXPECT_FALSE(claims->get(ns_, name)["metadata"].contains("deletionTimestamp"));

  workspaces.set_owner(stamped, nullptr);  // whenEnvironmentDeleted: Retain
  const json unowned = claims->get(ns_, name);
  EXPECT_TRUE(unowned["metadata"].value("ownerReferences", json::array()).empty());

  EXPECT_TRUE(workspaces.remove_claim(unowned));
  EXPECT_THROW(workspaces.ensure_claim(
                   build_workspace_claim(env, session_id, "2026-12-01T13:00:00.000000Z")),
               WorkspaceBusy)
      << "a pod was about to mount a claim being deleted";
}

TEST_F(AgentEnvironmentSchemaTest, TheEnvironmentIdCannotChange) {
  create_environment(valid_environment("fixed"));
  try {
    environments_->merge_patch(ns_, "fixed", {{"spec", {{"environmentId", "env_other"}}}});
    FAIL() << "the environment id changed";
  } catch (const kube::ApiError& e) {
    EXPECT_EQ(e.kind(), kube::ErrorKind::kInvalid);
    EXPECT_NE(e.status_message().find("environmentId is immutable"), std::string::npos);
  }
}

TEST_F(AgentEnvironmentSchemaTest, RunnerObjectsAreAdmittedUnderPodSecurityRestricted) {
  auto object = valid_environment("payments");
  object["spec"]["egress"] = {{"allowedCIDRs", {"0.0.0.0/0", "10.20.0.0/16"}}};
  const auto env = parse_agent_environment(create_environment(object));
  const ClaimedSession session{"work_01JABCDEF", "sesn_01JXYZ", "eyJzZXNzaW9uc190b2tlbiI6IngifQ",
                               "2026-11-23T06:00:00Z"};

  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  auto policies = client(kube::resources::network_policies());
  // The ServiceAccount admission plugin wants the namespace's default ServiceAccount even though
  // the pod mounts no token; the controller manager is not running in this test.
  create_default_service_account();

  secrets->create(ns_, build_session_secret(env, session));
  const auto pod = pods->create(ns_, build_runner_pod(env, session));
  EXPECT_EQ(pod["metadata"]["ownerReferences"][0]["uid"], env.uid);
  const auto policy = policies->create(ns_, build_network_policy(env));
  EXPECT_EQ(policy["spec"]["egress"].size(), 3u);

  // A retried claim meets the pod that is already there instead of creating a twin.
  try {
    pods->create(ns_, build_runner_pod(env, session));
    FAIL() << "a second pod for the same work item was created";
  } catch (const kube::ApiError& e) {
    EXPECT_EQ(e.kind(), kube::ErrorKind::kAlreadyExists);
  }

  // The admission is real: the same pod without the hardening is refused in this namespace, by
  // the claim's dry run (which stores nothing) as by a create.
  auto weakened = build_runner_pod(env, {"work_other", "sesn_other", "x", ""});
  weakened["spec"]["containers"][0]["securityContext"].erase("capabilities");
  weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true;
  KubeSessionObjectWriter writer(*secrets, *pods);
  EXPECT_NO_THROW(writer.check_pod(build_runner_pod(env, {"work_dry", "sesn_dry", "x", ""})));
  EXPECT_THROW(writer.check_pod(weakened), ObjectRefused);
  EXPECT_THROW(pods->get(ns_, runner_object_name("work_dry")), kube::ApiError)
      << "a dry run stored its pod";
  try {
    pods->create(ns_, weakened);
    FAIL() << "PodSecurity admitted a pod that escalates privileges";
  } catch (const kube::ApiError& e) {
    EXPECT_EQ(e.kind(), kube::ErrorKind::kForbidden) << e.what();
    EXPECT_NE(e.status_message().find("restricted"), std::string::npos) << e.status_message();
  }
}

// Issue 19: a warm runner pod (no session yet, its own Secret mounted) is admitted under
// restricted like a session's pod, and mounts no ServiceAccount token.
TEST_F(AgentEnvironmentSchemaTest, WarmRunnerObjectsAreAdmittedUnderPodSecurityRestricted) {
  const auto env = parse_agent_environment(create_environment(valid_environment("warm")));
  create_default_service_account();
  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  const AssignmentEndpoint endpoint = assignment_endpoint();
  secrets->create(ns_, build_warm_pod_secret(env, "warm-0a1b2c", "token", endpoint));
  const auto pod = pods->create(ns_, build_warm_runner_pod(env, "warm-0a1b2c", "ab12", endpoint));
  EXPECT_EQ(pod["metadata"]["labels"][std::string(kLabelWarm)], "true");
  EXPECT_EQ(pod["spec"]["automountServiceAccountToken"], false);
  for (const auto& volume : pod["spec"]["volumes"]) {
    EXPECT_FALSE(volume.contains("projected")) << volume.dump();
  }
}

// Issue 19: the pool's writer against the real apiserver. It makes a warm pod and its own Secret
// (admitted under restricted); a removal decided from a copy a claim has changed since (the
// assignment) takes nothing, and an exact one takes the pod and then its Secret.
TEST_F(AgentEnvironmentSchemaTest, ThePoolsWriterRemovesOnlyTheWarmPodAsCached) {
  auto object = valid_environment("warm-writer");
  object["spec"]["warmPool"] = {{"maxReady", 2}};
  const auto env = parse_agent_environment(create_environment(object));
  create_default_service_account();
  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  KubeWarmPodWriter writer(*secrets, *pods);
  const AssignmentEndpoint endpoint = assignment_endpoint();
  const WarmPodToken token = mint_warm_pod_token();
  const std::string name = object_name_for("warm-", env.name + "-" + token.sha256.substr(0, 16));
  writer.create(build_warm_pod_secret(env, name, token.token, endpoint),
                build_warm_runner_pod(env, name, token.sha256, endpoint));
  const json cached = pods->get(ns_, name);
  const std::string uid = cached["metadata"].value("uid", "");
  EXPECT_NO_THROW(secrets->get(ns_, name));

  pods->merge_patch(
      ns_, name,
      {{"metadata", {{"annotations", {{std::string(kAnnotationAssignedWorkId), "work_1"}}}}}});
  EXPECT_FALSE(writer.remove(ns_, name, uid, cached["metadata"].value("resourceVersion", "")))
      << "a removal decided before the assignment took the assigned pod";
  EXPECT_NO_THROW(pods->get(ns_, name));
  EXPECT_NO_THROW(secrets->get(ns_, name));

  const json now = pods->get(ns_, name);
  EXPECT_TRUE(writer.remove(ns_, name, uid, now["metadata"].value("resourceVersion", "")));
  // Never scheduled (no node here), so deleted at once rather than after a grace period.
  EXPECT_THROW(pods->get(ns_, name), kube::ApiError);
  EXPECT_THROW(secrets->get(ns_, name), kube::ApiError);
  EXPECT_TRUE(writer.remove(ns_, name, uid, "")) << "already gone is fine";
}

TEST_F(AgentEnvironmentSchemaTest, TheWriterReleasesOnlyItsGateAndReplacesAFinishedAttempt) {
  const auto env = parse_agent_environment(create_environment(valid_environment("gates")));
  const ClaimedSession session{"work_01GATE", "sesn_01GATE", "eyJzZXNzaW9uc190b2tlbiI6IngifQ",
                               "2026-11-23T06:00:00Z"};
  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  create_default_service_account();
  KubeSessionObjectWriter writer(*secrets, *pods);
  auto pod = build_runner_pod(env, session);
  // A pod as an earlier version of the operator made it, held until its item's ack; another
  // controller's gate must survive Perimeter's release.
  pod["spec"]["schedulingGates"] = json::array(
      {{{"name", std::string(kSchedulingGateAcknowledged)}}, {{"name", "example.com/quota"}}});
  const std::string name = pod["metadata"]["name"];

  ASSERT_TRUE(writer.ensure_pod(pod));
  EXPECT_FALSE(writer.ensure_pod(pod)) << "a retried claim must meet the unfinished pod";
  writer.release_pod(ns_, name);
  writer.release_pod(ns_, name);  // idempotent
  const auto released = pods->get(ns_, name);
  EXPECT_EQ(released["spec"]["schedulingGates"], json::parse(R"([{"name":"example.com/quota"}])"));

  // The attempt ends (evicted, killed) and the item comes back: a later claim replaces the
  // finished pod; this claim's own request, retried, does not.
  auto finished = released;
  finished["status"] = {{"phase", "Failed"}, {"reason", "Evicted"}};
  pods->update_status(ns_, finished);
  const std::string old_uid = released["metadata"]["uid"];
  EXPECT_FALSE(writer.ensure_pod(pod)) << "the claim's own finished pod was made again";
  ClaimedSession again = session;
  again.claimed_at = "2026-11-23T07:00:00.000000Z";
  ASSERT_TRUE(writer.ensure_pod(build_runner_pod(env, again)))
      << "a finished attempt's pod was kept";
  const auto replacement = pods->get(ns_, name);
  EXPECT_NE(replacement["metadata"]["uid"], old_uid);
  EXPECT_FALSE(replacement["spec"].contains("schedulingGates"));
  EXPECT_EQ(replacement["status"].value("phase", ""), "Pending");
}

// The claim's writes to a warm pod against the real apiserver (docs/warm-pool.md): the
// assignment patch under the pod's resourceVersion wins once, the claims sweep's read finds the
// pod by the item's label, and retention removes the session Secret the pod names, the pod's own
// Secret and the pod.
TEST_F(AgentEnvironmentSchemaTest, AWarmPodIsAssignedOnceFoundByItsItemAndRemovedWithItsSecrets) {
  const auto env = parse_agent_environment(create_environment(valid_environment("warmclaim")));
  create_default_service_account();
  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  KubeSessionObjectWriter writer(*secrets, *pods);
  const AssignmentEndpoint endpoint = assignment_endpoint();
  secrets->create(ns_, build_warm_pod_secret(env, "warm-0a1b2c", "token", endpoint));
  const json warm_pod = build_warm_runner_pod(env, "warm-0a1b2c", "ab12", endpoint);
  EXPECT_FALSE(warm_pod["spec"].contains("activeDeadlineSeconds"));
  const WarmPodRef cached = start_warm_pod(*pods, env, warm_pod, std::chrono::seconds(2));
  ASSERT_TRUE(cached.started_at.has_value());

  ClaimedSession first{"work_01WARM", "sesn_01WARM", "eyJzZXNzaW9uc190b2tlbiI6IngifQ",
                       "2026-12-01T06:00:00.000000Z"};
  first.secret = *writer.ensure_secret(build_session_secret(env, first));
  const ClaimedSession second{"work_02WARM", "sesn_02WARM", "eyJzZXNzaW9uc190b2tlbiI6InkifQ",
                              "2026-12-01T06:00:00.000001Z"};
  // Assigned 50 minutes after its start: its session still gets the environment's whole hour.
  // One merge patch carries the annotations, the labels and spec.activeDeadlineSeconds under
  // the resourceVersion, and the apiserver takes it.
  const SetWallClock assigned_at(*cached.started_at + std::chrono::minutes(50) +
                                 std::chrono::milliseconds(500));
  KubeSessionObjectWriter assigning(*secrets, *pods, assigned_at);
  ASSERT_EQ(env.runner.active_deadline_seconds, 3600);
  ASSERT_TRUE(assigning.assign_warm_pod(ns_, cached, first, runner_object_name(first.work_id),
                                        env.runner.active_deadline_seconds));
  EXPECT_FALSE(
      assigning.assign_warm_pod(ns_, cached, second, runner_object_name(second.work_id), 60))
      << "a claim from the same cached resourceVersion won the pod again";
  auto assigned = pods->get(ns_, "warm-0a1b2c");
  EXPECT_EQ(assigned["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)],
            "work_01WARM");
  EXPECT_EQ(assigned["spec"]["activeDeadlineSeconds"], 3001 + 3600) << assigned["spec"].dump();
  EXPECT_EQ(writer.find_assigned_pod(ns_, env.name, "work_01WARM"),
            std::optional<std::string>("warm-0a1b2c"));
  EXPECT_FALSE(writer.find_assigned_pod(ns_, env.name, "work_02WARM").has_value());

  assigned["status"] = {{"phase", "Succeeded"}};
  auto finished = pods->update_status(ns_, assigned);
  trim_runner_pod(finished);
  writer.remove_finished(finished);
  const auto gone = [&](kube::ResourceClient& kind, const std::string& name) {
    try {
      kind.get(ns_, name);
      return false;
    } catch (const kube::ApiError& e) {
      return e.kind() == kube::ErrorKind::kNotFound;
    }
  };
  EXPECT_TRUE(gone(*secrets, runner_object_name("work_01WARM")));
  EXPECT_TRUE(gone(*secrets, "warm-0a1b2c"));
  EXPECT_TRUE(gone(*pods, "warm-0a1b2c"));
}

// The assignment's delivery is one JSON patch whose tests the real apiserver holds against the pod
// it has (docs/warm-pool.md "The assignment channel"): a write made since (the kubelet's status
// after the assignment's deadline) does not fail it, a missing annotation or deletionTimestamp
// tests as null, and a second delivery, a replaced pod's, another item's, or a pod being deleted
// is refused, leaving the first delivery as it was.
TEST_F(AgentEnvironmentSchemaTest, AWarmPodsDeliveryIsRecordedOnceAndOnlyOnThePodItWasDecidedFrom) {
  const auto env = parse_agent_environment(create_environment(valid_environment("delivery")));
  create_default_service_account();
  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  KubeSessionObjectWriter writer(*secrets, *pods);
  const AssignmentEndpoint endpoint = assignment_endpoint();
  // Assigned as a claim assigns, and read as the cache had it before the kubelet's next write.
  const auto assigned_pod = [&](const std::string& name, const std::string& work_id,
                                const json& finalizers) {
    secrets->create(ns_, build_warm_pod_secret(env, name, "token", endpoint));
    json pod = build_warm_runner_pod(env, name, "ab12", endpoint);
    if (!finalizers.is_null()) pod["metadata"]["finalizers"] = finalizers;
    const WarmPodRef cached = start_warm_pod(*pods, env, pod, std::chrono::seconds(1));
    ClaimedSession session{work_id, "sesn_" + work_id, "eyJzZXNzaW9uc190b2tlbiI6IngifQ",
                           "2026-12-02T06:00:00.000000Z"};
    session.secret = *writer.ensure_secret(build_session_secret(env, session));
    if (!writer.assign_warm_pod(ns_, cached, session, runner_object_name(work_id), 3600)) {
      throw std::runtime_error("the assignment of " + name + " was refused");
    }
    return *read_warm_pod(pods->get(ns_, name));
  };
  runtime::Store cache;
  KubeWarmPodDirectory directory(cache, *secrets, *pods);

  const WarmPod stale = assigned_pod("warm-deliver", "work_01DELIVER", nullptr);
  ASSERT_TRUE(stale.assignment.has_value());
  ASSERT_FALSE(stale.confirmed);
  json live = pods->get(ns_, "warm-deliver");
  live["status"]["conditions"] = json::array({{{"type", "Ready"}, {"status", "True"}}});
  ASSERT_NE(pods->update_status(ns_, live)["metadata"]["resourceVersion"], stale.resource_version);

  WarmPod replaced = stale;
  replaced.uid = "00000000-0000-0000-0000-000000000000";
  WarmPodAssignment another_item = *stale.assignment;
  another_item.work_id = "work_02OTHER";
  EXPECT_FALSE(directory.mark_delivered(replaced, *stale.assignment, "aa", "t0"));
  EXPECT_FALSE(directory.mark_delivered(stale, another_item, "aa", "t0"));
  EXPECT_TRUE(directory.mark_delivered(stale, *stale.assignment, "first-nonce-sha256",
                                       "2026-12-02T06:00:01.000000Z"));
  EXPECT_FALSE(directory.mark_delivered(stale, *stale.assignment, "second-nonce-sha256",
                                        "2026-12-02T06:00:02.000000Z"));
  EXPECT_FALSE(directory.mark_delivered(stale, *stale.assignment, "", "2026-12-02T06:00:03Z"));
  const json annotations = pods->get(ns_, "warm-deliver")["metadata"]["annotations"];
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentConfirmedAt), ""),
            "2026-12-02T06:00:01.000000Z");
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentNonceSha256), ""),
            "first-nonce-sha256");
  const std::optional<WarmPod> delivered = directory.read_live(stale);
  ASSERT_TRUE(delivered.has_value());
  EXPECT_TRUE(delivered->confirmed);
  EXPECT_EQ(delivered->delivery_nonce_sha256, "first-nonce-sha256");

  // Being deleted (a finalizer holds it in the apiserver): nothing is delivered.
  const WarmPod deleting =
      assigned_pod("warm-deleting", "work_03DELETING", json::array({"perimeter.dev/test-hold"}));
  pods->remove(ns_, "warm-deleting");
  EXPECT_FALSE(directory.mark_delivered(deleting, *deleting.assignment, "aa", "t0"));
  pods->json_patch(ns_, "warm-deleting",
                   json::array({{{"op", "remove"}, {"path", "/metadata/finalizers"}}}));
  // Gone: refused as well, not an error.
  EXPECT_FALSE(directory.mark_delivered(deleting, *deleting.assignment, "aa", "t0"));
}

// The apiserver's rules for a running pod's deadline, which the assignment patch follows: it may
// be added or lowered, never raised. A warm pod an earlier version made with the session's
// deadline from its start keeps it (the patch leaves it out, and the assignment still lands);
// one that ends later is lowered to the session's.
TEST_F(AgentEnvironmentSchemaTest, TheAssignmentLowersAnEarlierWarmPodsDeadlineAndNeverRaisesIt) {
  const auto env = parse_agent_environment(create_environment(valid_environment("warmdeadline")));
  create_default_service_account();
  auto secrets = client(kube::resources::secrets());
  auto pods = client(kube::resources::pods());
  const AssignmentEndpoint endpoint = assignment_endpoint();
  const auto earlier_pod = [&](const std::string& name, std::int64_t deadline) {
    json pod = build_warm_runner_pod(env, name, "hash-" + name, endpoint);
    pod["spec"]["activeDeadlineSeconds"] = deadline;
    return start_warm_pod(*pods, env, pod, std::chrono::seconds(0));
  };
  const WarmPodRef hour = earlier_pod("warm-hour", 3600);
  const WarmPodRef day = earlier_pod("warm-day", 86400);
  EXPECT_EQ(hour.active_deadline_seconds, std::optional<std::int64_t>(3600));

  // Raising it is refused, whatever else the patch carries.
  try {
    pods->merge_patch(ns_, "warm-hour", {{"spec", {{"activeDeadlineSeconds", 4200}}}});
    FAIL() << "the apiserver raised a running pod's deadline";
  } catch (const kube::ApiError& e) {
    EXPECT_EQ(e.kind(), kube::ErrorKind::kInvalid) << e.what();
  }

  const SetWallClock ten_minutes_on(*hour.started_at + std::chrono::minutes(10));
  KubeSessionObjectWriter writer(*secrets, *pods, ten_minutes_on);
  const ClaimedSession first{"work_01HOUR", "sesn_01HOUR", "", "2026-12-01T06:00:00.000000Z"};
  const ClaimedSession second{"work_02DAY", "sesn_02DAY", "", "2026-12-01T06:00:00.000001Z"};
  ASSERT_TRUE(writer.assign_warm_pod(ns_, hour, first, runner_object_name(first.work_id), 3600));
  const json kept = pods->get(ns_, "warm-hour");
  EXPECT_EQ(kept["spec"]["activeDeadlineSeconds"], 3600);
  EXPECT_EQ(kept["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)], "work_01HOUR");
  const auto day_age =
      std::chrono::ceil<std::chrono::seconds>(ten_minutes_on.wall_now() - *day.started_at);
  ASSERT_TRUE(writer.assign_warm_pod(ns_, day, second, runner_object_name(second.work_id), 3600));
  EXPECT_EQ(pods->get(ns_, "warm-day")["spec"]["activeDeadlineSeconds"], day_age.count() + 3600);
}

}  // namespace
}  // namespace perimeter::agentenvironment
