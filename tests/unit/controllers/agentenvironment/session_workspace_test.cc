// A session's workspace as a PersistentVolumeClaim of its own (issue 18): the spec, the claim
// and the pod that mounts it, and the claim path's rule that one session never has two live pods
// on its workspace, replayed against the in-memory apiserver with an injected clock, crashes
// included. Retention is in workspace_retention_test.cc.
#include "controllers/agentenvironment/session_workspace.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agentapi/mock_agent_api.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/session_poller.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "core/time_format.h"
#include "fake_agent_api.h"
#include "kube/fake_api_server.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using std::chrono::seconds;
using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;
using testing_support::FakeFactory;
using testing_support::kSecret;

constexpr const char* kNamespace = "agents";
constexpr const char* kSession = "sesn_conversation";

json environment_object(const json& workspace) {
  return {{"metadata", {{"name", "payments"}, {"namespace", kNamespace}, {"uid", "uid-env"}}},
          {"spec",
           {{"environmentId", "env_1"},
            {"environmentKeySecretRef", {{"name", "key"}}},
            {"runner", {{"image", "runner:1"}, {"workspace", workspace}}}}}};
}

TEST(WorkspaceSpecTest, AClaimTemplateTakesTheSchemaDefaults) {
  const auto env =
      parse_agent_environment(environment_object({{"persistentVolumeClaim", json::object()}}));
  ASSERT_TRUE(env.runner.workspace_claim.has_value());
  EXPECT_EQ(env.runner.workspace_claim->size, "1Gi");
  EXPECT_EQ(env.runner.workspace_claim->access_mode, "ReadWriteOnce");
  EXPECT_EQ(env.runner.workspace_claim->storage_class_name, "");
  EXPECT_EQ(env.runner.workspace_claim->idle_retention_seconds, 604800);
  EXPECT_TRUE(env.runner.workspace_claim->delete_with_environment);
  EXPECT_FALSE(parse_agent_environment(environment_object(json::object()))
                   .runner.workspace_claim.has_value())
      << "emptyDir stays the default";
}

TEST(WorkspaceSpecTest, ValuesTheSchemaWouldRefuseAreSpecErrorsNamingTheField) {
  for (const json& claim :
       {json{{"accessMode", "ReadOnlyMany"}}, json{{"whenEnvironmentDeleted", "Orphan"}},
        json{{"idleRetentionSeconds", -1}}, json{{"size", true}}}) {
    SCOPED_TRACE(claim.dump());
    try {
      parse_agent_environment(environment_object({{"persistentVolumeClaim", claim}}));
      ADD_FAILURE() << "accepted";
    } catch (const SpecError& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("spec.runner.workspace.persistentVolumeClaim."));
    }
  }
}

