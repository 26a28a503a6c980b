#include "controllers/agentenvironment/warm_assignment_service.h"

#include <gtest/gtest.h>

#include <map>
#include <stdexcept>
#include <vector>

#include "core/fake_clock.h"
#include "pki/hmac.h"

namespace perimeter::agentenvironment {
namespace {

// The cluster as the assignment service sees it: warm pods as the informer caches them, session
// Secrets, and the tests of the delivery's JSON patch, held against the apiserver's pod. `cache`
// lags the apiserver on purpose when a test says so.
class FakeWarmPodDirectory final : public WarmPodDirectory {
 public:
  std::optional<WarmPod> find_by_token_sha256(const std::string& token_sha256) override {
    for (const auto& [name, pod] : cache) {
      std::optional<WarmPod> warm = read_warm_pod(pod);
      if (warm && warm->token_sha256 == token_sha256) return warm;
    }
    return std::nullopt;
  }
  std::optional<WarmPod> read_live(const WarmPod& pod) override {
    ++live_reads;
    auto it = server.find(pod.name);
    if (it == server.end()) return std::nullopt;
    return read_warm_pod(it->second);
  }
  std::optional<std::string> read_work_secret(const std::string& ns,
                                              const std::string& name) override {
    ++secret_reads;
    if (secret_read_fails) throw std::runtime_error("apiserver unreachable");
    auto it = secrets.find(ns + "/" + name);
    if (it == secrets.end()) return std::nullopt;
    return it->second;
  }
  bool mark_delivered(const WarmPod& pod, const WarmPodAssignment& assignment,
                      const std::string& nonce_sha256, const std::string& delivered_at) override {
    auto it = server.find(pod.name);
    if (it == server.end()) return false;
    nlohmann::json& live = it->second;
    nlohmann::json& annotations = live["metadata"]["annotations"];
    const auto annotation = [&](std::string_view key) {
      return annotations.value(std::string(key), "");
    };
    if (refused_deliveries > 0) {  // the pod is not what it was decided from, every time
      --refused_deliveries;
      return false;
    }
    if (live["metadata"]["uid"] != pod.uid || live["metadata"].contains("deletionTimestamp") ||
        annotation(kAnnotationAssignedWorkId) != assignment.work_id ||
        annotation(kAnnotationAssignedSessionId) != assignment.session_id ||
        annotation(kAnnotationAssignedSecret) != assignment.secret_name ||
        !annotation(kAnnotationAssignmentConfirmedAt).empty()) {
      return false;
    }
    annotations[std::string(kAnnotationAssignmentConfirmedAt)] = delivered_at;
    if (!nonce_sha256.empty()) {
      annotations[std::string(kAnnotationAssignmentNonceSha256)] = nonce_sha256;
    }
    live["metadata"]["resourceVersion"] = std::to_string(++version_);
    ++delivery_writes;
    return true;
  }

  // A warm pod on the server and in the cache; returns its token.
  std::string add_pod(const std::string& name) {
    const WarmPodToken minted = mint_warm_pod_token();
    nlohmann::json pod = {
        {"metadata",
         {{"namespace", "agents"},
          {"name", name},
          {"uid", "uid-" + name},
          {"resourceVersion", std::to_string(++version_)},
          {"labels", {{std::string(kLabelWarm), "true"}}},
          {"annotations", {{std::string(kAnnotationWarmTokenSha256), minted.sha256}}}}},
        {"status", {{"phase", "Running"}}}};
    server[name] = pod;
    cache[name] = pod;
    return minted.token;
  }
  // What a claim does: the assignment onto the pod (a new resourceVersion), the Secret before.
  void assign(const std::string& name, const std::string& work_id, const std::string& secret) {
    const std::string secret_name = "run-" + work_id;
    secrets["agents/" + secret_name] = secret;
    nlohmann::json& annotations = server.at(name)["metadata"]["annotations"];
    annotations[std::string(kAnnotationAssignedWorkId)] = work_id;
    annotations[std::string(kAnnotationAssignedSessionId)] = "sesn-" + work_id;
    annotations[std::string(kAnnotationAssignedSecret)] = secret_name;
    server[name]["metadata"]["resourceVersion"] = std::to_string(++version_);
  }
  void sync() { cache = server; }
  // A warm pod assigned `work_id`, as both the apiserver and the cache show it; returns its token.
  std::string add_assigned_pod(const std::string& name, const std::string& work_id,
                               const std::string& secret) {
    std::string token = add_pod(name);
    assign(name, work_id, secret);
    sync();
    return token;
  }

