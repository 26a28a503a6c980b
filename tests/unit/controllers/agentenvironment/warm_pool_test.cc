// The warm pool's rule (docs/warm-pool.md, "The pool"), the pod states it reads from the cache,
// what it remembers while the cache lags, and spec.warmPool as the operator reads it.
#include "controllers/agentenvironment/warm_pool.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "controllers/agentenvironment/runner_naming.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

UnassignedWarmPod warm(const std::string& name, WarmPodState state, const std::string& created) {
  return {name, "uid-" + name, "rv-" + name, created, state};
}

std::vector<std::string> names(const std::vector<UnassignedWarmPod>& pods) {
  std::vector<std::string> out;
  for (const auto& pod : pods) out.push_back(pod.name);
  return out;
}

WarmPoolInputs pool(int min_ready, int max_ready, int max_sessions = 100) {
  WarmPoolInputs in;
  in.spec = {min_ready, max_ready};
  in.max_concurrent_sessions = max_sessions;
  return in;
}

TEST(WarmPoolPlan, AnEmptyPoolIsFilledToMinReady) {
  const auto plan = plan_warm_pool(pool(3, 10));
  EXPECT_EQ(plan.target, 3u);
  EXPECT_EQ(plan.create, 3u);
  EXPECT_TRUE(plan.remove.empty());
  EXPECT_FALSE(plan.held_by_session_limit);
}

TEST(WarmPoolPlan, StartingPodsCountSoAFillingPoolCreatesNoMore) {
  auto in = pool(3, 10);
  in.pods = {warm("a", WarmPodState::kReady, "2026-12-01T10:00:00Z"),
             warm("b", WarmPodState::kStarting, "2026-12-01T10:00:01Z"),
             warm("c", WarmPodState::kStarting, "2026-12-01T10:00:02Z")};
  in.unfinished_runner_pods = 3;
  const auto plan = plan_warm_pool(in);
  EXPECT_EQ(plan.create, 0u);
  EXPECT_EQ(plan.ready, 1u);
  EXPECT_EQ(plan.starting, 2u);
  EXPECT_TRUE(plan.remove.empty());
}

TEST(WarmPoolPlan, ThePoolGrowsWithTheClaimsOfTheWindowUpToMaxReady) {
  auto in = pool(2, 5);
  in.recent_claims = 2;
  EXPECT_EQ(plan_warm_pool(in).target, 4u);
  in.recent_claims = 40;
  EXPECT_EQ(plan_warm_pool(in).target, 5u);
  EXPECT_EQ(plan_warm_pool(in).create, 5u);
}

TEST(WarmPoolPlan, ANewWarmPodNeedsAFreeSessionSlot) {
  // Eight sessions run and one warm pod waits: of ten slots one is left, so one more is made.
  auto in = pool(4, 10, 10);
  in.pods = {warm("a", WarmPodState::kReady, "2026-12-01T10:00:00Z")};
  in.unfinished_runner_pods = 9;
  auto plan = plan_warm_pool(in);
  EXPECT_EQ(plan.target, 4u);
  EXPECT_EQ(plan.create, 1u);
  EXPECT_TRUE(plan.held_by_session_limit);
  // At the limit nothing is made, and the warm pod that exists stays: a claim may still use it.
  in.unfinished_runner_pods = 10;
  plan = plan_warm_pool(in);
  EXPECT_EQ(plan.create, 0u);
  EXPECT_TRUE(plan.remove.empty());
  EXPECT_TRUE(plan.held_by_session_limit);
}

TEST(WarmPoolPlan, TheSurplusGoesStartingFirstThenTheNewestReady) {
  auto in = pool(1, 1);
  in.pods = {warm("old-ready", WarmPodState::kReady, "2026-12-01T10:00:00Z"),
             warm("new-ready", WarmPodState::kReady, "2026-12-01T10:05:00Z"),
             warm("mid-ready", WarmPodState::kReady, "2026-12-01T10:02:00Z"),
             warm("starting", WarmPodState::kStarting, "2026-12-01T09:00:00Z")};
  in.unfinished_runner_pods = 4;
  const auto plan = plan_warm_pool(in);
  EXPECT_EQ(plan.create, 0u);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"starting", "new-ready", "mid-ready"}));
}

TEST(WarmPoolPlan, AFinishedPodIsAlwaysRemovedAndAPodBeingDeletedIsLeftAlone) {
  auto in = pool(2, 2);
  in.pods = {warm("done", WarmPodState::kFinished, "2026-12-01T10:00:00Z"),
             warm("going", WarmPodState::kDeleting, "2026-12-01T10:00:00Z"),
             warm("a", WarmPodState::kReady, "2026-12-01T10:00:00Z")};
  in.unfinished_runner_pods = 2;  // "going" still runs
  const auto plan = plan_warm_pool(in);
  EXPECT_EQ(names(plan.remove), std::vector<std::string>{"done"});
  EXPECT_EQ(plan.ready, 1u);
  EXPECT_EQ(plan.create, 1u) << "the finished and the deleted pod are no longer the pool's";
}

