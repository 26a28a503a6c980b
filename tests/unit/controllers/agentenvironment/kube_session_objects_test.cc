// The session objects' writer against the in-memory apiserver: removing a finished session never
// removes what replaced it (a new pod or Secret of the same name, for a new attempt at the item).
#include "controllers/agentenvironment/kube_session_objects.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agentenvironment/warm_pods.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/fake_clock.h"
#include "core/time_format.h"
#include "kube/fake_api_server.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

class KubeSessionObjectsTest : public ::testing::Test {
 protected:
  json seed_pod(const std::string& work_id, const std::string& phase) {
    return server_.seed("/api/v1/namespaces/a/pods",
                        {{"apiVersion", "v1"},
                         {"kind", "Pod"},
                         {"metadata",
                          {{"name", "run-1"},
                           {"namespace", "a"},
                           {"annotations", {{std::string(kAnnotationWorkId), work_id}}}}},
                         {"status", {{"phase", phase}}}});
  }
  json seed_secret(const std::string& work_id) {
    return server_.seed("/api/v1/namespaces/a/secrets",
                        {{"apiVersion", "v1"},
                         {"kind", "Secret"},
                         {"metadata",
                          {{"name", "run-1"},
                           {"namespace", "a"},
                           {"annotations", {{std::string(kAnnotationWorkId), work_id}}}}}});
  }
  static AgentEnvironment environment() {
    AgentEnvironment env;
    env.name = "payments";
    env.namespace_ = "a";
    env.uid = "uid-env";
    env.environment_id = "env_1";
    env.runner.image = "runner:1";
    return env;
  }
  bool exists(const std::string& kind) {
    return server_.object_at("/api/v1/namespaces/a/" + kind + "/run-1").has_value();
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  kube::ResourceClient secrets_{server_, kube::resources::secrets(), metrics_};
  kube::ResourceClient pods_{server_, kube::resources::pods(), metrics_};
  KubeSessionObjectWriter writer_{secrets_, pods_};
};

TEST_F(KubeSessionObjectsTest, RemovingAFinishedSessionRemovesItsPodAndSecret) {
  const json pod = seed_pod("work_1", "Succeeded");
  seed_secret("work_1");
  writer_.remove_finished(pod);
  EXPECT_FALSE(exists("pods"));
  EXPECT_FALSE(exists("secrets"));
}

TEST_F(KubeSessionObjectsTest, APodThatReplacedTheFinishedOneIsNotRemoved) {
  // The cache still shows the finished pod; the cluster already holds its replacement (same name,
  // another uid), created for a new attempt at the item.
  const json finished = seed_pod("work_1", "Succeeded");
  pods_.remove("a", "run-1");
  seed_pod("work_1", "Running");
  seed_secret("work_1");
  writer_.remove_finished(finished);
  ASSERT_TRUE(exists("pods"));
  EXPECT_EQ((*server_.object_at("/api/v1/namespaces/a/pods/run-1"))["status"]["phase"], "Running");
}

TEST_F(KubeSessionObjectsTest, ASecretOfAnotherWorkItemIsNotRemoved) {
  const json pod = seed_pod("work_1", "Failed");
  seed_secret("work_2");  // a name collision: never the finished session's
  writer_.remove_finished(pod);
  EXPECT_FALSE(exists("pods"));
  EXPECT_TRUE(exists("secrets"));
}

// A crash (or a failed request) between the two deletes must not leave the Secret without its
// pod: the next leader's cache no longer shows the pod, so nothing would remove the Secret but
// the orphan sweep, minutes later. Whatever request fails, what is left is either both or the
// finished pod alone, and the next pass (the same cached pod) removes the rest.
TEST_F(KubeSessionObjectsTest, NoFailedStepLeavesTheSecretWithoutItsPod) {
  for (const auto& [method, kind] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/pods"}, {"DELETE", "/pods"}, {"GET", "/secrets"}, {"DELETE", "/secrets"}}) {
    SCOPED_TRACE(method + " " + kind + " fails");
    if (exists("pods")) pods_.remove("a", "run-1");
    if (exists("secrets")) secrets_.remove("a", "run-1");
    const json pod = seed_pod("work_1", "Succeeded");
    seed_secret("work_1");
    server_.fail_next(method, kind, 500,
                      R"({"kind":"Status","code":500,"reason":"InternalError","message":"x"})");
    try {
      writer_.remove_finished(pod);
    } catch (const std::exception&) {
      // the step failed; the next pass tries again
    }
    EXPECT_FALSE(exists("secrets") && !exists("pods")) << "the Secret outlived its pod";
    writer_.remove_finished(pod);
    EXPECT_FALSE(exists("pods"));
    EXPECT_FALSE(exists("secrets"));
  }
}

TEST_F(KubeSessionObjectsTest, AlreadyGoneIsFine) {
  const json pod = seed_pod("work_1", "Succeeded");
  pods_.remove("a", "run-1");
  EXPECT_NO_THROW(writer_.remove_finished(pod));
}

// Issue 15, item 11: what the apiserver refuses as built is told apart from what may pass.
TEST_F(KubeSessionObjectsTest, APodRefusedAsBuiltIsRefusedButA403ThatMayPassIsNot) {
  const json pod = {{"apiVersion", "v1"},
                    {"kind", "Pod"},
                    {"metadata",
                     {{"name", "run-1"},
                      {"namespace", "a"},
                      {"annotations", {{std::string(kAnnotationWorkId), "work_1"}}}}}};
  // What ensure_pod makes of the apiserver answering the create with `code` and `message`.
  const auto outcome_of = [&](int code, const std::string& message) {
    server_.fail_next("POST", "/pods", code,
                      json({{"kind", "Status"},
                            {"code", code},
                            {"reason", code == 422 ? "Invalid" : "Forbidden"},
                            {"message", message}})
                          .dump());
    try {
      writer_.ensure_pod(pod);
      return std::string("created");
    } catch (const ObjectRefused&) {
      return std::string("refused");
    } catch (const std::exception&) {
      return std::string("retried");
    }
  };
  EXPECT_EQ(outcome_of(403,
                       "pods \"run-1\" is forbidden: violates PodSecurity "
                       "\"restricted:latest\": privileged"),
            "refused");
  EXPECT_EQ(outcome_of(403,
                       "pods \"run-1\" is forbidden: exceeded quota: sessions, requested: "
                       "pods=1, used: pods=4, limited: pods=4"),
            "retried")
      << "an exceeded quota passes when sessions end; it is not a refusal of the spec";
  // A new namespace's default ServiceAccount comes a moment later: not a refusal either.
  EXPECT_EQ(outcome_of(403,
                       "pods \"run-1\" is forbidden: error looking up service account "
                       "a/default: serviceaccount \"default\" not found"),
            "retried")
      << "the ServiceAccount admission waits for the account; not a refusal";
  EXPECT_EQ(outcome_of(403,
                       "admission webhook \"policy.example.com\" denied the request: images "
                       "must come from registry.example.com"),
            "refused");
  EXPECT_EQ(outcome_of(422, "Pod \"run-1\" is invalid"), "refused");
}

// Issue 15, item 4: two claims of one item overlap when the first is slower than the reclaim
// window; the queue re-issued the item's secret to the second. Whatever order their writes land
// in, the Secret ends with the secret of the later poll, the one the API still honours.
TEST_F(KubeSessionObjectsTest, ASlowerEarlierClaimDoesNotOverwriteTheReissuedSecret) {
  const AgentEnvironment env = environment();
  const ClaimedSession earlier{"work_1", "sesn_1", "first-secret", "2026-11-30T08:00:00.000000Z"};
  const ClaimedSession later{"work_1", "sesn_1", "reissued-secret", "2026-11-30T08:00:06.000000Z"};
  writer_.ensure_secret(build_session_secret(env, later));
  writer_.ensure_secret(build_session_secret(env, earlier));  // the slow claim's write lands last
  const json stored =
      *server_.object_at("/api/v1/namespaces/a/secrets/" + runner_object_name("work_1"));
  EXPECT_EQ(stored["stringData"]["work-secret"], "reissued-secret");
}

TEST_F(KubeSessionObjectsTest, ALaterClaimRewritesTheSecret) {
  const AgentEnvironment env = environment();
  const ClaimedSession earlier{"work_1", "sesn_1", "first-secret", "2026-11-30T08:00:00.000000Z"};
  const ClaimedSession later{"work_1", "sesn_1", "reissued-secret", "2026-11-30T08:00:06.000000Z"};
  writer_.ensure_secret(build_session_secret(env, earlier));
  writer_.ensure_secret(build_session_secret(env, later));
  const json stored =
      *server_.object_at("/api/v1/namespaces/a/secrets/" + runner_object_name("work_1"));
  EXPECT_EQ(stored["stringData"]["work-secret"], "reissued-secret");
}

// The item came back to the queue after its pod finished, and a later claim rewrote the Secret
// and acknowledged the item before making its new pod: retention of the finished pod must not
// take the Secret that pod will use.
TEST_F(KubeSessionObjectsTest, RetentionLeavesTheSecretALaterClaimOfTheItemRewrote) {
  const AgentEnvironment env = environment();
  const ClaimedSession first{"work_1", "sesn_1", "first-secret", "2026-11-30T08:00:00.000000Z"};
  const ClaimedSession again{"work_1", "sesn_1", "second-secret", "2026-11-30T09:00:00.000000Z"};
  json finished = build_runner_pod(env, first);
  finished["status"] = {{"phase", "Failed"}};
  finished = server_.seed("/api/v1/namespaces/a/pods", finished);
  writer_.ensure_secret(build_session_secret(env, first));
  writer_.ensure_secret(build_session_secret(env, again));
  writer_.remove_finished(finished);
  const std::string name = runner_object_name("work_1");
  EXPECT_FALSE(server_.object_at("/api/v1/namespaces/a/pods/" + name).has_value());
  const auto secret = server_.object_at("/api/v1/namespaces/a/secrets/" + name);
  ASSERT_TRUE(secret.has_value()) << "retention removed the Secret of the item's next pod";
  EXPECT_EQ((*secret)["stringData"]["work-secret"], "second-secret");
}

// A pod request whose answer was lost, retried after the pod has run and finished: the finished
// pod is this claim's, and making it again would run the session twice. A pod of an earlier
// claim is replaced.
TEST_F(KubeSessionObjectsTest, AFinishedPodIsReplacedOnlyForALaterClaim) {
  const AgentEnvironment env = environment();
  const ClaimedSession first{"work_1", "sesn_1", "", "2026-11-30T08:00:00.000000Z"};
  const ClaimedSession again{"work_1", "sesn_1", "", "2026-11-30T09:00:00.000000Z"};
  const std::string path = "/api/v1/namespaces/a/pods/" + runner_object_name("work_1");
  json finished = build_runner_pod(env, first);
  finished["status"] = {{"phase", "Succeeded"}};
  const std::string uid = server_.seed("/api/v1/namespaces/a/pods", finished)["metadata"]["uid"];
  EXPECT_FALSE(writer_.ensure_pod(build_runner_pod(env, first)));
  EXPECT_EQ((*server_.object_at(path))["metadata"]["uid"], uid);
  EXPECT_TRUE(writer_.ensure_pod(build_runner_pod(env, again)));
  EXPECT_NE((*server_.object_at(path))["metadata"]["uid"], uid);
}

// The pod of a claim records its Secret as the claim wrote it (uid and resourceVersion), so
// retention deletes exactly that Secret and the pod, and reads neither.
class RecordedSecretRetentionTest : public KubeSessionObjectsTest {
 protected:
  // A claim: its Secret written, then its pod (carrying the record), finished and as cached.
  json claim_and_finish(const ClaimedSession& claim) {
    ClaimedSession recorded = claim;
    const auto written = writer_.ensure_secret(build_session_secret(environment(), recorded));
    EXPECT_TRUE(written.has_value());
    if (written) recorded.secret = *written;
    json pod = build_runner_pod(environment(), recorded);
    pod["status"] = {{"phase", "Succeeded"}};
    return server_.seed("/api/v1/namespaces/a/pods", pod);
  }
  std::optional<json> stored(const std::string& kind) {
    return server_.object_at("/api/v1/namespaces/a/" + kind + "/" + runner_object_name("work_1"));
  }
  std::vector<std::string> requests_since(std::size_t first) {
    const auto all = server_.requests();
    return {all.begin() + static_cast<std::ptrdiff_t>(first), all.end()};
  }