  std::map<std::string, nlohmann::json> server;
  std::map<std::string, nlohmann::json> cache;
  std::map<std::string, std::string> secrets;
  bool secret_read_fails = false;
  int delivery_writes = 0;
  int live_reads = 0;
  int secret_reads = 0;
  int refused_deliveries = 0;

 private:
  int version_ = 100;
};

// What a runner sends with every fetch of its life.
const std::string kNonce = "5b1d8a0c7e3f4a9b2c6d1e8f0a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b";

class WarmAssignmentServiceTest : public ::testing::Test {
 protected:
  WarmAssignmentServiceTest()
      : service_(pods_, clock_,
                 [this](std::string_view outcome) { outcomes_.emplace_back(outcome); }) {}

  static std::string bearer(const std::string& token) { return "Bearer " + token; }
  static std::string confirm_body(const std::string& work_id) {
    return nlohmann::json{{"work_id", work_id}}.dump();
  }

  perimeter::testing::FakeClock clock_;
  FakeWarmPodDirectory pods_;
  std::vector<std::string> outcomes_;
  WarmAssignmentService service_;
};

TEST(MintWarmPodToken, EachTokenIsNewAndItsHashChecksIt) {
  const WarmPodToken a = mint_warm_pod_token();
  const WarmPodToken b = mint_warm_pod_token();
  EXPECT_EQ(a.token.size(), 64u);
  EXPECT_NE(a.token, b.token);
  EXPECT_EQ(a.sha256, pki::sha256_hex(a.token));
  EXPECT_NE(a.sha256, a.token);
}

TEST_F(WarmAssignmentServiceTest, AnAssignedPodGetsItsItemOnceAndThenOnlyItsRunnerIsAnswered) {
  const std::string token = pods_.add_pod("warm-a");
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 204);

  pods_.assign("warm-a", "work_1", "c2VjcmV0");
  pods_.sync();
  const AssignmentAnswer assigned = service_.fetch(bearer(token), kNonce);
  ASSERT_EQ(assigned.status, 200);
  EXPECT_EQ(assigned.body["work_id"], "work_1");
  EXPECT_EQ(assigned.body["session_id"], "sesn-work_1");
  EXPECT_EQ(assigned.body["work_secret"], "c2VjcmV0");
  EXPECT_EQ(assigned.body["delivered"], true);
  // Recorded on the apiserver's pod before the answer left, with whom it went to; no read.
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(pods_.live_reads, 0);
  const nlohmann::json annotations = pods_.server["warm-a"]["metadata"]["annotations"];
  EXPECT_FALSE(annotations.value(std::string(kAnnotationAssignmentConfirmedAt), "").empty());
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentNonceSha256), ""),
            pki::sha256_hex(kNonce));
  pods_.sync();
  // A lost answer: the same runner asks again with its nonce and gets the same assignment.
  const AssignmentAnswer again = service_.fetch(bearer(token), kNonce);
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.body["work_secret"], "c2VjcmV0");
  // The replay: the agent of this session reads the token's file and asks for the secret,
  // without the runner's nonce or with one of its own.
  for (const std::string& nonce :
       {std::string(), std::string("0123456789abcdef0123456789abcdef"), pki::sha256_hex(kNonce)}) {
    const AssignmentAnswer replayed = service_.fetch(bearer(token), nonce);
    EXPECT_EQ(replayed.status, 410) << nonce;
    EXPECT_FALSE(replayed.body.contains("work_secret"));
  }
  // A runner of an earlier version confirms what it got: answered, without another write.
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_1")).status, 204);
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(outcomes_, (std::vector<std::string>{"waiting", "assigned", "redelivered", "gone",
                                                 "gone", "gone", "confirmed"}));
}

