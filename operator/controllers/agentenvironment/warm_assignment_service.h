#pragma once

// The operator's side of a warm runner's assignment (docs/warm-pool.md): who is asking, from the
// token the operator minted for one warm pod, and what that pod has been assigned, from the pod
// and its session's Secret. Any replica, or the operator after a restart, answers the same from
// the cluster; what the claim that assigned a pod hands over only makes the answer sooner.

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "controllers/agentenvironment/runner_naming.h"
#include "core/clock.h"

namespace perimeter::agentenvironment {

// A credential for one warm pod: `token` goes into the pod's own Secret, `sha256` onto the pod.
// Holds the token: never log it.
struct WarmPodToken {
  std::string token{};
  std::string sha256{};
};
// 32 bytes from OpenSSL's CSPRNG, as hex. Throws pki::PkiError.
WarmPodToken mint_warm_pod_token();

struct WarmPodAssignment {
  std::string work_id{};
  std::string session_id{};
  std::string secret_name{};
};

// What the claim that assigned a warm pod knows the moment its patch is answered: the pod's
// held request is then decided at once, before the pod informer's event, and the work secret is
// not read back from the Secret the claim wrote. Holds the work secret: never log it.
struct WarmHandOver {
  std::string pod_uid{};
  WarmPodAssignment assignment{};
  std::string work_secret{};
  // The nonce hash the claim's assignment recorded the delivery to (WarmPodRef's
  // waiting_nonce_sha256); empty when it recorded none and the answer records it.
  std::string delivered_to{};
};

// What the assignment service reads of a warm pod.
struct WarmPod {
  std::string ns{};
  std::string name{};
  std::string uid{};
  std::string resource_version{};
  std::string token_sha256{};
  // Succeeded, Failed, or being deleted: its runner will serve nothing more.
  bool finished = false;
  std::optional<WarmPodAssignment> assignment{};
  // The assignment was delivered (kAnnotationAssignmentConfirmedAt), to the runner that sent the
  // nonce hashed here (empty for a runner that sent none).
  bool confirmed = false;
  std::string delivery_nonce_sha256{};
};

// A warm pod as the informer cache holds it; nullopt for a pod without the warm label or the
// token's hash. An assignment with a missing field reads as none.
std::optional<WarmPod> read_warm_pod(const nlohmann::json& pod);

// The assignment service's I/O boundary: the pod cache and the apiserver.
class WarmPodDirectory {
 public:
  virtual ~WarmPodDirectory() = default;
  // The warm pod whose kAnnotationWarmTokenSha256 is `token_sha256`, from the cache.
  virtual std::optional<WarmPod> find_by_token_sha256(const std::string& token_sha256) = 0;
  // `pod` as the apiserver holds it now, not as the cache does: read when a delivery cannot be
  // recorded, to decide from what is there. nullopt when the pod is gone. Throws on failures
  // that may pass.
  virtual std::optional<WarmPod> read_live(const WarmPod& pod) = 0;
  // The work secret in the session Secret `name`; nullopt when there is no such Secret. Throws
  // on failures that may pass.
  virtual std::optional<std::string> read_work_secret(const std::string& ns,
                                                      const std::string& name) = 0;
  // Records on the apiserver's pod that `assignment` is delivered: kAnnotationAssignmentConfirmedAt
  // `delivered_at` and, when not empty, kAnnotationAssignmentNonceSha256 `nonce_sha256`, in one
  // write that holds only if the pod is still `pod.uid`, not being deleted, assigned exactly
  // `assignment`, and not delivered yet, whatever else changed on it (the kubelet's status, a
  // label). false when the pod is not that (or is gone): read it and decide again. Throws on
  // other failures.
  virtual bool mark_delivered(const WarmPod& pod, const WarmPodAssignment& assignment,
                              const std::string& nonce_sha256, const std::string& delivered_at) = 0;
};

// An HTTP answer: the status and a JSON body (the assignment for 200, which holds the work
// secret; {"error": ...} for the refusals; null for 204).
struct AssignmentAnswer {
  int status = 0;
  nlohmann::json body{};
};

// The protocol of runner/warm_assignment.h, decided from the directory:
//   fetch:   no or unknown token 401; pod finished 410; delivered already: to the nonce this
//            request carries, the same assignment again, otherwise 410; no assignment in the
//            cache and none handed over, 204 (the server holds the request and asks again);
//            otherwise the work secret (from the hand-over when it names the same item, else
//            from the Secret: not readable 503) and the delivery recorded on the apiserver's pod
//            (mark_delivered), and only then 200 {"work_id","session_id","work_secret",
//            "delivered": true}. A pod that is not what the cache or the hand-over said is read
//            and decided again, up to kDeliveryAttempts marks, then 503 (the runner retries):
//            replaced, finished or gone there is 410, not assigned there 204.
//   confirm: for runners that ask without a nonce and confirm after (an earlier version): as
//            fetch for the token; a body that is not {"work_id": string} 400; not assigned that
//            work id 409; otherwise 204, the delivery recorded if it is not yet.
// `count` is told each answer's outcome, for a metric.
class WarmAssignmentService {
 public:
  using OutcomeCounter = std::function<void(std::string_view outcome)>;
  WarmAssignmentService(WarmPodDirectory& pods, const Clock& clock, OutcomeCounter count);