  const ClaimedSession first_{"work_1", "sesn_1", "first-secret", "2026-11-30T08:00:00.000000Z"};
  const ClaimedSession again_{"work_1", "sesn_1", "second-secret", "2026-11-30T09:00:00.000000Z"};
};

TEST_F(RecordedSecretRetentionTest, RemovesThePodAndItsSecretWithTwoDeletesAndNoRead) {
  const json finished = claim_and_finish(first_);
  const std::string recorded = finished["metadata"]["annotations"]["perimeter.dev/secret-version"];
  EXPECT_EQ(recorded, (*stored("secrets"))["metadata"]["uid"].get<std::string>() + "/" +
                          (*stored("secrets"))["metadata"]["resourceVersion"].get<std::string>());
  const std::size_t before = server_.requests().size();
  writer_.remove_finished(finished);
  EXPECT_FALSE(stored("pods").has_value());
  EXPECT_FALSE(stored("secrets").has_value());
  const auto sent = requests_since(before);
  ASSERT_EQ(sent.size(), 2u) << ::testing::PrintToString(sent);
  EXPECT_EQ(sent[0].rfind("DELETE /api/v1/namespaces/a/secrets/", 0), 0u) << sent[0];
  EXPECT_EQ(sent[1].rfind("DELETE /api/v1/namespaces/a/pods/", 0), 0u) << sent[1];
}

// The item came back after this pod finished; a later claim rewrote the Secret and has acked,
// its pod not made yet. The delete by the record is refused, and the read finds the later claim.
TEST_F(RecordedSecretRetentionTest, LeavesTheSecretALaterClaimOfTheItemRewrote) {
  const json finished = claim_and_finish(first_);
  ASSERT_TRUE(writer_.ensure_secret(build_session_secret(environment(), again_)).has_value());
  writer_.remove_finished(finished);
  EXPECT_FALSE(stored("pods").has_value());
  ASSERT_TRUE(stored("secrets").has_value()) << "retention removed the Secret of the next pod";
  EXPECT_EQ((*stored("secrets"))["stringData"]["work-secret"], "second-secret");
}

// The same, with the later claim's pod made already (it replaced the finished one): both stay.
TEST_F(RecordedSecretRetentionTest, LeavesALaterClaimsSecretAndPod) {
  const json finished = claim_and_finish(first_);
  ClaimedSession later = again_;
  later.secret = *writer_.ensure_secret(build_session_secret(environment(), later));
  ASSERT_TRUE(writer_.ensure_pod(build_runner_pod(environment(), later)));
  writer_.remove_finished(finished);
  ASSERT_TRUE(stored("pods").has_value());
  EXPECT_NE((*stored("pods"))["metadata"]["uid"], finished["metadata"]["uid"]);
  ASSERT_TRUE(stored("secrets").has_value());
  EXPECT_EQ((*stored("secrets"))["stringData"]["work-secret"], "second-secret");
}

// Something else edited the Secret since (a label of a policy engine, say): the record no longer
// matches, and the read path still removes what is this claim's.
TEST_F(RecordedSecretRetentionTest, StillRemovesASecretSomeoneElseEditedSince) {
  const json finished = claim_and_finish(first_);
  secrets_.merge_patch("a", runner_object_name("work_1"),
                       {{"metadata", {{"labels", {{"backup.example.com/seen", "true"}}}}}});
  writer_.remove_finished(finished);
  EXPECT_FALSE(stored("pods").has_value());
  EXPECT_FALSE(stored("secrets").has_value());
}

TEST_F(RecordedSecretRetentionTest, NoFailedStepLeavesTheSecretWithoutItsPod) {
  for (const std::string method_and_kind : {"DELETE /secrets", "DELETE /pods"}) {
    SCOPED_TRACE(method_and_kind + " fails");
    if (stored("pods")) pods_.remove("a", runner_object_name("work_1"));
    if (stored("secrets")) secrets_.remove("a", runner_object_name("work_1"));
    const json finished = claim_and_finish(first_);
    const auto space = method_and_kind.find(' ');
    server_.fail_next(method_and_kind.substr(0, space), method_and_kind.substr(space + 1), 500,
                      R"({"kind":"Status","code":500,"reason":"InternalError","message":"x"})");
    EXPECT_ANY_THROW(writer_.remove_finished(finished));
    EXPECT_FALSE(stored("secrets") && !stored("pods")) << "the Secret outlived its pod";
    writer_.remove_finished(finished);  // the next pass, from the same cached pod
    EXPECT_FALSE(stored("pods").has_value());
    EXPECT_FALSE(stored("secrets").has_value());
  }
}

// Retention of a warm pod that held a session (docs/warm-pool.md): the session's Secret is named
// after the work item, not the pod (perimeter.dev/assigned-secret names it), and the pod has its
// own Secret (its token), named like the pod.
class AssignedWarmPodRetentionTest : public RecordedSecretRetentionTest {
 protected:
  // A claim's Secret, then the assignment of a ready warm pod, which then finishes; as cached.
  json assign_and_finish(const std::string& pod_name, const ClaimedSession& claim) {
    warm_test::seed_ready_warm_pod(server_, pod_name, {"https://assign.example:8443", "CA PEM"});
    ClaimedSession recorded = claim;
    recorded.secret = *writer_.ensure_secret(build_session_secret(environment(), recorded));
    json pod = *server_.object_at("/api/v1/namespaces/a/pods/" + pod_name);
    const WarmPodRef ref{pod_name, pod["metadata"]["uid"].get<std::string>(),
                         pod["metadata"]["resourceVersion"].get<std::string>()};
    EXPECT_TRUE(
        writer_.assign_warm_pod("a", ref, recorded, runner_object_name(recorded.work_id), 3600));
    pod = *server_.object_at("/api/v1/namespaces/a/pods/" + pod_name);
    pod["status"] = {{"phase", "Succeeded"}};
    pod = pods_.update_status("a", pod);
    trim_runner_pod(pod);
    return pod;
  }
  bool exists(const std::string& kind, const std::string& name) {
    return server_.object_at("/api/v1/namespaces/a/" + kind + "/" + name).has_value();
  }
};

TEST_F(AssignedWarmPodRetentionTest, RemovesTheSessionSecretItNamesItsOwnSecretAndThePod) {
  const json finished = assign_and_finish("warm-1", first_);
  // Another warm pod, unassigned, keeps its own Secret.
  warm_test::seed_ready_warm_pod(server_, "warm-2", {"https://assign.example:8443", "CA PEM"});
  const std::size_t before = server_.requests().size();
  writer_.remove_finished(finished);
  EXPECT_FALSE(stored("secrets").has_value()) << "the session Secret outlived its pod";
  EXPECT_FALSE(exists("secrets", "warm-1"));
  EXPECT_FALSE(exists("pods", "warm-1"));
  EXPECT_TRUE(exists("secrets", "warm-2"));
  EXPECT_TRUE(exists("pods", "warm-2"));
  // The session Secret by its recorded version, without a read; the pod's own Secret by what a
  // read showed; the pod last.
  const auto sent = requests_since(before);
  ASSERT_EQ(sent.size(), 4u) << ::testing::PrintToString(sent);
  const auto starts_with = [](const std::string& line, const std::string& prefix) {
    return line.rfind(prefix, 0) == 0;
  };
  EXPECT_TRUE(
      starts_with(sent[0], "DELETE /api/v1/namespaces/a/secrets/" + runner_object_name("work_1")))
      << sent[0];
  EXPECT_TRUE(starts_with(sent[1], "GET /api/v1/namespaces/a/secrets/warm-1")) << sent[1];
  EXPECT_TRUE(starts_with(sent[2], "DELETE /api/v1/namespaces/a/secrets/warm-1")) << sent[2];
  EXPECT_TRUE(starts_with(sent[3], "DELETE /api/v1/namespaces/a/pods/warm-1")) << sent[3];
}

// The warm pod failed and the item came back: a later claim rewrote the session Secret for its
// own pod. That Secret stays; the dead pod and its own Secret go.
TEST_F(AssignedWarmPodRetentionTest, LeavesTheSessionSecretALaterClaimOfTheItemRewrote) {
  const json finished = assign_and_finish("warm-1", first_);
  ASSERT_TRUE(writer_.ensure_secret(build_session_secret(environment(), again_)).has_value());
  writer_.remove_finished(finished);
  ASSERT_TRUE(stored("secrets").has_value()) << "retention removed the next attempt's Secret";
  EXPECT_EQ((*stored("secrets"))["stringData"]["work-secret"], "second-secret");
  EXPECT_FALSE(exists("secrets", "warm-1"));
  EXPECT_FALSE(exists("pods", "warm-1"));
}

// A cold pod named like the session Secret is no business of the warm pod's retention, nor is a
// Secret named like the pod that is not a warm pod's own.
TEST_F(AssignedWarmPodRetentionTest, RemovesNoSecretOfTheSameNameThatIsNotTheWarmPodsOwn) {
  const json finished = assign_and_finish("warm-1", first_);
  secrets_.remove("a", "warm-1");
  server_.seed("/api/v1/namespaces/a/secrets",
               {{"metadata", {{"name", "warm-1"}, {"namespace", "a"}}}, {"data", json::object()}});
  writer_.remove_finished(finished);
  EXPECT_TRUE(exists("secrets", "warm-1"));
  EXPECT_FALSE(exists("pods", "warm-1"));
}

TEST_F(AssignedWarmPodRetentionTest, NoFailedStepLeavesASecretWithoutItsPod) {
  for (const std::string& method_and_path :
       {"DELETE /secrets/" + runner_object_name("work_1"), std::string("GET /secrets/warm-1"),
        std::string("DELETE /secrets/warm-1"), std::string("DELETE /pods/warm-1")}) {
    SCOPED_TRACE(method_and_path + " fails");
    const json finished = assign_and_finish("warm-1", first_);
    const auto space = method_and_path.find(' ');
    server_.fail_next(method_and_path.substr(0, space), method_and_path.substr(space + 1), 500,
                      R"({"kind":"Status","code":500,"reason":"InternalError","message":"x"})");
    EXPECT_ANY_THROW(writer_.remove_finished(finished));
    EXPECT_TRUE(exists("pods", "warm-1")) << "the pod went before its Secrets";
    writer_.remove_finished(finished);  // the next pass, from the same cached pod
    EXPECT_FALSE(exists("pods", "warm-1"));
    EXPECT_FALSE(exists("secrets", "warm-1"));
    EXPECT_FALSE(stored("secrets").has_value());
  }
}

// A warm pod's session gets its whole deadline from its assignment (docs/warm-pool.md "The
// deadline"): the kubelet counts spec.activeDeadlineSeconds from the pod's start, so the
// assignment's patch sets it to the pod's age as the census knows it, rounded up, plus the
// session's deadline, in the one patch that carries the assignment and the resourceVersion.
class WarmPodDeadlineTest : public KubeSessionObjectsTest {
 protected:
  WarmPodDeadlineTest() { server_.use_clock(&clock_); }