// The cache lags the delivery; the delivery's write, which holds only on a pod not delivered
// yet, refuses the replay all the same.
TEST_F(WarmAssignmentServiceTest, AReplayBeforeTheCacheShowsTheDeliveryIsRefusedAllTheSame) {
  const std::string token = pods_.add_assigned_pod("warm-a", "work_1", "c2VjcmV0");
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 200);
  // The cache still shows the pod undelivered; the apiserver does not.
  for (const std::string& nonce : {std::string(), std::string("another-runners-nonce")}) {
    const AssignmentAnswer replayed = service_.fetch(bearer(token), nonce);
    EXPECT_EQ(replayed.status, 410);
    EXPECT_FALSE(replayed.body.contains("work_secret"));
  }
  EXPECT_EQ(pods_.delivery_writes, 1);
  // The runner's own ask, all the same: decided from the apiserver's pod.
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 200);
  // Held requests cost no read and no write: only the answers that would hand out a secret do.
  const std::string waiting_token = pods_.add_pod("warm-b");
  const int reads = pods_.live_reads;
  EXPECT_EQ(service_.fetch(bearer(waiting_token), kNonce).status, 204);
  EXPECT_EQ(pods_.live_reads, reads);
  EXPECT_EQ(pods_.delivery_writes, 1);
}

TEST_F(WarmAssignmentServiceTest, APodDeletedOrReplacedSinceTheCacheSawItHandsOutNothing) {
  const std::string token = pods_.add_assigned_pod("warm-a", "work_1", "c2VjcmV0");
  pods_.server["warm-a"]["metadata"]["uid"] = "uid-of-a-new-pod";
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 410);
  pods_.server["warm-a"]["metadata"]["uid"] = "uid-warm-a";
  pods_.server["warm-a"]["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z";
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 410);
  pods_.server.erase("warm-a");
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 410);
  EXPECT_EQ(pods_.delivery_writes, 0);
}

TEST_F(WarmAssignmentServiceTest, NoTokenOrAWrongOneIsRefusedAlike) {
  const std::string token = pods_.add_assigned_pod("warm-a", "work_1", "c2VjcmV0");
  for (const std::string& authorization :
       {std::string(), std::string("Bearer "), std::string("Basic ") + token, token,
        bearer(token + "0"), bearer(pki::sha256_hex(token)), bearer(mint_warm_pod_token().token)}) {
    const AssignmentAnswer fetched = service_.fetch(authorization, kNonce);
    EXPECT_EQ(fetched.status, 401) << authorization;
    EXPECT_FALSE(fetched.body.contains("work_secret"));
    EXPECT_EQ(service_.confirm(authorization, confirm_body("work_1")).status, 401);
  }
  EXPECT_EQ(pods_.delivery_writes, 0);
  // The scheme's case does not matter (RFC 7235); the token's does.
  EXPECT_EQ(service_.fetch("bearer " + token, kNonce).status, 200);
}

TEST_F(WarmAssignmentServiceTest, APodsTokenOpensThatPodAloneAndNeverAnothersItem) {
  const std::string token_a = pods_.add_pod("warm-a");
  const std::string token_b = pods_.add_assigned_pod("warm-b", "work_b", "c2VjcmV0LWI=");

  EXPECT_EQ(service_.fetch(bearer(token_a), kNonce).status, 204);
  EXPECT_EQ(service_.confirm(bearer(token_a), confirm_body("work_b")).status, 409);
  EXPECT_EQ(pods_.delivery_writes, 0);
  EXPECT_EQ(service_.fetch(bearer(token_b), kNonce).body["work_id"], "work_b");
}

TEST_F(WarmAssignmentServiceTest, AFinishedOrDeletedPodsTokenIsGone) {
  const std::string token = pods_.add_pod("warm-a");
  pods_.assign("warm-a", "work_1", "c2VjcmV0");
  pods_.server["warm-a"]["status"]["phase"] = "Failed";
  pods_.sync();
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 410);
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_1")).status, 410);

  pods_.server["warm-a"]["status"]["phase"] = "Running";
  pods_.server["warm-a"]["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z";
  pods_.sync();
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 410);
}