  // `nonce` is the value the runner sends with every fetch of its life (kNonceHeader), empty
  // when it sends none.
  AssignmentAnswer fetch(std::string_view authorization, std::string_view nonce = {});
  AssignmentAnswer confirm(std::string_view authorization, std::string_view body);

  // A claim assigned a pod (its patch answered). Kept kHandOverKept: by then the cache shows the
  // assignment, or the runner never asked. A secret leaves only once the apiserver's pod took the
  // delivery of that very assignment: recorded by the claim's own patch to the nonce in
  // `delivered_to`, so only a request with that nonce is answered, at once; or, with none
  // recorded, by the answer's write.
  void hand_over(WarmHandOver hand_over);
  // The nonce hash the held request of the pod `pod_uid` carried when last decided, within
  // kWaitingNonceFresh (a held request is decided again at each recheck, every second): the
  // runner of that pod is waiting now. The claim records the delivery to it with the assignment.
  std::optional<std::string> waiting_nonce(const std::string& pod_uid);
  // Hand-overs whose work secret is still held (not delivered, not expired); for tests.
  std::size_t handed_over_secrets();

  static constexpr std::chrono::seconds kHandOverKept{60};
  static constexpr std::chrono::seconds kWaitingNonceFresh{3};
  // Marks tried per answer when the apiserver's pod is not what it was decided from (each after
  // a read).
  static constexpr int kDeliveryAttempts = 3;
  // The request header that carries the runner's nonce.
  static constexpr std::string_view kNonceHeader = "Perimeter-Assignment-Nonce";
  // Longer nonces are refused (400): a runner sends 64 hex characters.
  static constexpr std::size_t kMaxNonceBytes = 256;

 private:
  struct Kept {
    WarmHandOver hand_over{};
    Clock::TimePoint kept_until{};
    // Delivered (its secret dropped): the token opens nothing more but for the nonce hashed in
    // `delivery_nonce_sha256`, whatever the cache shows yet.
    bool delivered = false;
    std::string delivery_nonce_sha256{};
  };
  // The pod the bearer token in `authorization` was minted for, or the refusal to send.
  std::optional<WarmPod> authenticate(std::string_view authorization, AssignmentAnswer* refusal);
  AssignmentAnswer answer(std::string_view outcome, int status, nlohmann::json body);
  // The hand-over kept for `pod_uid`, if any (a copy: the lock is not held after).
  std::optional<Kept> kept_for(const std::string& pod_uid);
  // Applies `change` to the hand-over kept for `pod_uid`, if one is.
  void update_kept(const std::string& pod_uid, const std::function<void(Kept&)>& change);
  // `pod` as the apiserver holds it, or nullopt with the refusal to send: 503 when it cannot be
  // read, 410 when it is gone, replaced (another uid) or finished.
  std::optional<WarmPod> read_live(const WarmPod& pod, AssignmentAnswer* refusal);
  // The work secret of `assignment`: from `kept` when it hands over that very item, else from
  // the Secret; nullopt with the refusal (503) when it cannot be had.
  std::optional<std::string> work_secret_of(const WarmPod& pod, const WarmPodAssignment& assignment,
                                            const std::optional<Kept>& kept,
                                            AssignmentAnswer* refusal);
  // 410 to a fetch for an assignment delivered to another runner (or to a nonce-less one).
  AssignmentAnswer delivered_elsewhere();
  // Marks the hand-over kept for `pod_uid`, if any, delivered to `nonce_sha256` and drops its
  // secret.
  void remember_delivery(const std::string& pod_uid, const std::string& nonce_sha256);
  // The assignment's 200, counted as `outcome`.
  AssignmentAnswer deliver(std::string_view outcome, const WarmPodAssignment& assignment,
                           const std::string& work_secret);
  // The answer to a fetch for an assignment delivered already: the same assignment again to the
  // runner it was delivered to (its nonce), 410 to anyone else.
  AssignmentAnswer delivered_already(const WarmPod& pod, const std::string& delivered_to,
                                     const std::string& nonce_sha256,
                                     const std::optional<Kept>& kept);
  void forget_expired_locked();
  void note_waiting(const std::string& pod_uid, const std::string& nonce_sha256);

  WarmPodDirectory& pods_;
  const Clock& clock_;
  OutcomeCounter count_;
  std::mutex kept_mutex_;
  std::map<std::string, Kept> kept_;  // by pod uid
  struct Waiting {
    std::string nonce_sha256{};
    Clock::TimePoint fresh_until{};
  };
  std::mutex waiting_mutex_;
  std::map<std::string, Waiting> waiting_;  // by pod uid
  Clock::TimePoint next_waiting_sweep_{};
};

}  // namespace perimeter::agentenvironment