  // A ready warm pod created now; `started_after` later the kubelet started it (no start time
  // when nullopt). `deadline`: one an earlier version of the operator gave its warm pods.
  void seed_warm_pod(const std::string& name, std::optional<std::chrono::seconds> started_after,
                     std::optional<std::int64_t> deadline = std::nullopt) {
    json pod = build_warm_runner_pod(environment(), name, "hash-" + name,
                                     {"https://assign.example:8443", "CA PEM"});
    pod["metadata"]["creationTimestamp"] = format_rfc3339(clock_.wall_now());
    pod["status"] = {{"phase", "Running"},
                     {"containerStatuses",
                      {{{"name", "runner"}, {"state", {{"running", {{"startedAt", "x"}}}}}}}}};
    if (started_after) {
      pod["status"]["startTime"] = format_rfc3339(clock_.wall_now() + *started_after);
    }
    if (deadline) pod["spec"]["activeDeadlineSeconds"] = *deadline;
    server_.seed("/api/v1/namespaces/a/pods", pod);
  }
  // The census's view of the pod, from the cache as the operator trims it.
  WarmPodRef census_of(const std::string& name) {
    json pod = *server_.object_at("/api/v1/namespaces/a/pods/" + name);
    trim_runner_pod(pod);
    cache_.upsert(std::make_shared<const json>(std::move(pod)));
    for (const auto& ref : census_.ready_warm_pods("a", "payments")) {
      if (ref.name == name) return ref;
    }
    ADD_FAILURE() << name << " is not a ready warm pod in the census";
    return {};
  }
  json stored_pod(const std::string& name) {
    return *server_.object_at("/api/v1/namespaces/a/pods/" + name);
  }
  bool assign(const WarmPodRef& ref, const std::string& work_id, std::int64_t deadline_seconds) {
    return timed_writer_.assign_warm_pod("a", ref, {work_id, "sesn_" + work_id, "", ""},
                                         runner_object_name(work_id), deadline_seconds);
  }

