// The assignment service over the pod cache and the in-memory apiserver: a warm pod as
// build_warm_runner_pod makes it, the session's Secret as the apiserver stores it (data, base64).
#include "controllers/agentenvironment/kube_warm_pod_directory.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <memory>

#include "agentenvironment/warm_pods.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/fake_clock.h"
#include "kube/fake_api_server.h"
#include "pki/hmac.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

const std::string kNonce = "c0ffee";

class KubeWarmPodDirectoryTest : public ::testing::Test {
 protected:
  // A warm pod in the apiserver and the cache; returns its token.
  std::string start_warm_pod(const std::string& name) {
    warm_test::SeededWarmPod seeded =
        warm_test::seed_warm_pod(server_, name, {"https://assign.perimeter-system.svc:8443", "ca"});
    cache(seeded.pod);
    return seeded.token;
  }
  void cache(const json& pod) { store_.upsert(std::make_shared<const json>(pod)); }
  json live(const std::string& name) {
    return *server_.object_at("/api/v1/namespaces/a/pods/" + name);
  }
  // What a claim will do: the Secret first, then the assignment on the pod.
  void assign(const std::string& name, const std::string& work_id) {
    cache(warm_test::seed_assignment(server_, pods_, name, work_id));
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  kube::ResourceClient secrets_{server_, kube::resources::secrets(), metrics_};
  kube::ResourceClient pods_{server_, kube::resources::pods(), metrics_};
  runtime::Store store_;
  KubeWarmPodDirectory directory_{store_, secrets_, pods_};
  perimeter::testing::FakeClock clock_;
  WarmAssignmentService service_{directory_, clock_, nullptr};
};

TEST_F(KubeWarmPodDirectoryTest, ServesTheAssignmentFromPodAndSecretAndRecordsTheDeliveryOnThePod) {
  const std::string token = start_warm_pod("payments-warm-1");
  start_warm_pod("payments-warm-2");
  EXPECT_EQ(service_.fetch("Bearer " + token, kNonce).status, 204);

  assign("payments-warm-1", "work_1");
  const AssignmentAnswer assigned = service_.fetch("Bearer " + token, kNonce);
  ASSERT_EQ(assigned.status, 200);
  EXPECT_EQ(assigned.body["work_id"], "work_1");
  EXPECT_EQ(assigned.body["work_secret"], "secret-of-work_1");
  EXPECT_EQ(assigned.body["delivered"], true);
  const json annotations = live("payments-warm-1")["metadata"]["annotations"];
  EXPECT_TRUE(annotations.contains(std::string(kAnnotationAssignmentConfirmedAt)));
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentNonceSha256), ""),
            pki::sha256_hex(kNonce));
  // Before and after the cache shows it: the token alone opens nothing.
  EXPECT_EQ(service_.fetch("Bearer " + token).status, 410);
  cache(live("payments-warm-1"));
  EXPECT_EQ(service_.fetch("Bearer " + token).status, 410);
  EXPECT_EQ(service_.fetch("Bearer " + token, kNonce).body["work_secret"], "secret-of-work_1");
}

// The delivery's JSON patch tests what it was decided from, not the resourceVersion: a pod that
// changed since the cache saw it is delivered in one write, the other change kept; a second
// service (another replica, or this one restarted) with the same stale cache delivers nothing.
TEST_F(KubeWarmPodDirectoryTest, ADeliveryHoldsOnAChangedPodAndHappensOnce) {
  const std::string token = start_warm_pod("payments-warm-1");
  assign("payments-warm-1", "work_1");
  // Changed after the cache saw it.
  pods_.merge_patch("a", "payments-warm-1", {{"metadata", {{"labels", {{"team", "x"}}}}}});

  EXPECT_EQ(service_.fetch("Bearer " + token, kNonce).status, 200);
  const json pod = live("payments-warm-1");
  EXPECT_TRUE(
      pod["metadata"]["annotations"].contains(std::string(kAnnotationAssignmentConfirmedAt)));
  EXPECT_EQ(pod["metadata"]["labels"].value("team", ""), "x");  // the other change is kept

  WarmAssignmentService restarted{directory_, clock_, nullptr};
  const AssignmentAnswer replayed = restarted.fetch("Bearer " + token, "another-nonce");
  EXPECT_EQ(replayed.status, 410);
  EXPECT_FALSE(replayed.body.contains("work_secret"));
  EXPECT_EQ(restarted.fetch("Bearer " + token, kNonce).status, 200);
  EXPECT_EQ(live("payments-warm-1")["metadata"]["annotations"].value(
                std::string(kAnnotationAssignmentNonceSha256), ""),
            pki::sha256_hex(kNonce));
}

TEST_F(KubeWarmPodDirectoryTest, AMissingSecretOrAFailedReadIsNoAssignmentYet) {
  const std::string token = start_warm_pod("payments-warm-1");
  assign("payments-warm-1", "work_1");
  server_.fail_next(
      "GET", "/secrets/run-work_1", 500,
      R"({"kind":"Status","code":500,"reason":"InternalError","message":"etcd down"})");
  const AssignmentAnswer failed = service_.fetch("Bearer " + token, kNonce);
  EXPECT_EQ(failed.status, 503);
  EXPECT_NE(failed.body["error"].get<std::string>().find("etcd down"), std::string::npos);

  secrets_.remove("a", "run-work_1");
  EXPECT_EQ(service_.fetch("Bearer " + token, kNonce).status, 503);
}

TEST_F(KubeWarmPodDirectoryTest, OnlyWarmPodsAreIndexedAndAColdPodIsNoneOfThem) {
  ClaimedSession session{"work_9", "sesn_9", "c2VjcmV0", "2026-11-23T06:00:00Z"};
  cache(server_.seed("/api/v1/namespaces/a/pods",
                     build_runner_pod(warm_test::warm_pool_environment(), session)));
  EXPECT_EQ(store_.size(), 1u);
  // A cold pod has no token; no hash, not even the empty one's, finds it.
  EXPECT_FALSE(directory_.find_by_token_sha256(pki::sha256_hex("")).has_value());
  EXPECT_FALSE(directory_.find_by_token_sha256("").has_value());
}

}  // namespace
}  // namespace perimeter::agentenvironment
