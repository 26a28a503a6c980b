// Retention of session workspaces (issue 18) against the in-memory apiserver with an injected
// clock: idle, then deleted after idleRetentionSeconds; sooner when the API says the session is
// terminated; never while a pod of the session lives or an item is about to start one, and never
// a claim a new item stamped after the cache was read.
#include "controllers/agentenvironment/workspace_retention.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/fake_clock.h"
#include "core/time_format.h"
#include "kube/fake_api_server.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr const char* kNamespace = "agents";
constexpr const char* kSession = "sesn_conversation";

class WorkspaceRetentionTest : public ::testing::Test {
 protected:
  WorkspaceRetentionTest() {
    server_.use_clock(&clock_);
    env_.name = "payments";
    env_.namespace_ = kNamespace;
    env_.uid = "uid-env";
    env_.environment_id = "env_1";
    env_.runner.image = "runner:1";
    WorkspaceClaimTemplate t;
    t.idle_retention_seconds = 3600;
    env_.runner.workspace_claim = t;
  }

  // A new item of the session records itself on the claim (the claim path's write).
  void item_claims_workspace() {
    workspaces_.ensure_claim(
        build_workspace_claim(env_, kSession, format_rfc3339_micros(clock_.wall_now())));
    bind();
  }
  void bind() {
    json c = *stored();
    c["status"] = {{"phase", "Bound"}};
    claim_client_.update_status(kNamespace, c);
    refresh_cache();
  }
  // The informer catches up with the apiserver.
  void refresh_cache() {
    for (const auto& key : claims_.keys()) claims_.remove(key);
    if (auto c = stored()) claims_.upsert(std::make_shared<const json>(*c));
  }
  std::optional<json> stored() {
    return server_.object_at(std::string("/api/v1/namespaces/") + kNamespace +
                             "/persistentvolumeclaims/" + workspace_claim_name(kSession));
  }
  WorkspaceFigures survey(SessionFate fate = SessionFate::kLive, std::set<std::string> busy = {}) {
    return retention_.survey(
        env_, busy,
        [&, fate](const std::string& session_id) {
          asked_.push_back(session_id);
          return fate;
        },
        [this](const std::string& type, const std::string& reason, const std::string& message) {
          events_.push_back(type + " " + reason + ": " + message);
        });
  }
  double deleted(const std::string& reason) {
    return metrics_.workspaces_deleted_total
        .Add({{"environment", "agents/payments"}, {"reason", reason}})
        .Value();
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  kube::ResourceClient pod_client_{server_, kube::resources::pods(), client_metrics_};
  kube::ResourceClient claim_client_{server_, kube::resources::persistent_volume_claims(),
                                     client_metrics_};
  KubeSessionWorkspaces workspaces_{claim_client_, pod_client_};
  runtime::Store claims_, pods_;
  OperatorMetrics metrics_{registry_};
  testing::FakeClock clock_;
  AgentEnvironment env_;
  WorkspaceRetention retention_{{claims_, pods_, workspaces_, metrics_, clock_,
                                 Logger("test", StderrSink::instance(), LogLevel::kError)},
                                {}};
  std::vector<std::string> asked_, events_;
};

TEST_F(WorkspaceRetentionTest, AnIdleClaimIsStampedAndDeletedWhenItsRetentionEnds) {
  item_claims_workspace();
  // Just claimed: its pod may not be in the cache yet, so it is in use.
  auto figures = survey();
  EXPECT_EQ(figures.in_use, 1u);
  EXPECT_FALSE(
      (*stored())["metadata"]["annotations"].contains("perimeter.dev/workspace-idle-since"));

  clock_.advance(minutes(3));
  figures = survey();
  EXPECT_EQ(figures.idle, 1u);
  refresh_cache();
  const std::string idle_since =
      (*stored())["metadata"]["annotations"].value("perimeter.dev/workspace-idle-since", "");
  EXPECT_EQ(idle_since, format_rfc3339_micros(clock_.wall_now()));

  clock_.advance(seconds(3599));
  figures = survey();
  EXPECT_TRUE(stored().has_value());
  ASSERT_TRUE(figures.next_check.has_value());
  EXPECT_LE(*figures.next_check, seconds(60));

  clock_.advance(seconds(1));
  survey();
  EXPECT_FALSE(stored().has_value());
  EXPECT_EQ(deleted("retention"), 1);
  ASSERT_FALSE(events_.empty());
  EXPECT_THAT(events_.back(), ::testing::HasSubstr("Normal WorkspaceDeleted"));
  const auto requests = server_.requests();
  EXPECT_THAT(requests.back(), ::testing::HasSubstr("DELETE"));
}

// The delete carries the uid and resourceVersion the cache had: a new item that recorded itself
// on the claim after the cache was read wins, and the claim stays for its pod.
TEST_F(WorkspaceRetentionTest, AClaimANewItemStampedAfterTheCacheWasReadStays) {
  item_claims_workspace();
  clock_.advance(minutes(3));
  survey();  // stamped idle
  refresh_cache();
  clock_.advance(seconds(3600));
  // The user's next message: its claim records itself on the workspace, and the cache has not
  // seen that write yet.
  workspaces_.ensure_claim(
      build_workspace_claim(env_, kSession, format_rfc3339_micros(clock_.wall_now())));
  survey();
  EXPECT_TRUE(stored().has_value()) << "retention deleted a claim a new item is about to mount";
  EXPECT_EQ(deleted("retention"), 0);
  // Without that write, the same pass deletes it: the precondition is what saved it.
  refresh_cache();
  clock_.advance(minutes(3));
  survey();  // stamped idle again
  refresh_cache();
  clock_.advance(seconds(3600));
  survey();
  EXPECT_FALSE(stored().has_value());
}

TEST_F(WorkspaceRetentionTest, AClaimWhoseSessionIsTerminatedGoesWithoutWaitingForRetention) {
  item_claims_workspace();
  clock_.advance(minutes(3));
  survey(SessionFate::kTerminated);  // stamped idle first
  refresh_cache();
  survey(SessionFate::kLive);
  EXPECT_TRUE(stored().has_value());
  clock_.advance(seconds(30));
  asked_.clear();
  survey(SessionFate::kTerminated);
  EXPECT_TRUE(asked_.empty()) << "the API is asked at most once a minute per claim";
  clock_.advance(seconds(30));
  survey(SessionFate::kTerminated);
  EXPECT_EQ(asked_, std::vector<std::string>{kSession});
  EXPECT_FALSE(stored().has_value());
  EXPECT_EQ(deleted("terminated"), 1);
  EXPECT_THAT(events_.back(), ::testing::HasSubstr("the session is terminated"));
}

TEST_F(WorkspaceRetentionTest, AnUnknownAnswerKeepsTheClaim) {
  item_claims_workspace();
  clock_.advance(minutes(3));
  survey();
  refresh_cache();
  clock_.advance(minutes(2));
  survey(SessionFate::kUnknown);
  EXPECT_TRUE(stored().has_value());
}

TEST_F(WorkspaceRetentionTest, AClaimALivePodOrAWaitingItemUsesIsNeverIdle) {
  item_claims_workspace();
  json pod = build_runner_pod(env_, {"work_1", kSession, "", ""});
  pod["metadata"]["uid"] = "pod-uid";
  pod["status"] = {{"phase", "Running"}};
  trim_runner_pod(pod);
  pods_.upsert(std::make_shared<const json>(pod));
  clock_.advance(seconds(7200));
  auto figures = survey(SessionFate::kTerminated);
  EXPECT_EQ(figures.in_use, 1u);
  EXPECT_TRUE(asked_.empty());
  EXPECT_FALSE(
      (*stored())["metadata"]["annotations"].contains("perimeter.dev/workspace-idle-since"));

  pod["status"] = {{"phase", "Succeeded"}};
  pods_.upsert(std::make_shared<const json>(pod));
  // The pod ended, and the session's next item waits in the poller for its turn.
  figures = survey(SessionFate::kTerminated, {kSession});
  EXPECT_EQ(figures.in_use, 1u);
  EXPECT_TRUE(stored().has_value());
  figures = survey(SessionFate::kLive);
  EXPECT_EQ(figures.idle, 1u);
}

// The two minutes' grace after a stamp is for a pod the cache has not shown yet; once the cache
// shows that item's pod finished, the claim is idle at once (a terminated session's claim goes
// without waiting for the grace).
TEST_F(WorkspaceRetentionTest, TheCachedPodOfTheStampingItemEndsItsGrace) {
  const std::string claimed_at = format_rfc3339_micros(clock_.wall_now());
  workspaces_.ensure_claim(build_workspace_claim(env_, kSession, claimed_at));
  bind();
  json pod = build_runner_pod(env_, {"work_1", kSession, "", claimed_at});
  pod["metadata"]["uid"] = "pod-uid";
  pod["status"] = {{"phase", "Succeeded"}};
  trim_runner_pod(pod);
  pods_.upsert(std::make_shared<const json>(pod));
  clock_.advance(seconds(5));
  EXPECT_EQ(survey().idle, 1u);
  refresh_cache();
  survey(SessionFate::kTerminated);
  EXPECT_FALSE(stored().has_value());
}

TEST_F(WorkspaceRetentionTest, AClaimThatDoesNotBindIsWarnedOfOnce) {
  workspaces_.ensure_claim(
      build_workspace_claim(env_, kSession, format_rfc3339_micros(clock_.wall_now())));
  refresh_cache();
  auto figures = survey();
  EXPECT_EQ(figures.pending, 1u);
  EXPECT_TRUE(events_.empty());
  clock_.advance(seconds(31));
  survey();
  survey();
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_THAT(events_[0], ::testing::HasSubstr("Warning WorkspaceNotBound"));
  EXPECT_THAT(events_[0], ::testing::HasSubstr(workspace_claim_name(kSession)));
}

// whenEnvironmentDeleted is kept on existing claims as the spec changes, as StatefulSet keeps
// its claims' owner references with its persistentVolumeClaimRetentionPolicy.
TEST_F(WorkspaceRetentionTest, TheClaimsOwnerFollowsWhenEnvironmentDeleted) {
  item_claims_workspace();
  ASSERT_EQ((*stored())["metadata"]["ownerReferences"].size(), 1u);
  env_.runner.workspace_claim->delete_with_environment = false;
  survey();
  EXPECT_TRUE((*stored())["metadata"].value("ownerReferences", json::array()).empty());
  refresh_cache();
  env_.runner.workspace_claim->delete_with_environment = true;
  survey();
  ASSERT_EQ((*stored())["metadata"]["ownerReferences"].size(), 1u);
  EXPECT_EQ((*stored())["metadata"]["ownerReferences"][0]["uid"], "uid-env");
}

}  // namespace
}  // namespace perimeter::agentenvironment