  testing::FakeClock clock_;
  KubeSessionObjectWriter timed_writer_{secrets_, pods_, clock_};
  runtime::Store cache_;
  StoreRunnerPodCensus census_{cache_};
};

TEST_F(WarmPodDeadlineTest, APodAssignedAfterFiftyMinutesGivesItsSessionTheWholeDeadline) {
  seed_warm_pod("warm-1", std::chrono::seconds(2));
  clock_.advance(std::chrono::minutes(50) + std::chrono::milliseconds(500));
  const WarmPodRef ref = census_of("warm-1");
  const std::size_t before = server_.requests().size();
  ASSERT_TRUE(assign(ref, "work_1", 3600));
  // Started 2 s after its creation and assigned 3000.5 s after it: 2998.5 s old, rounded up.
  const json pod = stored_pod("warm-1");
  EXPECT_EQ(pod["spec"]["activeDeadlineSeconds"], 2999 + 3600) << pod["spec"].dump();
  EXPECT_EQ(pod["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)], "work_1");
  // One request: the deadline and the assignment land together, under the resourceVersion.
  const auto sent = server_.requests();
  ASSERT_EQ(sent.size(), before + 1) << ::testing::PrintToString(sent);
  EXPECT_EQ(sent.back().rfind("PATCH /api/v1/namespaces/a/pods/warm-1", 0), 0u) << sent.back();
}

// A pod whose runner waits with a known nonce: the same one write records the delivery to it
// (docs/warm-pool.md "The delivery"), dated by the operator's clock; a pod without one gets none.
TEST_F(WarmPodDeadlineTest, TheAssignmentRecordsTheDeliveryToTheWaitingRunnerInTheSameWrite) {
  seed_warm_pod("warm-1", std::chrono::seconds(1));
  seed_warm_pod("warm-2", std::chrono::seconds(1));
  WarmPodRef waiting = census_of("warm-1");
  EXPECT_TRUE(waiting.waiting_nonce_sha256.empty());  // the census does not know it
  waiting.waiting_nonce_sha256 = "nonce-sha";
  const std::size_t before = server_.requests().size();
  ASSERT_TRUE(assign(waiting, "work_1", 3600));
  EXPECT_EQ(server_.requests().size(), before + 1);
  const json annotations = stored_pod("warm-1")["metadata"]["annotations"];
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentNonceSha256), ""), "nonce-sha");
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentConfirmedAt), ""),
            format_rfc3339_micros(clock_.wall_now()));
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignedWorkId), ""), "work_1");

  ASSERT_TRUE(assign(census_of("warm-2"), "work_2", 3600));
  const json plain = stored_pod("warm-2")["metadata"]["annotations"];
  EXPECT_FALSE(plain.contains(std::string(kAnnotationAssignmentConfirmedAt)));
  EXPECT_FALSE(plain.contains(std::string(kAnnotationAssignmentNonceSha256)));
}

