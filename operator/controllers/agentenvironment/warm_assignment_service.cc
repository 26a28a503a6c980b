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
  kept_[uid] = Kept{std::move(hand_over), clock_.now() + kHandOverKept, std::nullopt, false};
}

std::size_t WarmAssignmentService::handed_over_secrets() {
  std::lock_guard lock(kept_mutex_);
  forget_expired_locked();
  std::size_t secrets = 0;
  for (const auto& [uid, kept] : kept_) secrets += !kept.confirmed;
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

void WarmAssignmentService::forget_expired_locked() {
  const auto now = clock_.now();
  std::erase_if(kept_, [now](const auto& entry) { return entry.second.kept_until <= now; });
}

AssignmentAnswer WarmAssignmentService::fetch(std::string_view authorization) {
  AssignmentAnswer refusal;
  std::optional<WarmPod> pod = authenticate(authorization, &refusal);
  if (!pod) return refusal;
  // Once the runner holds its assignment the token opens nothing: the agent's own commands,
  // which start later in the same pod, could read the token's file.
  const std::optional<Kept> kept = kept_for(pod->uid);
  if (pod->confirmed || (kept && kept->confirmed)) {
    return answer("gone", 410, error_body("this warm pod's assignment was already delivered"));
  }
  // Neither the cache nor a claim of this process says the pod is assigned: held, at no cost.
  if (!pod->assignment && !kept) return answer("waiting", 204, nullptr);
  // The cache may not show a confirm made a moment ago, nor the claim's assignment yet: the
  // apiserver decides before a secret leaves. One read per assignment handed out, none per held
  // request.
  std::optional<WarmPod> live = read_live(*pod, &refusal);
  if (!live) return refusal;
  if (live->confirmed) {
    return answer("gone", 410, error_body("this warm pod's assignment was already delivered"));
  }
  // An assignment is never taken back, so the live pod holds the one the cache showed.
  if (!live->assignment) return answer("waiting", 204, nullptr);
  pod = std::move(live);
  std::optional<std::string> work_secret;
  if (kept && kept->hand_over.assignment.work_id == pod->assignment->work_id &&
      kept->hand_over.assignment.secret_name == pod->assignment->secret_name) {
    work_secret = kept->hand_over.work_secret;  // what the claim wrote into that Secret
  } else {
    try {
      work_secret = pods_.read_work_secret(pod->ns, pod->assignment->secret_name);
    } catch (const std::exception& error) {
      return answer(
          "unavailable", 503,
          error_body(std::string("the session's Secret cannot be read: ") + error.what()));
    }
  }
  // The claim writes the Secret before it assigns the pod, so this is a Secret removed since:
  // the claims sweep decides about it, and the runner asks again.
  if (!work_secret || work_secret->empty()) {
    return answer("unavailable", 503, error_body("the session's Secret is not there"));
  }
  if (kept) update_kept(pod->uid, [&](Kept& entry) { entry.handed_out = *pod; });
  return answer("assigned", 200,
                nlohmann::json{{"work_id", pod->assignment->work_id},
                               {"session_id", pod->assignment->session_id},
                               {"work_secret", *work_secret}});
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
  // A runner answered from a hand-over confirms before the cache shows its assignment: the
  // apiserver's pod decides then, as it was read to hand the assignment out (a change since is
  // the patch's 409), or read now.
  const std::optional<Kept> kept = pod->assignment ? std::nullopt : kept_for(pod->uid);
  if (kept && kept->handed_out) {
    pod = kept->handed_out;
  } else if (kept) {
    pod = read_live(*pod, &refusal);
    if (!pod) return refusal;
  }
  // The pod changes under the confirm (the kubelet's status after the assignment's deadline, a
  // policy engine's label): a refused mark is decided again from the apiserver's pod at once,
  // a few times, rather than after the runner's backoff.
  bool marked = false;
  for (int attempt = 0;; ++attempt) {
    if (!pod->assignment || pod->assignment->work_id != work_id) {
      return answer("mismatch", 409, error_body("this warm pod is not assigned that work item"));
    }
    if (pod->confirmed) return answer("confirmed", 204, nullptr);
    try {
      marked = pods_.mark_confirmed(*pod, format_rfc3339_micros(clock_.wall_now()));
    } catch (const std::exception& error) {
      return answer("unavailable", 503,
                    error_body(std::string("the confirm cannot be recorded: ") + error.what()));
    }
    if (marked || attempt == kConfirmAttempts - 1) break;
    pod = read_live(*pod, &refusal);
    if (!pod) return refusal;
  }
  // Changed at every try: the runner asks again.
  if (!marked) {
    update_kept(pod->uid, [](Kept& entry) { entry.handed_out.reset(); });
    return answer("unavailable", 503, error_body("the pod changed; ask again"));
  }
  // The token opens nothing from now on, whatever the cache shows, and the secret goes.
  update_kept(pod->uid, [](Kept& entry) {
    entry.confirmed = true;
    entry.hand_over.work_secret.clear();
  });
  return answer("confirmed", 204, nullptr);
}

}  // namespace perimeter::agentenvironment
