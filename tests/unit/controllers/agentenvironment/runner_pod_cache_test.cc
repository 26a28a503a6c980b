// The runner pod as the AgentEnvironment controller caches it: everything the controller reads
// survives the trim, and most of the object does not.
#include "controllers/agentenvironment/runner_pod_cache.h"

#include <gtest/gtest.h>

#include "agentenvironment/warm_pods.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/warm_assignment_service.h"
#include "core/time_format.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

json a_failed_runner_pod_as_the_apiserver_returns_it() {
  AgentEnvironment env;
  env.name = "payments";
  env.namespace_ = "agents";
  env.uid = "uid-env";
  env.environment_id = "env_1";
  env.runner.image = "perimeter-runner:1";
  json pod = build_runner_pod(env, {"work_1", "sesn_1", "secret", "2026-11-30T08:00:00.000000Z"});
  // As an earlier version of the operator made it: held by the gate until its item's ack.
  pod["spec"]["schedulingGates"] =
      json::array({{{"name", std::string(kSchedulingGateAcknowledged)}}});
  pod["metadata"]["uid"] = "uid-pod";
  pod["metadata"]["resourceVersion"] = "4711";
  pod["metadata"]["creationTimestamp"] = "2026-11-30T08:00:00Z";
  pod["metadata"]["managedFields"] = json::array(
      {{{"manager", "perimeter-operator"}, {"operation", "Update"}, {"fieldsV1", pod["spec"]}}});
  pod["status"] = {
      {"phase", "Failed"},
      {"conditions", json::array({{{"type", "Ready"}, {"status", "False"}}})},
      {"podIP", "10.0.0.7"},
      {"containerStatuses", json::array({{{"name", "runner"},
                                          {"image", "perimeter-runner:1"},
                                          {"imageID", "sha256:0123"},
                                          {"state",
                                           {{"terminated",
                                             {{"reason", "Error"},
                                              {"exitCode", 3},
                                              {"startedAt", "2026-11-30T08:00:01Z"},
                                              {"finishedAt", "2026-11-30T08:00:09Z"},
                                              {"containerID", "containerd://abc"}}}}}}})}};
  return pod;
}

TEST(RunnerPodCacheTest, KeepsWhatTheControllerReads) {
  const json full = a_failed_runner_pod_as_the_apiserver_returns_it();
  json trimmed = full;
  trim_runner_pod(trimmed);
  for (const char* key : {"name", "namespace", "uid", "resourceVersion", "creationTimestamp"}) {
    EXPECT_EQ(trimmed["metadata"][key], full["metadata"][key]) << key;
  }
  for (const char* label :
       {"perimeter.dev/environment", "perimeter.dev/work-id", "perimeter.dev/session-id"}) {
    EXPECT_EQ(trimmed["metadata"]["labels"][label], full["metadata"]["labels"][label]) << label;
  }
  EXPECT_EQ(trimmed["metadata"]["annotations"]["perimeter.dev/work-id"], "work_1");
  EXPECT_EQ(trimmed["metadata"]["annotations"]["perimeter.dev/claimed-at"],
            "2026-11-30T08:00:00.000000Z");
  const json owner = trimmed["metadata"]["ownerReferences"][0];
  EXPECT_EQ(owner["kind"], "AgentEnvironment");
  EXPECT_EQ(owner["uid"], "uid-env");
  EXPECT_EQ(owner["controller"], true);
  EXPECT_EQ(trimmed["spec"]["schedulingGates"], full["spec"]["schedulingGates"]);
  ASSERT_EQ(trimmed["spec"]["schedulingGates"].size(), 1u);
  EXPECT_EQ(trimmed["status"]["phase"], "Failed");
  EXPECT_EQ(trimmed["status"]["containerStatuses"][0]["state"]["terminated"],
            json({{"reason", "Error"}, {"exitCode", 3}, {"startedAt", "2026-11-30T08:00:01Z"}}));
  EXPECT_FALSE(trimmed["metadata"].contains("managedFields"));
  EXPECT_FALSE(trimmed["spec"].contains("containers"));
  EXPECT_TRUE(pod_finished(trimmed));
  EXPECT_LT(trimmed.dump().size() * 3, full.dump().size());
}