TEST_F(WarmPodDeadlineTest, WithoutAStartTimeThePodsAgeCountsFromItsCreation) {
  seed_warm_pod("warm-1", std::nullopt);
  clock_.advance(std::chrono::minutes(10));
  ASSERT_TRUE(assign(census_of("warm-1"), "work_1", 3600));
  EXPECT_EQ(stored_pod("warm-1")["spec"]["activeDeadlineSeconds"], 600 + 3600);
}

TEST_F(WarmPodDeadlineTest, TheDeadlineStaysWithinTheApiserversBound) {
  seed_warm_pod("warm-1", std::chrono::seconds(0));
  clock_.advance(std::chrono::minutes(10));
  ASSERT_TRUE(assign(census_of("warm-1"), "work_1", 2147483400));
  EXPECT_EQ(stored_pod("warm-1")["spec"]["activeDeadlineSeconds"], 2147483647);
}

// A claim that loses the pod (another claim assigned it since the census saw it) leaves its
// deadline as it is: the deadline lands with the assignment or not at all.
TEST_F(WarmPodDeadlineTest, ALostAssignmentSetsNoDeadline) {
  seed_warm_pod("warm-1", std::chrono::seconds(1));
  const WarmPodRef stale = census_of("warm-1");
  clock_.advance(std::chrono::minutes(5));
  ASSERT_TRUE(assign(census_of("warm-1"), "work_1", 3600));
  const json won = stored_pod("warm-1");
  clock_.advance(std::chrono::minutes(5));
  EXPECT_FALSE(assign(stale, "work_2", 60));
  const json after = stored_pod("warm-1");
  EXPECT_EQ(after["spec"]["activeDeadlineSeconds"], won["spec"]["activeDeadlineSeconds"]);
  EXPECT_EQ(after["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)], "work_1");
}

// A warm pod an earlier version made carries the session's deadline from its start. The apiserver
// refuses to raise a deadline, so the patch leaves one that ends sooner as it is (the assignment
// still lands), and lowers one that ends later.
TEST_F(WarmPodDeadlineTest, APodAnEarlierVersionMadeKeepsAnEarlierDeadlineAndLowersALaterOne) {
  seed_warm_pod("warm-old", std::chrono::seconds(0), 3600);
  seed_warm_pod("warm-long", std::chrono::seconds(0), 86400);
  clock_.advance(std::chrono::minutes(10));
  ASSERT_TRUE(assign(census_of("warm-old"), "work_1", 3600));
  ASSERT_TRUE(assign(census_of("warm-long"), "work_2", 3600));
  const json old_pod = stored_pod("warm-old");
  EXPECT_EQ(old_pod["spec"]["activeDeadlineSeconds"], 3600);
  EXPECT_EQ(old_pod["metadata"]["annotations"][std::string(kAnnotationAssignedWorkId)], "work_1");
  EXPECT_EQ(stored_pod("warm-long")["spec"]["activeDeadlineSeconds"], 600 + 3600);
}

// The census of warm pods: ready means the contract's READY (not deleting, Running, the runner
// container running) and unassigned, in the environment's namespace, oldest first.
TEST(StoreRunnerPodCensusTest, ReadyWarmPodsAreTheUnassignedRunningOnesOldestFirst) {
  runtime::Store store;
  StoreRunnerPodCensus census(store);
  const json running_runner = {
      {"phase", "Running"},
      {"containerStatuses", {{{"name", "runner"}, {"state", {{"running", json::object()}}}}}}};
  const auto add = [&](const std::string& ns, const std::string& name, const std::string& env,
                       const std::string& created, const json& status, const json& annotations,
                       bool warm = true, bool deleting = false) {
    json pod = {{"metadata",
                 {{"namespace", ns},
                  {"name", name},
                  {"uid", "uid-" + name},
                  {"resourceVersion", "rv-" + name},
                  {"creationTimestamp", created},
                  {"labels", {{std::string(kLabelEnvironment), label_value_for(env)}}},
                  {"annotations", annotations}}},
                {"status", status}};
    if (warm) pod["metadata"]["labels"][std::string(kLabelWarm)] = "true";
    if (deleting) pod["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:09Z";
    store.upsert(std::make_shared<const json>(std::move(pod)));
  };
  const json none = json::object();
  const json assigned = {{std::string(kAnnotationAssignedWorkId), "work_1"}};
  add("a", "warm-new", "payments", "2026-12-01T00:00:05Z", running_runner, none);
  add("a", "warm-old", "payments", "2026-12-01T00:00:01Z", running_runner, none);
  add("a", "warm-assigned", "payments", "2026-12-01T00:00:00Z", running_runner, assigned);
  add("a", "warm-pending", "payments", "2026-12-01T00:00:00Z", {{"phase", "Pending"}}, none);
  add("a", "warm-starting", "payments", "2026-12-01T00:00:00Z",
      {{"phase", "Running"},
       {"containerStatuses", {{{"name", "runner"}, {"state", {{"waiting", json::object()}}}}}}},
      none);
  add("a", "warm-deleting", "payments", "2026-12-01T00:00:00Z", running_runner, none, true, true);
  add("a", "warm-done", "payments", "2026-12-01T00:00:00Z", {{"phase", "Succeeded"}}, none);
  add("a", "run-cold", "payments", "2026-12-01T00:00:00Z", running_runner, none, false);
  add("a", "warm-search", "search", "2026-12-01T00:00:00Z", running_runner, none);
  add("b", "warm-elsewhere", "payments", "2026-12-01T00:00:00Z", running_runner, none);

  const auto ready = census.ready_warm_pods("a", "payments");
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0].name, "warm-old");
  EXPECT_EQ(ready[0].uid, "uid-warm-old");
  EXPECT_EQ(ready[0].resource_version, "rv-warm-old");
  EXPECT_EQ(ready[1].name, "warm-new");

  // The assignment, found by its item: the unfinished pod before a finished one.
  ASSERT_TRUE(census.assigned_pod("a", "work_1").has_value());
  EXPECT_EQ(census.assigned_pod("a", "work_1")->name, "warm-assigned");
  EXPECT_FALSE(census.assigned_pod("a", "work_1")->finished);
  add("a", "warm-assigned", "payments", "2026-12-01T00:00:00Z", {{"phase", "Failed"}}, assigned);
  ASSERT_TRUE(census.assigned_pod("a", "work_1").has_value());
  EXPECT_TRUE(census.assigned_pod("a", "work_1")->finished);
  add("a", "warm-new", "payments", "2026-12-01T00:00:05Z", running_runner, assigned);
  EXPECT_EQ(census.assigned_pod("a", "work_1")->name, "warm-new");
  EXPECT_FALSE(census.assigned_pod("a", "work_1")->finished);
  EXPECT_FALSE(census.assigned_pod("b", "work_1").has_value());
  EXPECT_FALSE(census.assigned_pod("a", "work_2").has_value());
  EXPECT_EQ(census.ready_warm_pods("a", "payments").size(), 1u);
}

TEST_F(KubeSessionObjectsTest, TheDryRunStoresNothingAndRefusesWhatTheApiserverRefuses) {
  const json pod = build_runner_pod(environment(), {"work_1", "sesn_1", "", ""});
  writer_.check_pod(pod);
  EXPECT_EQ(server_.requests().back(), "POST /api/v1/namespaces/a/pods?dryRun=All");
  EXPECT_FALSE(
      server_.object_at("/api/v1/namespaces/a/pods/" + runner_object_name("work_1")).has_value());
  server_.fail_next("POST", "dryRun=All", 403,
                    R"({"kind":"Status","code":403,"reason":"Forbidden","message":"pods \"x\" is )"
                    R"(forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot"})");
  EXPECT_THROW(writer_.check_pod(pod), ObjectRefused);
}

