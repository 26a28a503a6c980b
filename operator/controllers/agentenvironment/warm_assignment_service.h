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
  bool confirmed = false;
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
  // `pod` as the apiserver holds it now, not as the cache does: read before a work secret is
  // handed out, so a confirm the cache has not shown yet still closes the token. nullopt when
  // the pod is gone. Throws on failures that may pass.
  virtual std::optional<WarmPod> read_live(const WarmPod& pod) = 0;
  // The work secret in the session Secret `name`; nullopt when there is no such Secret. Throws
  // on failures that may pass.
  virtual std::optional<std::string> read_work_secret(const std::string& ns,
                                                      const std::string& name) = 0;
  // Sets kAnnotationAssignmentConfirmedAt on `pod` with a merge patch that carries
  // `pod.resource_version`: false when the pod changed since (409). Throws on other failures.
  virtual bool mark_confirmed(const WarmPod& pod, const std::string& confirmed_at) = 0;
};

// An HTTP answer: the status and a JSON body (the assignment for 200, which holds the work
// secret; {"error": ...} for the refusals; null for 204).
struct AssignmentAnswer {
  int status = 0;
  nlohmann::json body{};
};

// The protocol of runner/warm_assignment.h, decided from the directory:
//   fetch:   no or unknown token 401; pod finished, or assignment confirmed 410; no assignment
//            in the cache and none handed over, 204 (the server holds the request and asks
//            again); then the pod is read from the apiserver, and finished, replaced or confirmed
//            there is 410, not assigned there 204; the pod or the Secret not readable 503;
//            otherwise 200 {"work_id","session_id","work_secret"}, the secret from the hand-over
//            when it names the same item, else from the Secret.
//   confirm: as fetch for the token; a body that is not {"work_id": string} 400; no assignment
//            (in the cache, or in the apiserver when one was handed over), or another work id
//            than the pod's 409; confirmed already 204; the pod changed since it was read: read
//            again and decided again, up to kConfirmAttempts marks, then 503 (the runner
//            retries); otherwise 204 once the mark holds.
// `count` is told each answer's outcome, for a metric.
class WarmAssignmentService {
 public:
  using OutcomeCounter = std::function<void(std::string_view outcome)>;
  WarmAssignmentService(WarmPodDirectory& pods, const Clock& clock, OutcomeCounter count);

  AssignmentAnswer fetch(std::string_view authorization);
  AssignmentAnswer confirm(std::string_view authorization, std::string_view body);

  // A claim assigned a pod (its patch answered). Kept kHandOverKept: by then the cache shows the
  // assignment, or the runner never asked. It decides nothing alone: the pod is still read from
  // the apiserver before a secret leaves, and only the assignment found there is handed out.
  void hand_over(WarmHandOver hand_over);
  // Hand-overs whose work secret is still held (not confirmed, not expired); for tests.
  std::size_t handed_over_secrets();

  static constexpr std::chrono::seconds kHandOverKept{60};
  // Marks tried per confirm when the pod keeps changing under it (each after a read).
  static constexpr int kConfirmAttempts = 3;

 private:
  struct Kept {
    WarmHandOver hand_over{};
    Clock::TimePoint kept_until{};
    // The pod as the apiserver showed it when its assignment was handed out: the runner's
    // confirm, which follows at once, is marked against it rather than read again.
    std::optional<WarmPod> handed_out{};
    bool confirmed = false;  // its secret dropped; the token opens nothing more
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
  void forget_expired_locked();

  WarmPodDirectory& pods_;
  const Clock& clock_;
  OutcomeCounter count_;
  std::mutex kept_mutex_;
  std::map<std::string, Kept> kept_;  // by pod uid
};

}  // namespace perimeter::agentenvironment