TEST(RunnerPodCacheTest, TheCensusOfTrimmedPodsIsTheCensusOfFullOnes) {
  runtime::Store full_store, trimmed_store;
  json gated = a_failed_runner_pod_as_the_apiserver_returns_it();
  gated["status"] = {{"phase", "Pending"}};
  json finished = a_failed_runner_pod_as_the_apiserver_returns_it();
  finished["metadata"]["name"] = "run-2";
  finished["spec"].erase("schedulingGates");
  for (const json& pod : {gated, finished}) {
    full_store.upsert(std::make_shared<const json>(pod));
    json trimmed = pod;
    trim_runner_pod(trimmed);
    trimmed_store.upsert(std::make_shared<const json>(trimmed));
  }
  StoreRunnerPodCensus from_full(full_store), from_trimmed(trimmed_store);
  EXPECT_EQ(from_full.unfinished("agents", "payments"), 1u);
  EXPECT_EQ(from_trimmed.unfinished("agents", "payments"), 1u);
  EXPECT_EQ(from_trimmed.gated("agents", "payments"), from_full.gated("agents", "payments"));
  EXPECT_EQ(from_full.gated("agents", "payments").size(), 1u);
}

TEST(RunnerPodCacheTest, DecodingThroughTheFilterThenTrimmingIsTrimmingTheWholePod) {
  json gated = a_failed_runner_pod_as_the_apiserver_returns_it();
  gated["metadata"]["labels"]["team"] = "payments";
  gated["metadata"]["annotations"]["note"] = "kept by nobody";
  gated["metadata"]["deletionTimestamp"] = "2026-11-30T08:01:00Z";
  gated["status"]["reason"] = "Evicted";
  json running = a_failed_runner_pod_as_the_apiserver_returns_it();
  running["spec"].erase("schedulingGates");
  running["status"] = {
      {"phase", "Running"},
      {"containerStatuses",
       json::array({{{"name", "runner"}, {"state", {{"running", {{"startedAt", "x"}}}}}}})}};
  const auto filter = runner_pod_decode_filter();
  for (const json& pod : {a_failed_runner_pod_as_the_apiserver_returns_it(), gated, running}) {
    json filtered = kube::parse_filtered(pod.dump(), *filter);
    EXPECT_FALSE(filtered["metadata"].contains("managedFields"));
    EXPECT_FALSE(filtered["spec"].contains("containers"));
    trim_runner_pod(filtered);
    json trimmed = pod;
    trim_runner_pod(trimmed);
    EXPECT_EQ(filtered, trimmed) << pod.dump();
  }
}