// The census reads the store's indexes of unfinished and gated pods on every poll; what it
// reports is what a walk of every pod would.
TEST(StoreRunnerPodCensusTest, CountsTheEnvironmentsPodsInItsNamespaceOnly) {
  runtime::Store store;
  StoreRunnerPodCensus census_of(store);
  const auto add = [&](const std::string& ns, const std::string& name, const std::string& env,
                       const json& status, const json& spec, const json& annotations) {
    json pod = {{"metadata",
                 {{"namespace", ns},
                  {"name", name},
                  {"labels", {{std::string(kLabelEnvironment), label_value_for(env)}}}}}};
    if (!annotations.is_null()) pod["metadata"]["annotations"] = annotations;
    if (!status.is_null()) pod["status"] = status;
    if (!spec.is_null()) pod["spec"] = spec;
    store.upsert(std::make_shared<const json>(std::move(pod)));
  };
  const json gated = {
      {"schedulingGates",
       {{{"name", "other.example/gate"}}, {{"name", std::string(kSchedulingGateAcknowledged)}}}}};
  add("agents", "run-c", "payments", {{"phase", "Running"}}, nullptr, nullptr);
  add("agents", "run-a", "payments", {{"phase", "Succeeded"}}, nullptr, nullptr);
  add("agents", "run-b", "payments", nullptr, gated, {{std::string(kAnnotationWorkId), "work_b"}});
  add("agents", "run-d", "payments", {{"phase", "Failed"}}, nullptr, nullptr);
  add("agents", "run-e", "payments", {{"phase", "Pending"}}, gated, nullptr);  // no annotations
  add("agents", "run-f", "payments", {{"phase", "Pending"}},
      {{"schedulingGates", {{{"name", "other.example/gate"}}}}}, nullptr);  // not our gate
  add("agents", "run-x", "search", {{"phase", "Running"}}, nullptr, nullptr);
  add("agentz", "run-0", "payments", {{"phase", "Running"}}, gated,
      {{std::string(kAnnotationWorkId), "work_0"}});
  add("a", "run-z", "payments", {{"phase", "Running"}}, nullptr, nullptr);

  // Unfinished: run-b, run-c, run-e and run-f (gated or not, another controller's gate too).
  EXPECT_EQ(census_of.unfinished("agents", "payments"), 4u);
  EXPECT_EQ(census_of.gated("agents", "payments"),
            (std::map<std::string, std::string>{{"run-b", "work_b"}, {"run-e", ""}}));
  EXPECT_TRUE(census_of.cached("agents", "run-a"));
  EXPECT_FALSE(census_of.cached("agents", "run-q"));
  EXPECT_EQ(census_of.unfinished("elsewhere", "payments"), 0u);

  // The indexes follow the pods: one finishes, another loses its gate, a third goes away.
  add("agents", "run-c", "payments", {{"phase", "Succeeded"}}, nullptr, nullptr);
  add("agents", "run-b", "payments", {{"phase", "Running"}}, nullptr,
      {{std::string(kAnnotationWorkId), "work_b"}});
  store.remove("agents/run-f");
  // Unfinished now: run-b and run-e; a finished pod arriving counts for nothing.
  EXPECT_EQ(census_of.unfinished("agents", "payments"), 2u);
  add("agents", "run-g", "payments", {{"phase", "Failed"}}, nullptr, nullptr);
  EXPECT_EQ(census_of.unfinished("agents", "payments"), 2u);
  EXPECT_EQ(census_of.gated("agents", "payments"),
            (std::map<std::string, std::string>{{"run-e", ""}}));
}

TEST(PodFinishedTest, OnlySucceededAndFailedAreFinished) {
  EXPECT_TRUE(pod_finished({{"status", {{"phase", "Succeeded"}}}}));
  EXPECT_TRUE(pod_finished({{"status", {{"phase", "Failed"}}}}));
  EXPECT_FALSE(pod_finished({{"status", {{"phase", "Running"}}}}));
  EXPECT_FALSE(pod_finished({{"status", {{"phase", 3}}}}));
  EXPECT_FALSE(pod_finished({{"status", "Succeeded"}}));
  EXPECT_FALSE(pod_finished(json::object()));
}

}  // namespace
}  // namespace perimeter::agentenvironment