// After the runner template changed, a pod of the earlier one is no warm pod of this spec: it is
// removed (a claim assigns none of them) and not counted, so its replacement is made at once.
TEST(WarmPoolPlan, PodsOfAnEarlierTemplateAreRemovedAndReplaced) {
  auto in = pool(2, 2);
  in.template_hash = "new";
  auto old_ready = warm("old-ready", WarmPodState::kReady, "2026-12-01T10:00:00Z");
  auto old_starting = warm("old-starting", WarmPodState::kStarting, "2026-12-01T10:00:01Z");
  auto current = warm("current", WarmPodState::kReady, "2026-12-01T10:00:02Z");
  old_ready.template_hash = old_starting.template_hash = "old";
  current.template_hash = "new";
  UnassignedWarmPod just_made;  // not cached yet: made by this operator, of a recent template
  just_made.name = "just-made";
  in.pods = {old_ready, old_starting, current, just_made};
  in.unfinished_runner_pods = 4;
  const auto plan = plan_warm_pool(in);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"old-ready", "old-starting"}));
  EXPECT_EQ(plan.outdated, 2u);
  EXPECT_EQ(plan.ready, 1u);
  EXPECT_EQ(plan.starting, 1u);
  EXPECT_EQ(plan.create, 0u) << "the current pod and the one just made fill the target";
}

TEST(WarmPoolPlan, ASuspendedEnvironmentKeepsNoWarmPod) {
  auto in = pool(2, 4);
  in.suspended = true;
  in.pods = {warm("a", WarmPodState::kReady, "2026-12-01T10:00:00Z")};
  in.unfinished_runner_pods = 1;
  const auto plan = plan_warm_pool(in);
  EXPECT_EQ(plan.target, 0u);
  EXPECT_EQ(plan.create, 0u);
  EXPECT_EQ(names(plan.remove), std::vector<std::string>{"a"});
}

TEST(WarmPoolPlan, APodTheCacheDoesNotShowIsNotRemoved) {
  auto in = pool(0, 0);
  UnassignedWarmPod pending;
  pending.name = "just-made";
  in.pods = {pending};
  EXPECT_TRUE(plan_warm_pool(in).remove.empty()) << "no uid: no exact delete";
}