// The delivery tests what it was decided from, not the pod's version: the kubelet's status right
// after the assignment set a deadline, or a policy engine's label, changes nothing. A pod that is
// not what it was decided from is read and decided again at once, not after the runner's backoff;
// one that never is, is 503 and asked again.
TEST_F(WarmAssignmentServiceTest, ADeliveryHoldsWhateverElseChangedAndIsDecidedAgainWhenItDoesNot) {
  const std::string token = pods_.add_assigned_pod("warm-a", "work_1", "c2VjcmV0");
  pods_.server["warm-a"]["metadata"]["resourceVersion"] = "999";
  pods_.server["warm-a"]["metadata"]["labels"]["team"] = "payments";
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 200);
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(pods_.live_reads, 0);

  const std::string busy = pods_.add_assigned_pod("warm-b", "work_2", "c2VjcmV0");
  pods_.refused_deliveries = WarmAssignmentService::kDeliveryAttempts;
  EXPECT_EQ(service_.fetch(bearer(busy), kNonce).status, 503);
  EXPECT_EQ(pods_.live_reads, WarmAssignmentService::kDeliveryAttempts - 1);
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(service_.fetch(bearer(busy), kNonce).status, 200);
  EXPECT_EQ(pods_.delivery_writes, 2);
}

TEST_F(WarmAssignmentServiceTest, ASecretThatCannotBeReadIsAnswerToRetryWithTheServersReason) {
  const std::string token = pods_.add_assigned_pod("warm-a", "work_1", "c2VjcmV0");
  pods_.secret_read_fails = true;
  const AssignmentAnswer failed = service_.fetch(bearer(token), kNonce);
  EXPECT_EQ(failed.status, 503);
  EXPECT_NE(failed.body["error"].get<std::string>().find("apiserver unreachable"),
            std::string::npos);

  pods_.secret_read_fails = false;
  pods_.secrets.clear();
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 503);
  // Nothing delivered: the runner's next ask can still be answered.
  EXPECT_EQ(pods_.delivery_writes, 0);
}

TEST_F(WarmAssignmentServiceTest, AConfirmMustNameTheWorkItemAndANonceIsBounded) {
  const std::string token = pods_.add_pod("warm-a");
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_1")).status, 409);
  pods_.assign("warm-a", "work_1", "c2VjcmV0");
  pods_.sync();
  EXPECT_EQ(service_.confirm(bearer(token), "not json").status, 400);
  EXPECT_EQ(service_.confirm(bearer(token), R"({"work_id": 7})").status, 400);
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_2")).status, 409);
  const std::string too_long(WarmAssignmentService::kMaxNonceBytes + 1, 'a');
  EXPECT_EQ(service_.fetch(bearer(token), too_long).status, 400);
  EXPECT_EQ(pods_.delivery_writes, 0);
}

// A runner of an earlier version asks without a nonce, is handed its assignment by an operator of
// an earlier version, and confirms to this one (an upgrade in between): the confirm records the
// delivery, and from then on the token opens nothing.
TEST_F(WarmAssignmentServiceTest, AnEarlierRunnersConfirmRecordsTheDeliveryWhenNoFetchDid) {
  const std::string token = pods_.add_assigned_pod("warm-a", "work_1", "c2VjcmV0");
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_1")).status, 204);
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(pods_.server["warm-a"]["metadata"]["annotations"].value(
                std::string(kAnnotationAssignmentNonceSha256), "none"),
            "none");
  EXPECT_EQ(service_.fetch(bearer(token)).status, 410);
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 410);
  // And a runner of an earlier version against this operator: its fetch is delivered (with no
  // nonce, so a lost answer is not given again), its confirm answered.
  const std::string earlier = pods_.add_assigned_pod("warm-b", "work_2", "c2VjcmV0");
  EXPECT_EQ(service_.fetch(bearer(earlier)).status, 200);
  EXPECT_EQ(service_.fetch(bearer(earlier)).status, 410);
  EXPECT_EQ(service_.confirm(bearer(earlier), confirm_body("work_2")).status, 204);
  EXPECT_EQ(pods_.delivery_writes, 2);
}