// The assignment service finds a warm pod by its token's hash in the informer's cache, and reads
// the assignment there: a cache that trimmed those annotations away would answer every warm
// runner 401 and never hand out its item.
TEST(RunnerPodCacheTest, AWarmPodKeepsItsTokenHashAndItsAssignment) {
  AgentEnvironment env;
  env.name = "payments";
  env.namespace_ = "agents";
  env.uid = "uid-env";
  env.environment_id = "env_1";
  env.runner.image = "perimeter-runner:1";
  json pod =
      build_warm_runner_pod(env, "warm-1", std::string(64, 'a'),
                            {"https://perimeter-assignment.perimeter-system.svc:8443", "CA"});
  pod["metadata"]["uid"] = "uid-warm";
  pod["metadata"]["resourceVersion"] = "12";
  pod["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)] = "work_1";
  pod["metadata"]["annotations"][std::string(kAnnotationAssignedSessionId)] = "sesn_1";
  pod["metadata"]["annotations"][std::string(kAnnotationAssignedSecret)] = "run-work-1";
  pod["metadata"]["annotations"][std::string(kAnnotationAssignmentConfirmedAt)] =
      "2026-12-01T20:00:00Z";
  pod["metadata"]["annotations"][std::string(kAnnotationAssignmentNonceSha256)] =
      std::string(64, 'b');
  pod["status"] = {{"phase", "Running"}};

  json trimmed = kube::parse_filtered(pod.dump(), *runner_pod_decode_filter());
  trim_runner_pod(trimmed);
  const std::optional<WarmPod> from_full = read_warm_pod(pod);
  const std::optional<WarmPod> from_cache = read_warm_pod(trimmed);
  ASSERT_TRUE(from_full.has_value());
  ASSERT_TRUE(from_cache.has_value()) << trimmed.dump();
  EXPECT_EQ(from_cache->token_sha256, std::string(64, 'a'));
  EXPECT_EQ(from_cache->name, "warm-1");
  EXPECT_EQ(from_cache->resource_version, "12");
  ASSERT_TRUE(from_cache->assignment.has_value());
  EXPECT_EQ(from_cache->assignment->work_id, "work_1");
  EXPECT_EQ(from_cache->assignment->session_id, "sesn_1");
  EXPECT_EQ(from_cache->assignment->secret_name, "run-work-1");
  EXPECT_EQ(from_cache->confirmed, from_full->confirmed);
  EXPECT_TRUE(from_cache->confirmed);
  // Whom it was delivered to: a runner asking again after a lost answer is told apart from a
  // replay by the cache alone.
  EXPECT_EQ(from_cache->delivery_nonce_sha256, std::string(64, 'b'));
  // The template's digest, which the pool and the claims compare with the spec's: a cache
  // without it would replace every warm pod on every pass.
  const std::string digest = pod["metadata"]["annotations"][std::string(kAnnotationWarmTemplate)];
  EXPECT_FALSE(digest.empty());
  EXPECT_EQ(trimmed["metadata"]["annotations"].value(std::string(kAnnotationWarmTemplate), ""),
            digest);
}

// The claim's assignment gives a warm pod's session its deadline from the pod's age (docs/
// warm-pool.md "The deadline"): the cache keeps when the pod started, and the deadline a warm pod
// an earlier version made carries, and the census hands both to the claim.
TEST(RunnerPodCacheTest, AWarmPodKeepsWhenItStartedAndItsDeadline) {
  json pod =
      build_warm_runner_pod(warm_test::warm_pool_environment(), "warm-1", std::string(64, 'a'),
                            {"https://perimeter-assignment.perimeter-system.svc:8443", "CA"});
  pod["metadata"]["uid"] = "uid-warm";
  pod["metadata"]["resourceVersion"] = "12";
  pod["metadata"]["creationTimestamp"] = "2026-12-01T20:00:00Z";
  pod["spec"]["activeDeadlineSeconds"] = 3600;
  pod["status"] = {
      {"phase", "Running"},
      {"startTime", "2026-12-01T20:00:03Z"},
      {"containerStatuses",
       json::array({{{"name", "runner"},
                     {"state", {{"running", {{"startedAt", "2026-12-01T20:00:04Z"}}}}}}})}};

  json trimmed = kube::parse_filtered(pod.dump(), *runner_pod_decode_filter());
  trim_runner_pod(trimmed);
  EXPECT_EQ(trimmed["status"]["startTime"], "2026-12-01T20:00:03Z") << trimmed.dump();
  EXPECT_EQ(trimmed["spec"]["activeDeadlineSeconds"], 3600) << trimmed.dump();

  runtime::Store store;
  StoreRunnerPodCensus census(store);
  store.upsert(std::make_shared<const json>(trimmed));
  const auto ready = census.ready_warm_pods("a", "payments");
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].started_at, parse_rfc3339("2026-12-01T20:00:03Z"));
  EXPECT_EQ(ready[0].active_deadline_seconds, std::optional<std::int64_t>(3600));

  // Before the kubelet reports a start, its creation is the start: never later than the real one.
  json unstarted = trimmed;
  unstarted["status"].erase("startTime");
  unstarted["spec"].erase("activeDeadlineSeconds");
  store.upsert(std::make_shared<const json>(unstarted));
  const auto without = census.ready_warm_pods("a", "payments");
  ASSERT_EQ(without.size(), 1u);
  EXPECT_EQ(without[0].started_at, parse_rfc3339("2026-12-01T20:00:00Z"));
  EXPECT_FALSE(without[0].active_deadline_seconds.has_value());
}

}  // namespace
}  // namespace perimeter::agentenvironment