json cached_warm_pod(const std::string& phase, const json& container_state, bool deleting = false) {
  json pod = {
      {"metadata",
       {{"name", "warm-a"},
        {"labels", {{std::string(kLabelWarm), "true"}}},
        {"annotations", json::object()}}},
      {"status",
       {{"phase", phase},
        {"containerStatuses", json::array({{{"name", "runner"}, {"state", container_state}}})}}}};
  if (deleting) pod["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z";
  return pod;
}

TEST(WarmPodState, ReadyIsRunningWithTheRunnerContainerRunning) {
  const json running = {{"running", {{"startedAt", "2026-12-01T10:00:00Z"}}}};
  EXPECT_EQ(warm_pod_state(cached_warm_pod("Running", running)), WarmPodState::kReady);
  EXPECT_EQ(warm_pod_state(cached_warm_pod("Running", {{"waiting", json::object()}})),
            WarmPodState::kStarting);
  EXPECT_EQ(warm_pod_state(cached_warm_pod("Pending", json::object())), WarmPodState::kStarting);
  EXPECT_EQ(warm_pod_state(cached_warm_pod("Running", running, true)), WarmPodState::kDeleting);
  EXPECT_EQ(warm_pod_state(cached_warm_pod("Succeeded", json::object(), true)),
            WarmPodState::kFinished);
  EXPECT_EQ(warm_pod_state(cached_warm_pod("Failed", json::object())), WarmPodState::kFinished);
}

TEST(WarmPodState, AnAssignedWarmPodIsASessionsPod) {
  json pod = cached_warm_pod("Running", json::object());
  EXPECT_TRUE(unassigned_warm_pod(pod));
  pod["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)] = "work_1";
  EXPECT_FALSE(unassigned_warm_pod(pod));
  pod["metadata"]["annotations"] = json::object();
  pod["metadata"]["labels"] = {{std::string(kLabelWorkId), "work_1"}};
  EXPECT_FALSE(unassigned_warm_pod(pod)) << "a cold pod";
}

TEST(WarmPoolExpectations, ACreatedPodCountsUntilTheCacheShowsIt) {
  WarmPoolExpectations expectations(std::chrono::seconds(120));
  const Clock::TimePoint t0{};
  expectations.created("a/env", "warm-1", t0);
  bool cached = false;
  const auto in_cache = [&](const std::string&) { return cached; };

  auto in = pool(1, 1);
  expectations.apply("a/env", t0 + std::chrono::seconds(1), in_cache, in);
  EXPECT_EQ(plan_warm_pool(in).create, 0u) << "the pod made a moment ago would be made twice";
  EXPECT_EQ(in.unfinished_runner_pods, 1u);

  cached = true;  // shown (assigned already, say, so not among the unassigned pods)
  in = pool(1, 1);
  expectations.apply("a/env", t0 + std::chrono::seconds(2), in_cache, in);
  EXPECT_EQ(plan_warm_pool(in).create, 1u);

  // A create whose event never came is forgotten after the horizon.
  expectations.created("a/env", "warm-2", t0);
  cached = false;
  in = pool(1, 1);
  expectations.apply("a/env", t0 + std::chrono::seconds(121), in_cache, in);
  EXPECT_EQ(plan_warm_pool(in).create, 1u);
}

TEST(WarmPoolExpectations, APodWhoseRemovalWasAskedIsNotRemovedTwiceOrCounted) {
  WarmPoolExpectations expectations;
  const Clock::TimePoint t0{};
  const auto never = [](const std::string&) { return false; };
  expectations.removed("a/env", "uid-a", t0);
  auto in = pool(0, 0);
  in.pods = {warm("a", WarmPodState::kReady, "2026-12-01T10:00:00Z")};
  expectations.apply("a/env", t0, never, in);
  const auto plan = plan_warm_pool(in);
  EXPECT_TRUE(plan.remove.empty());
  EXPECT_EQ(plan.ready, 0u);
  // Another environment's key is its own.
  in = pool(0, 0);
  in.pods = {warm("a", WarmPodState::kReady, "2026-12-01T10:00:00Z")};
  expectations.apply("b/env", t0, never, in);
  EXPECT_EQ(names(plan_warm_pool(in).remove), std::vector<std::string>{"a"});
}

TEST(RecentClaims, AClaimCountsForTheWindowAfterItsPodIsGone) {
  RecentClaims claims(std::chrono::seconds(60));
  const RecentClaims::WallTime t0{std::chrono::hours(1000)};
  EXPECT_EQ(claims.update("a/env", {{"uid-1", t0}, {"uid-2", t0 + std::chrono::seconds(10)}},
                          t0 + std::chrono::seconds(10)),
            2u);
  // Retention removed both pods: nothing is seen now, the claims still count.
  EXPECT_EQ(claims.update("a/env", {}, t0 + std::chrono::seconds(30)), 2u);
  EXPECT_EQ(claims.next_expiry("a/env", t0 + std::chrono::seconds(30)),
            std::chrono::system_clock::duration(std::chrono::seconds(30)));
  EXPECT_EQ(claims.update("a/env", {{"uid-1", t0}}, t0 + std::chrono::seconds(61)), 1u)
      << "a claim older than the window no longer counts, even while its pod is cached";
  EXPECT_EQ(claims.update("b/env", {}, t0), 0u) << "each environment its own";
  EXPECT_EQ(claims.update("a/env", {}, t0 + std::chrono::seconds(71)), 0u);
  EXPECT_FALSE(claims.next_expiry("a/env", t0 + std::chrono::seconds(71)).has_value());
}

json environment(const json& warm_pool) {
  json object = {{"metadata", {{"name", "payments"}, {"namespace", "a"}}},
                 {"spec",
                  {{"environmentId", "env_1"},
                   {"environmentKeySecretRef", {{"name", "key"}}},
                   {"runner", {{"image", "runner:1"}}}}}};
  if (!warm_pool.is_null()) object["spec"]["warmPool"] = warm_pool;
  return object;
}

TEST(WarmPoolSpec, IsReadAsWrittenAndAbsentMeansNoPool) {
  EXPECT_FALSE(parse_agent_environment(environment(json())).warm_pool.has_value());
  const auto env = parse_agent_environment(environment({{"minReady", 2}, {"maxReady", 8}}));
  ASSERT_TRUE(env.warm_pool.has_value());
  EXPECT_EQ(env.warm_pool->min_ready, 2);
  EXPECT_EQ(env.warm_pool->max_ready, 8);
}

TEST(WarmPoolSpec, AnObjectTheSchemaWouldRefuseIsRefusedByTheOperatorToo) {
  for (const json& bad : {json{{"minReady", 3}, {"maxReady", 2}}, json{{"maxReady", 1001}},
                          json{{"minReady", -1}, {"maxReady", 1}}}) {
    SCOPED_TRACE(bad.dump());
    EXPECT_THROW(parse_agent_environment(environment(bad)), SpecError);
  }
}

}  // namespace
}  // namespace perimeter::agentenvironment