// The claim that assigned a pod hands its assignment over (docs/warm-pool.md): the held request
// is answered before the pod informer's event arrives, and the work secret is not read back from
// the Secret the claim wrote. The apiserver's pod still decides, in the delivery's write.
TEST_F(WarmAssignmentServiceTest, AHandedOverAssignmentIsAnsweredBeforeTheCacheShowsIt) {
  const std::string token = pods_.add_pod("warm-a");
  pods_.assign("warm-a", "work_1", "c2VjcmV0");  // on the server; the cache lags
  service_.hand_over({"uid-warm-a", {"work_1", "sesn-work_1", "run-work_1"}, "c2VjcmV0"});

  const AssignmentAnswer assigned = service_.fetch(bearer(token), kNonce);
  ASSERT_EQ(assigned.status, 200);
  EXPECT_EQ(assigned.body["work_id"], "work_1");
  EXPECT_EQ(assigned.body["session_id"], "sesn-work_1");
  EXPECT_EQ(assigned.body["work_secret"], "c2VjcmV0");
  // One write and nothing read: the assignment from the hand-over, checked by the write.
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(pods_.live_reads, 0);
  EXPECT_EQ(pods_.secret_reads, 0);
  // After it the token opens nothing, handed over or not; an earlier runner's confirm is answered.
  EXPECT_EQ(service_.fetch(bearer(token)).status, 410);
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_1")).status, 204);
  EXPECT_EQ(pods_.delivery_writes, 1);
  EXPECT_EQ(outcomes_, (std::vector<std::string>{"assigned", "gone", "confirmed"}));
}

// A runner waiting with its nonce is known to the claims for a few seconds (each held request is
// decided again every second), and a claim that recorded the delivery to it in the assignment's
// own write hands that over: the runner is answered from memory, nothing written or read, and
// anyone else, the agent replaying the token included, is refused.
TEST_F(WarmAssignmentServiceTest, AWaitingRunnerTheClaimDeliveredToIsAnsweredWithoutAWrite) {
  const std::string token = pods_.add_pod("warm-a");
  const std::string earlier = pods_.add_pod("warm-b");
  EXPECT_FALSE(service_.waiting_nonce("uid-warm-a").has_value());
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 204);
  EXPECT_EQ(service_.fetch(bearer(earlier)).status, 204);  // a runner that sends no nonce
  EXPECT_EQ(service_.waiting_nonce("uid-warm-a"),
            std::optional<std::string>(pki::sha256_hex(kNonce)));
  EXPECT_FALSE(service_.waiting_nonce("uid-warm-b").has_value());
  clock_.advance(WarmAssignmentService::kWaitingNonceFresh);
  EXPECT_FALSE(service_.waiting_nonce("uid-warm-a").has_value());  // it stopped asking
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 204);
  ASSERT_TRUE(service_.waiting_nonce("uid-warm-a").has_value());

  // The claim's assignment, with the delivery to that nonce, in one write.
  pods_.assign("warm-a", "work_1", "c2VjcmV0");
  auto& annotations = pods_.server["warm-a"]["metadata"]["annotations"];
  annotations[std::string(kAnnotationAssignmentConfirmedAt)] = "2026-12-02T08:00:00.000000Z";
  annotations[std::string(kAnnotationAssignmentNonceSha256)] = pki::sha256_hex(kNonce);
  service_.hand_over({"uid-warm-a",
                      {"work_1", "sesn-work_1", "run-work_1"},
                      "c2VjcmV0",
                      *service_.waiting_nonce("uid-warm-a")});
  for (const std::string& nonce : {std::string(), std::string("the-agents-own-nonce")}) {
    const AssignmentAnswer replayed = service_.fetch(bearer(token), nonce);
    EXPECT_EQ(replayed.status, 410);
    EXPECT_FALSE(replayed.body.contains("work_secret"));
  }
  const AssignmentAnswer assigned = service_.fetch(bearer(token), kNonce);
  ASSERT_EQ(assigned.status, 200);
  EXPECT_EQ(assigned.body["work_id"], "work_1");
  EXPECT_EQ(assigned.body["work_secret"], "c2VjcmV0");
  EXPECT_EQ(assigned.body["delivered"], true);
  EXPECT_EQ(pods_.delivery_writes, 0);
  EXPECT_EQ(pods_.live_reads, 0);
  EXPECT_EQ(pods_.secret_reads, 0);
  EXPECT_EQ(service_.handed_over_secrets(), 0u);
  // Asked again after a lost answer: from the cluster, as the claim recorded it.
  pods_.sync();
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).body["work_secret"], "c2VjcmV0");
  EXPECT_EQ(service_.fetch(bearer(token)).status, 410);
  EXPECT_EQ(pods_.delivery_writes, 0);
}