TEST(WorkspaceClaimTest, TheClaimIsNamedFromTheSessionAloneAndOwnedPerThePolicy) {
  auto env = parse_agent_environment(environment_object(
      {{"persistentVolumeClaim",
        {{"storageClassName", "fast"}, {"size", "5Gi"}, {"accessMode", "ReadWriteOncePod"}}}}));
  const json claim = build_workspace_claim(env, kSession, "2026-12-01T10:00:00.000001Z");
  EXPECT_EQ(claim["metadata"]["name"], workspace_claim_name(kSession));
  EXPECT_EQ(workspace_claim_name(kSession), workspace_claim_name(kSession));
  EXPECT_NE(workspace_claim_name(kSession), workspace_claim_name("sesn_Conversation"));
  EXPECT_LE(workspace_claim_name(std::string(200, 'x')).size(), 63u);
  EXPECT_EQ(claim["spec"]["storageClassName"], "fast");
  EXPECT_EQ(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
  EXPECT_EQ(claim["spec"]["accessModes"], json::array({"ReadWriteOncePod"}));
  EXPECT_EQ(claim["metadata"]["labels"]["app.kubernetes.io/component"], "workspace");
  EXPECT_EQ(claim["metadata"]["labels"]["perimeter.dev/session-id"], kSession);
  EXPECT_EQ(claim["metadata"]["annotations"]["perimeter.dev/session-id"], kSession);
  EXPECT_EQ(claim["metadata"]["annotations"]["perimeter.dev/environment-name"], "payments");
  ASSERT_EQ(claim["metadata"]["ownerReferences"].size(), 1u);
  EXPECT_EQ(claim["metadata"]["ownerReferences"][0]["uid"], "uid-env");
  EXPECT_FALSE(claim["metadata"]["ownerReferences"][0]["controller"].get<bool>());

  env.runner.workspace_claim->delete_with_environment = false;  // Retain
  EXPECT_FALSE(build_workspace_claim(env, kSession, "")["metadata"].contains("ownerReferences"));
}

TEST(WorkspaceClaimTest, TheRunnerPodMountsTheSessionClaimAtItsWorkspace) {
  const auto empty_dir = parse_agent_environment(environment_object(json::object()));
  const auto claimed =
      parse_agent_environment(environment_object({{"persistentVolumeClaim", json::object()}}));
  const ClaimedSession session{"work_1", kSession, kSecret, ""};
  const json volume = build_runner_pod(claimed, session)["spec"]["volumes"][0];
  EXPECT_EQ(volume["name"], "workspace");
  EXPECT_EQ(volume["persistentVolumeClaim"]["claimName"], workspace_claim_name(kSession));
  EXPECT_TRUE(build_runner_pod(empty_dir, session)["spec"]["volumes"][0].contains("emptyDir"));
}

// The claim path against the in-memory apiserver: real Secret, Pod and claim writers, a poller
// per "process", the queue a mock.
class WorkspaceClaimPathTest : public ::testing::Test {
 protected:
  WorkspaceClaimPathTest() {
    server_.use_clock(&clock_);
    EXPECT_CALL(api_, poll(_)).WillRepeatedly(Return(std::nullopt));
  }

  AgentEnvironment environment() {
    auto env = parse_agent_environment(
        environment_object({{"persistentVolumeClaim", {{"storageClassName", "local"}}}}));
    env.api_base_url = "http://127.0.0.1:9";
    return env;
  }

  std::unique_ptr<SessionPoller> make_poller() {
    PollerDependencies deps{
        factory_,
        writer_,
        census_,
        metrics_,
        clock_,
        random_,
        Logger("test", StderrSink::instance(), LogLevel::kError),
        [this](const std::string& type, const std::string& reason, const std::string& message) {
          events_.push_back(type + " " + reason + ": " + message);
        },
        nullptr,
        nullptr,
        {},
        &workspaces_};
    return std::make_unique<SessionPoller>(PollerSettings{environment(), "envkey", "worker-1"},
                                           std::move(deps), 1);
  }

  agentapi::WorkItem item(const std::string& work_id) {
    agentapi::WorkItem item = testing_support::session_item(work_id);
    item.data_id = kSession;
    return item;
  }
  void next_poll_returns(const std::string& work_id) {
    EXPECT_CALL(api_, poll(_)).WillOnce(Return(item(work_id))).RetiresOnSaturation();
  }

  std::optional<json> pod(const std::string& work_id) {
    return server_.object_at(std::string("/api/v1/namespaces/") + kNamespace + "/pods/" +
                             runner_object_name(work_id));
  }
  std::optional<json> claim() {
    return server_.object_at(std::string("/api/v1/namespaces/") + kNamespace +
                             "/persistentvolumeclaims/" + workspace_claim_name(kSession));
  }
  void finish(const std::string& work_id) {
    json p = *pod(work_id);
    p["status"] = {{"phase", "Succeeded"}};
    pod_client_.update_status(kNamespace, p);
  }
  // Pods of the session that have not finished, as the apiserver has them.
  int live_pods() {
    int live = 0;
    const json pods = pod_client_.list(kNamespace);
    for (const auto& p : pods["items"]) {
      if (p["metadata"]["labels"].value("perimeter.dev/session-id", "") == kSession &&
          !pod_finished(p)) {
        ++live;
      }
    }
    return live;
  }
  double waits() {
    return metrics_.workspace_waits_total.Add({{"environment", "agents/payments"}}).Value();
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  kube::ResourceClient secret_client_{server_, kube::resources::secrets(), client_metrics_};
  kube::ResourceClient pod_client_{server_, kube::resources::pods(), client_metrics_};
  kube::ResourceClient claim_client_{server_, kube::resources::persistent_volume_claims(),
                                     client_metrics_};
  KubeSessionObjectWriter writer_{secret_client_, pod_client_};
  KubeSessionWorkspaces workspaces_{claim_client_, pod_client_};
  runtime::Store pods_;
  StoreRunnerPodCensus census_{pods_};
  OperatorMetrics metrics_{registry_};
  testing::FakeClock clock_;
  testing::FakeRandom random_{0.5};
  NiceMock<testing::MockAgentApi> api_;
  FakeFactory factory_{api_};
  std::vector<std::string> events_;
};

TEST_F(WorkspaceClaimPathTest, TheFirstItemOfASessionMakesItsClaimAndItsPodMountsIt) {
  auto poller = make_poller();
  next_poll_returns("work_1");
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  ASSERT_TRUE(claim().has_value());
  ASSERT_TRUE(pod("work_1").has_value());
  EXPECT_EQ((*pod("work_1"))["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            workspace_claim_name(kSession));
  EXPECT_EQ((*claim())["spec"]["storageClassName"], "local");
  EXPECT_EQ((*claim())["metadata"]["annotations"]["perimeter.dev/workspace-claimed-at"],
            (*pod("work_1"))["metadata"]["annotations"]["perimeter.dev/claimed-at"]);
  EXPECT_EQ(metrics_.workspaces_created_total.Add({{"environment", "agents/payments"}}).Value(), 1);
}

// The user's next message arrives while the first turn's pod is still ending: the item is
// acknowledged (it is ours), and its pod waits until the first one has finished; then it mounts
// the same claim.
TEST_F(WorkspaceClaimPathTest, ASecondItemWaitsForTheSessionsLivePodThenMountsTheSameClaim) {
  auto poller = make_poller();
  next_poll_returns("work_1");
  poller->poll_once();
  const std::string claim_uid = (*claim())["metadata"]["uid"];

  clock_.advance(seconds(3));
  next_poll_returns("work_2");
  EXPECT_CALL(api_, ack("work_2")).Times(1);
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_FALSE(pod("work_2").has_value()) << "two live pods on one workspace";
  EXPECT_EQ(waits(), 1);
  ASSERT_FALSE(events_.empty());
  EXPECT_THAT(events_.back(), ::testing::HasSubstr("Normal WaitingForWorkspace"));
  EXPECT_THAT(events_.back(), ::testing::HasSubstr(runner_object_name("work_1")));
  EXPECT_EQ(poller->sessions_owed_pods(), std::set<std::string>{kSession});

  // Passes while the first pod runs: still waiting, told once.
  for (int i = 0; i < 3; ++i) poller->poll_once();
  EXPECT_FALSE(pod("work_2").has_value());
  EXPECT_EQ(live_pods(), 1);
  EXPECT_EQ(waits(), 1);

  finish("work_1");
  poller->poll_once();
  ASSERT_TRUE(pod("work_2").has_value());
  EXPECT_EQ(live_pods(), 1);
  EXPECT_EQ((*pod("work_2"))["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            workspace_claim_name(kSession));
  EXPECT_EQ((*claim())["metadata"]["uid"], claim_uid) << "the claim was made anew";
  EXPECT_EQ((*claim())["metadata"]["annotations"]["perimeter.dev/workspace-claimed-at"],
            (*pod("work_2"))["metadata"]["annotations"]["perimeter.dev/claimed-at"]);
  EXPECT_TRUE(poller->sessions_owed_pods().empty());
}

// The operator is killed while the second item waits (acknowledged, its Secret written, no pod):
// the next leader's claims sweep finds the Secret, the queue says the item is acknowledged, and
// the pod is made once the first one has ended, never before.
TEST_F(WorkspaceClaimPathTest, AnOperatorKilledWhileAnItemWaitsLosesItAndDoublesNothing) {
  {
    auto first_process = make_poller();
    next_poll_returns("work_1");
    first_process->poll_once();
    next_poll_returns("work_2");
    first_process->poll_once();
    ASSERT_FALSE(pod("work_2").has_value());
  }  // killed: what it remembered is gone
  const json secret = *server_.object_at(std::string("/api/v1/namespaces/") + kNamespace +
                                         "/secrets/" + runner_object_name("work_2"));
  agentapi::WorkItem acknowledged = item("work_2");
  acknowledged.state = "starting";
  ON_CALL(api_, retrieve_work("work_2")).WillByDefault(Return(acknowledged));

  auto next_leader = make_poller();
  EXPECT_EQ(next_leader->start_if_acknowledged(
                "work_2", secret["metadata"]["annotations"]["perimeter.dev/claimed-at"]),
            PodlessClaim::kStarted);
  EXPECT_FALSE(pod("work_2").has_value()) << "two live pods on one workspace";
  next_leader->poll_once();
  EXPECT_FALSE(pod("work_2").has_value());

  finish("work_1");
  next_leader->poll_once();
  EXPECT_TRUE(pod("work_2").has_value());
  EXPECT_EQ(live_pods(), 1);
}

// Killed between turns: the first pod finished while no operator ran; the next one claims the
// second item and its pod mounts the claim the first turn left.
TEST_F(WorkspaceClaimPathTest, AnOperatorKilledBetweenTurnsMountsTheClaimTheFirstTurnLeft) {
  {
    auto first_process = make_poller();
    next_poll_returns("work_1");
    first_process->poll_once();
  }
  const std::string claim_uid = (*claim())["metadata"]["uid"];
  finish("work_1");
  auto next_process = make_poller();
  next_poll_returns("work_2");
  next_process->poll_once();
  ASSERT_TRUE(pod("work_2").has_value());
  EXPECT_EQ((*claim())["metadata"]["uid"], claim_uid);
  EXPECT_EQ(waits(), 0);
}

// A claim being deleted (its retention ended) cannot be mounted: the item waits until it is
// gone, then the claim is made anew.
TEST_F(WorkspaceClaimPathTest, AClaimBeingDeletedMakesTheItemWaitThenIsMadeAnew) {
  json terminating = build_workspace_claim(environment(), kSession, "");
  terminating["metadata"]["finalizers"] = {"kubernetes.io/pvc-protection"};
  server_.seed(std::string("/api/v1/namespaces/") + kNamespace + "/persistentvolumeclaims",
               terminating);
  claim_client_.remove(kNamespace, workspace_claim_name(kSession));
  ASSERT_TRUE((*claim())["metadata"].contains("deletionTimestamp"));

  auto poller = make_poller();
  next_poll_returns("work_1");
  poller->poll_once();
  EXPECT_FALSE(pod("work_1").has_value());
  EXPECT_EQ(waits(), 1);

  json gone = *claim();
  gone["metadata"]["finalizers"] = json::array();
  claim_client_.update(kNamespace, gone);  // the protection controller lets it go
  ASSERT_FALSE(claim().has_value());
  poller->poll_once();
  ASSERT_TRUE(claim().has_value());
  EXPECT_FALSE((*claim())["metadata"].contains("deletionTimestamp"));
  EXPECT_TRUE(pod("work_1").has_value());
}

}  // namespace
}  // namespace perimeter::agentenvironment
