#include "controllers/agentenvironment/warm_assignment_service.h"

#include <cctype>
#include <utility>

#include "controllers/agentenvironment/runner_pod_cache.h"
#include "core/time_format.h"
#include "pki/hmac.h"

namespace perimeter::agentenvironment {

namespace {

// The token of "Bearer <token>" (the scheme in any case, RFC 7235), or empty.
std::string_view bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return {};
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return {};
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

nlohmann::json error_body(std::string_view message) {
  return nlohmann::json{{"error", std::string(message)}};
}

}  // namespace

WarmPodToken mint_warm_pod_token() {
  WarmPodToken minted;
  minted.token = pki::random_key_hex(32);
  minted.sha256 = pki::sha256_hex(minted.token);
  return minted;
}

std::optional<WarmPod> read_warm_pod(const nlohmann::json& pod) {
  static const std::string kMetadata = "metadata";
  static const std::string kLabels = "labels";
  static const std::string kAnnotations = "annotations";
  static const std::string kStatus = "status";
  if (!pod.is_object() || !pod.contains(kMetadata)) return std::nullopt;
  const nlohmann::json& metadata = pod[kMetadata];
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& labels = metadata.contains(kLabels) ? metadata[kLabels] : empty;
  const nlohmann::json& annotations =
      metadata.contains(kAnnotations) ? metadata[kAnnotations] : empty;
  if (cached_string(labels, std::string(kLabelWarm)) != "true") return std::nullopt;
  WarmPod warm;
  warm.token_sha256 = cached_string(annotations, std::string(kAnnotationWarmTokenSha256));
  if (warm.token_sha256.empty()) return std::nullopt;
  warm.ns = cached_string(metadata, "namespace");
  warm.name = cached_string(metadata, "name");
  warm.uid = cached_string(metadata, "uid");
  warm.resource_version = cached_string(metadata, "resourceVersion");
  const std::string& phase =
      pod.contains(kStatus) ? cached_string(pod[kStatus], "phase") : cached_string(empty, "phase");
  warm.finished =
      phase == "Succeeded" || phase == "Failed" ||
      (metadata.contains("deletionTimestamp") && !metadata["deletionTimestamp"].is_null());
  WarmPodAssignment assignment;
  assignment.work_id = cached_string(annotations, std::string(kAnnotationAssignedWorkId));
  assignment.session_id = cached_string(annotations, std::string(kAnnotationAssignedSessionId));
  assignment.secret_name = cached_string(annotations, std::string(kAnnotationAssignedSecret));
  if (!assignment.work_id.empty() && !assignment.session_id.empty() &&
      !assignment.secret_name.empty()) {
    warm.assignment = std::move(assignment);
  }
  warm.confirmed =
      !cached_string(annotations, std::string(kAnnotationAssignmentConfirmedAt)).empty();
  warm.delivery_nonce_sha256 =
      cached_string(annotations, std::string(kAnnotationAssignmentNonceSha256));
  return warm;
}

WarmAssignmentService::WarmAssignmentService(WarmPodDirectory& pods, const Clock& clock,
                                             OutcomeCounter count)
    : pods_(pods), clock_(clock), count_(std::move(count)) {}

AssignmentAnswer WarmAssignmentService::answer(std::string_view outcome, int status,
                                               nlohmann::json body) {
  if (count_) count_(outcome);
  return AssignmentAnswer{status, std::move(body)};
}

std::optional<WarmPod> WarmAssignmentService::authenticate(std::string_view authorization,
                                                           AssignmentAnswer* refusal) {
  const std::string_view token = bearer_token(authorization);
  // One answer for a missing token and a wrong one: the caller learns nothing about which pods
  // exist.
  if (token.empty()) {
    *refusal = answer("unauthenticated", 401, error_body("a warm pod's bearer token is required"));
    return std::nullopt;
  }
  // Looked up by the token's hash, so the lookup's timing says nothing about the token.
  const std::string hash = pki::sha256_hex(token);
  std::optional<WarmPod> pod = pods_.find_by_token_sha256(hash);
  if (!pod || !pki::constant_time_equal(pod->token_sha256, hash)) {
    *refusal = answer("unauthenticated", 401, error_body("a warm pod's bearer token is required"));
    return std::nullopt;
  }
  if (pod->finished) {
    *refusal = answer("gone", 410, error_body("this warm pod has finished"));
    return std::nullopt;
  }
  return pod;
}

void WarmAssignmentService::hand_over(WarmHandOver hand_over) {
  std::lock_guard lock(kept_mutex_);
  forget_expired_locked();
  const std::string uid = hand_over.pod_uid;
  kept_[uid] = Kept{std::move(hand_over), clock_.now() + kHandOverKept, false, {}};
}

std::size_t WarmAssignmentService::handed_over_secrets() {
  std::lock_guard lock(kept_mutex_);
  forget_expired_locked();
  std::size_t secrets = 0;
  for (const auto& [uid, kept] : kept_) secrets += !kept.delivered;
  return secrets;
}

std::optional<WarmAssignmentService::Kept> WarmAssignmentService::kept_for(
    const std::string& pod_uid) {
  std::lock_guard lock(kept_mutex_);
  forget_expired_locked();
  const auto it = kept_.find(pod_uid);
  if (it == kept_.end()) return std::nullopt;
  return it->second;
}

void WarmAssignmentService::update_kept(const std::string& pod_uid,
                                        const std::function<void(Kept&)>& change) {
  std::lock_guard lock(kept_mutex_);
  if (const auto it = kept_.find(pod_uid); it != kept_.end()) change(it->second);
}

std::optional<WarmPod> WarmAssignmentService::read_live(const WarmPod& pod,
                                                        AssignmentAnswer* refusal) {
  std::optional<WarmPod> live;
  try {
    live = pods_.read_live(pod);
  } catch (const std::exception& error) {
    *refusal = answer("unavailable", 503,
                      error_body(std::string("the warm pod cannot be read: ") + error.what()));
    return std::nullopt;
  }
  if (!live || live->uid != pod.uid || live->finished) {
    *refusal = answer("gone", 410, error_body("this warm pod has finished"));
    return std::nullopt;
  }
  return live;
}

std::optional<std::string> WarmAssignmentService::waiting_nonce(const std::string& pod_uid) {
  std::lock_guard lock(waiting_mutex_);
  const auto it = waiting_.find(pod_uid);
  if (it == waiting_.end() || it->second.fresh_until <= clock_.now()) return std::nullopt;
  return it->second.nonce_sha256;
}

void WarmAssignmentService::note_waiting(const std::string& pod_uid,
                                         const std::string& nonce_sha256) {
  std::lock_guard lock(waiting_mutex_);
  const auto now = clock_.now();
  // Pods that stopped asking (assigned, ended, deleted) leave with their freshness, swept once per
  // freshness period rather than at each of the pool's held requests.
  if (now >= next_waiting_sweep_) {
    std::erase_if(waiting_, [now](const auto& entry) { return entry.second.fresh_until <= now; });
    next_waiting_sweep_ = now + kWaitingNonceFresh;
  }
  if (!nonce_sha256.empty()) waiting_[pod_uid] = Waiting{nonce_sha256, now + kWaitingNonceFresh};
}

void WarmAssignmentService::forget_expired_locked() {
  const auto now = clock_.now();
  std::erase_if(kept_, [now](const auto& entry) { return entry.second.kept_until <= now; });
}

std::optional<std::string> WarmAssignmentService::work_secret_of(
    const WarmPod& pod, const WarmPodAssignment& assignment, const std::optional<Kept>& kept,
    AssignmentAnswer* refusal) {
  if (kept && !kept->delivered && kept->hand_over.assignment.work_id == assignment.work_id &&
      kept->hand_over.assignment.secret_name == assignment.secret_name) {
    return kept->hand_over.work_secret;  // what the claim wrote into that Secret
  }
  std::optional<std::string> work_secret;
  try {
    work_secret = pods_.read_work_secret(pod.ns, assignment.secret_name);
  } catch (const std::exception& error) {
    *refusal =
        answer("unavailable", 503,
               error_body(std::string("the session's Secret cannot be read: ") + error.what()));
    return std::nullopt;
  }
  // The claim writes the Secret before it assigns the pod, so this is a Secret removed since:
  // the claims sweep decides about it, and the runner asks again.
  if (!work_secret || work_secret->empty()) {
    *refusal = answer("unavailable", 503, error_body("the session's Secret is not there"));
    return std::nullopt;
  }
  return work_secret;
}

AssignmentAnswer WarmAssignmentService::delivered_elsewhere() {
  return answer("gone", 410, error_body("this warm pod's assignment was already delivered"));
}

void WarmAssignmentService::remember_delivery(const std::string& pod_uid,
                                              const std::string& nonce_sha256) {
  // The token opens nothing from now on but for this nonce, whatever the cache shows, and the
  // hand-over's secret goes.
  update_kept(pod_uid, [&](Kept& entry) {
    entry.delivered = true;
    entry.delivery_nonce_sha256 = nonce_sha256;
    entry.hand_over.work_secret.clear();
  });
}

AssignmentAnswer WarmAssignmentService::deliver(std::string_view outcome,
                                                const WarmPodAssignment& assignment,
                                                const std::string& work_secret) {
  return answer(outcome, 200,
                nlohmann::json{{"work_id", assignment.work_id},
                               {"session_id", assignment.session_id},
                               {"work_secret", work_secret},
                               {"delivered", true}});
}

AssignmentAnswer WarmAssignmentService::delivered_already(const WarmPod& pod,
                                                          const std::string& delivered_to,
                                                          const std::string& nonce_sha256,
                                                          const std::optional<Kept>& kept) {
  // Once the runner holds its assignment the token opens nothing: the agent's own commands,
  // which start later in the same pod, could read the token's file. The nonce never touches the
  // pod's files: only the runner that asked holds it.
  if (nonce_sha256.empty() || delivered_to.empty() ||
      !pki::constant_time_equal(delivered_to, nonce_sha256)) {
    return delivered_elsewhere();
  }
  // Its answer was lost on the way: the same assignment, as the apiserver's pod holds it.
  std::optional<WarmPod> live = pod.assignment ? std::optional<WarmPod>(pod) : std::nullopt;
  if (!live) {
    AssignmentAnswer refusal;
    live = read_live(pod, &refusal);
    if (!live) return refusal;
  }
  if (!live->assignment) {
    return delivered_elsewhere();
  }
  AssignmentAnswer refusal;
  const std::optional<std::string> work_secret =
      work_secret_of(*live, *live->assignment, kept, &refusal);
  if (!work_secret) return refusal;
  return deliver("redelivered", *live->assignment, *work_secret);
}

AssignmentAnswer WarmAssignmentService::fetch(std::string_view authorization,
                                              std::string_view nonce) {
  AssignmentAnswer refusal;
  std::optional<WarmPod> pod = authenticate(authorization, &refusal);
  if (!pod) return refusal;
  if (nonce.size() > kMaxNonceBytes) {
    return answer("bad_request", 400, error_body("the nonce is too long"));
  }
  const std::string nonce_sha256 = nonce.empty() ? std::string() : pki::sha256_hex(nonce);
  const std::optional<Kept> kept = kept_for(pod->uid);
  if (kept && !kept->delivered && !kept->hand_over.delivered_to.empty()) {
    // The claim recorded the delivery to the runner that was waiting, with its assignment: that
    // runner is answered from memory, at once, and anyone else not at all.
    if (nonce_sha256.empty() ||
        !pki::constant_time_equal(kept->hand_over.delivered_to, nonce_sha256)) {
      return delivered_elsewhere();
    }
    remember_delivery(pod->uid, nonce_sha256);
    return deliver("assigned", kept->hand_over.assignment, kept->hand_over.work_secret);
  }
  if (kept && kept->delivered) {
    return delivered_already(*pod, kept->delivery_nonce_sha256, nonce_sha256, kept);
  }
  if (pod->confirmed) {
    return delivered_already(*pod, pod->delivery_nonce_sha256, nonce_sha256, kept);
  }
  // Neither the cache nor a claim of this process says the pod is assigned: held, at no cost.
  if (!pod->assignment && !kept) {
    note_waiting(pod->uid, nonce_sha256);
    return answer("waiting", 204, nullptr);
  }
  // The cache may lag the claim's assignment (the hand-over has it) or a delivery made a moment
  // ago: the delivery's write holds only on the pod it was decided from, and a pod that is not
  // that is read and decided again.
  WarmPodAssignment assignment = pod->assignment ? *pod->assignment : kept->hand_over.assignment;
  for (int attempt = 0;; ++attempt) {
    const std::optional<std::string> work_secret = work_secret_of(*pod, assignment, kept, &refusal);
    if (!work_secret) return refusal;
    bool marked = false;
    try {
      marked = pods_.mark_delivered(*pod, assignment, nonce_sha256,
                                    format_rfc3339_micros(clock_.wall_now()));
    } catch (const std::exception& error) {
      return answer("unavailable", 503,
                    error_body(std::string("the delivery cannot be recorded: ") + error.what()));
    }
    if (marked) {
      remember_delivery(pod->uid, nonce_sha256);
      return deliver("assigned", assignment, *work_secret);
    }
    if (attempt == kDeliveryAttempts - 1) break;
    std::optional<WarmPod> live = read_live(*pod, &refusal);
    if (!live) return refusal;
    if (live->confirmed) {
      return delivered_already(*live, live->delivery_nonce_sha256, nonce_sha256, kept);
    }
    // A hand-over the apiserver does not back hands out nothing; an assignment is never taken
    // back, so this is one the cache showed before the claim's write landed.
    if (!live->assignment) return answer("waiting", 204, nullptr);
    pod = std::move(live);
    assignment = *pod->assignment;
  }
  // The pod changed under every try: the runner asks again.
  return answer("unavailable", 503, error_body("the pod changed; ask again"));
}

AssignmentAnswer WarmAssignmentService::confirm(std::string_view authorization,
                                                std::string_view body) {
  AssignmentAnswer refusal;
  std::optional<WarmPod> pod = authenticate(authorization, &refusal);
  if (!pod) return refusal;
  std::string work_id;
  try {
    const nlohmann::json parsed = nlohmann::json::parse(body);
    work_id = parsed.at("work_id").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    return answer("bad_request", 400, error_body("the body must be {\"work_id\": string}"));
  }
  // Every fetch this service answers records its delivery first, so a confirm usually finds it
  // done; only an assignment an earlier version handed out is recorded here.
  const std::optional<Kept> kept = kept_for(pod->uid);
  if (kept && kept->delivered && kept->hand_over.assignment.work_id == work_id) {
    return answer("confirmed", 204, nullptr);
  }
  if (pod->confirmed && pod->assignment && pod->assignment->work_id == work_id) {
    return answer("confirmed", 204, nullptr);
  }
  for (int attempt = 0; attempt < kDeliveryAttempts; ++attempt) {
    pod = read_live(*pod, &refusal);
    if (!pod) return refusal;
    if (!pod->assignment || pod->assignment->work_id != work_id) {
      return answer("mismatch", 409, error_body("this warm pod is not assigned that work item"));
    }
    if (pod->confirmed) return answer("confirmed", 204, nullptr);
    try {
      if (pods_.mark_delivered(*pod, *pod->assignment, "",
                               format_rfc3339_micros(clock_.wall_now()))) {
        return answer("confirmed", 204, nullptr);
      }
    } catch (const std::exception& error) {
      return answer("unavailable", 503,
                    error_body(std::string("the confirm cannot be recorded: ") + error.what()));
    }
  }
  return answer("unavailable", 503, error_body("the pod changed; ask again"));
}

}  // namespace perimeter::agentenvironment