// A hand-over is what a claim said, not what the apiserver holds: it never answers alone.
TEST_F(WarmAssignmentServiceTest, AHandOverTheApiserverDoesNotBackHandsOutNothing) {
  const std::string token = pods_.add_pod("warm-a");
  service_.hand_over({"uid-warm-a", {"work_1", "sesn-work_1", "run-work_1"}, "c2VjcmV0"});
  // Not assigned on the server: held, and a confirm is refused.
  EXPECT_EQ(service_.fetch(bearer(token), kNonce).status, 204);
  EXPECT_EQ(service_.confirm(bearer(token), confirm_body("work_1")).status, 409);
  // Assigned another item than the hand-over says: that item, with its Secret's secret.
  pods_.assign("warm-a", "work_2", "b3RoZXI=");
  const AssignmentAnswer assigned = service_.fetch(bearer(token), kNonce);
  ASSERT_EQ(assigned.status, 200);
  EXPECT_EQ(assigned.body["work_id"], "work_2");
  EXPECT_EQ(assigned.body["work_secret"], "b3RoZXI=");
  // Delivered while the cache has not caught up: a replay is refused all the same.
  EXPECT_EQ(service_.fetch(bearer(token)).status, 410);
  // Another pod's hand-over opens nothing for this token.
  const std::string other = pods_.add_pod("warm-b");
  service_.hand_over({"uid-warm-a", {"work_3", "sesn-work_3", "run-work_3"}, "c2VjcmV0"});
  EXPECT_EQ(service_.fetch(bearer(other), kNonce).status, 204);
  EXPECT_EQ(pods_.delivery_writes, 1);
}

// A hand-over is kept for a bounded time (by then the cache shows the assignment, or the runner
// never asked), so the secrets held in memory stay few; once delivered it holds no secret.
TEST_F(WarmAssignmentServiceTest, HandOversAreForgottenAfterABoundAndDropTheirSecretOnDelivery) {
  const std::string token = pods_.add_pod("warm-a");
  pods_.assign("warm-a", "work_1", "c2VjcmV0");
  service_.hand_over({"uid-warm-a", {"work_1", "sesn-work_1", "run-work_1"}, "c2VjcmV0"});
  service_.hand_over({"uid-never-asks", {"work_9", "sesn-work_9", "run-work_9"}, "c2VjcmV0"});
  EXPECT_EQ(service_.handed_over_secrets(), 2u);
  ASSERT_EQ(service_.fetch(bearer(token), kNonce).status, 200);
  EXPECT_EQ(service_.handed_over_secrets(), 1u);
  clock_.advance(std::chrono::minutes(2));
  service_.hand_over({"uid-new", {"work_5", "sesn-work_5", "run-work_5"}, "c2VjcmV0"});
  EXPECT_EQ(service_.handed_over_secrets(), 1u);
  // Forgotten, the pod is answered from the cluster as before: the same runner again from the
  // Secret, anyone else nothing.
  pods_.sync();
  EXPECT_EQ(service_.fetch(bearer(token)).status, 410);
  const AssignmentAnswer again = service_.fetch(bearer(token), kNonce);
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.body["work_secret"], "c2VjcmV0");
  EXPECT_EQ(pods_.secret_reads, 1);
}

TEST(ReadWarmPod, OnlyAWarmPodWithItsTokensHashIsOne) {
  nlohmann::json cold = {
      {"metadata", {{"name", "run-x"}, {"labels", {{"perimeter.dev/work-id", "x"}}}}}};
  EXPECT_FALSE(read_warm_pod(cold).has_value());
  nlohmann::json unhashed = {
      {"metadata", {{"name", "warm-x"}, {"labels", {{"perimeter.dev/warm", "true"}}}}}};
  EXPECT_FALSE(read_warm_pod(unhashed).has_value());
  nlohmann::json half_assigned = unhashed;
  half_assigned["metadata"]["annotations"] = {{"perimeter.dev/warm-token-sha256", "ab"},
                                              {"perimeter.dev/assigned-work-id", "work_1"}};
  std::optional<WarmPod> warm = read_warm_pod(half_assigned);
  ASSERT_TRUE(warm.has_value());
  EXPECT_FALSE(warm->assignment.has_value());
  EXPECT_FALSE(warm->finished);
}

}  // namespace
}  // namespace perimeter::agentenvironment
