#include "controllers/agentenvironment/kube_session_objects.h"

#include <algorithm>

#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "core/time_format.h"
#include "kube/api_error.h"

namespace perimeter::agentenvironment {

// Validation (422) and the admission answers that judge the object (PodSecurity, a webhook's
// denial) are refusals as built; every other 403 may pass without the spec changing (an exceeded
// quota when sessions end, RBAC when an administrator grants it, the ServiceAccount admission
// while a new namespace's default account is being created), so it is retried like any failure.
bool refused_as_built(const kube::ApiError& e) {
  if (e.kind() == kube::ErrorKind::kInvalid) return true;
  if (e.kind() != kube::ErrorKind::kForbidden) return false;
  const std::string& message = e.status_message();
  return message.find("violates PodSecurity") != std::string::npos ||
         (message.find("admission webhook") != std::string::npos &&
          message.find("denied the request") != std::string::npos);
}

namespace {

// Creates `object`; a refusal of the object as built becomes ObjectRefused, so the claim path
// can tell it from a failure that may pass.
nlohmann::json create_or_refuse(kube::ResourceClient& client, const std::string& ns,
                                const nlohmann::json& object,
                                const kube::RequestOptions& request = {}) {
  try {
    return client.create(ns, object, request);
  } catch (const kube::ApiError& e) {
    if (refused_as_built(e)) {
      throw ObjectRefused(e.status_message().empty() ? e.what() : e.status_message());
    }
    throw;
  }
}

// When the claim that wrote `object` polled its item (perimeter.dev/claimed-at).
std::optional<std::chrono::system_clock::time_point> claimed_at(const nlohmann::json& object) {
  return parse_rfc3339_micros(object["metadata"]
                                  .value("annotations", nlohmann::json::object())
                                  .value(std::string(kAnnotationClaimedAt), ""));
}

// Removes the Secret `name` if it belongs to `work_id` and no claim after the finished pod's
// (`pod_claimed_at`) has rewritten it, by the uid and resourceVersion read here; gone is fine.
// Retention reads a few fields of what it removes and nothing of the apiserver's answers to its
// deletes: building only those (not the Secret's data, nor the pod's spec and managedFields) was
// a tenth of the operator's CPU in operator_bench.
const kube::JsonFilter& nothing_of_the_answer() {
  static const kube::JsonFilter filter = kube::JsonFilter::members();
  return filter;
}

const kube::JsonFilter& secret_identity() {
  static const kube::JsonFilter filter = kube::JsonFilter::members().keep(
      "metadata",
      kube::JsonFilter::members().keep("uid").keep("resourceVersion").keep("annotations"));
  return filter;
}

// The uid and resourceVersion of what a write left, and nothing else of the answer.
const kube::JsonFilter& written_version() {
  static const kube::JsonFilter filter = kube::JsonFilter::members().keep(
      "metadata", kube::JsonFilter::members().keep("uid").keep("resourceVersion"));
  return filter;
}

ObjectVersion version_of(const nlohmann::json& answer) {
  const auto metadata = answer.find("metadata");
  if (metadata == answer.end() || !metadata->is_object()) return {};
  return {metadata->value("uid", ""), metadata->value("resourceVersion", "")};
}

kube::RequestOptions answer_filtered(const kube::JsonFilter& filter) {
  kube::RequestOptions options;
  options.answer = &filter;
  return options;
}

// The spec.activeDeadlineSeconds of a warm pod assigned at `now`: the kubelet counts it from the
// pod's start, so the pod's age plus the session's own deadline (docs/warm-pool.md "The
// deadline"). nullopt when the pod carries a deadline no later already (a warm pod an earlier
// version made): the apiserver refuses to raise one.
std::optional<std::int64_t> assigned_warm_pod_deadline(const WarmPodRef& pod,
                                                       std::int64_t session_deadline_seconds,
                                                       std::chrono::system_clock::time_point now) {
  // The apiserver's bound on activeDeadlineSeconds.
  constexpr std::int64_t kMaxDeadline = 2147483647;
  std::int64_t age = 0;
  if (pod.started_at && now > *pod.started_at) {
    // Rounded up: the session never gets less than its deadline.
    age = std::chrono::ceil<std::chrono::seconds>(now - *pod.started_at).count();
  }
  const std::int64_t deadline =
      age > kMaxDeadline - session_deadline_seconds ? kMaxDeadline : age + session_deadline_seconds;
  if (pod.active_deadline_seconds && *pod.active_deadline_seconds <= deadline) return std::nullopt;
  return deadline;
}

const kube::JsonFilter& pod_uid() {
  static const kube::JsonFilter filter =
      kube::JsonFilter::members().keep("metadata", kube::JsonFilter::members().keep("uid"));
  return filter;
}

void remove_session_secret(kube::ResourceClient& secrets, const std::string& ns,
                           const std::string& name, const std::string& work_id,
                           std::optional<std::chrono::system_clock::time_point> pod_claimed_at) {
  nlohmann::json secret;
  try {
    kube::RequestOptions identity_only;
    identity_only.answer = &secret_identity();
    secret = secrets.get(ns, name, identity_only);
  } catch (const kube::ApiError& e) {
    if (e.kind() == kube::ErrorKind::kNotFound) return;
    throw;
  }
  const auto& secret_metadata = secret["metadata"];
  if (secret_metadata.value("annotations", nlohmann::json::object())
          .value(std::string(kAnnotationWorkId), "") != work_id) {
    return;
  }
  // The item came back to the queue and a later claim rewrote the Secret for its next pod (made
  // after its ack, perhaps not yet): that claim's Secret stays.
  if (const auto secret_claimed_at = claimed_at(secret);
      secret_claimed_at && pod_claimed_at && *secret_claimed_at > *pod_claimed_at) {
    return;
  }
  kube::DeleteOptions secret_options;
  secret_options.precondition_uid = secret_metadata.value("uid", "");
  secret_options.precondition_resource_version = secret_metadata.value("resourceVersion", "");
  secret_options.answer = &nothing_of_the_answer();
  try {
    secrets.remove(ns, name, secret_options);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
  }
}

// Deletes the session Secret `name` as its claim wrote it, by the uid and resourceVersion
// `recorded` ("<uid>/<resourceVersion>", a pod's perimeter.dev/secret-version), without reading
// it. nullopt without a usable record; true when it is gone (deleted now, or before); false when
// it was written since (409), by a later claim of the item or by someone else.
std::optional<bool> remove_secret_as_recorded(kube::ResourceClient& secrets, const std::string& ns,
                                              const std::string& name,
                                              const std::string& recorded) {
  const auto slash = recorded.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= recorded.size()) {
    return std::nullopt;
  }
  kube::DeleteOptions as_written;
  as_written.precondition_uid = recorded.substr(0, slash);
  as_written.precondition_resource_version = recorded.substr(slash + 1);
  as_written.answer = &nothing_of_the_answer();
  try {
    secrets.remove(ns, name, as_written);
  } catch (const kube::ApiError& e) {
    if (e.kind() == kube::ErrorKind::kConflict) return false;
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
  return true;
}

}  // namespace

std::optional<ObjectVersion> KubeSessionObjectWriter::ensure_secret(const nlohmann::json& secret) {
  const std::string ns = secret["metadata"]["namespace"];
  const std::string name = secret["metadata"]["name"];
  const auto ours = claimed_at(secret);
  const std::string work_id =
      secret["metadata"]["annotations"].value(std::string(kAnnotationWorkId), "");
  // Create, or rewrite what is there with its resourceVersion: a write of another claim (or a
  // sweep's delete) in between sends us round again with what it left.
  for (int attempt = 0; attempt < 5; ++attempt) {
    try {
      return version_of(create_or_refuse(secrets_, ns, secret, answer_filtered(written_version())));
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
    }
    nlohmann::json existing;
    try {
      existing = secrets_.get(ns, name);
    } catch (const kube::ApiError& e) {
      if (e.kind() == kube::ErrorKind::kNotFound) continue;
      throw;
    }
    const auto annotations = existing["metadata"].value("annotations", nlohmann::json::object());
    if (annotations.value(std::string(kAnnotationWorkId), "") != work_id) {
      throw std::runtime_error("secret " + ns + "/" + name + " belongs to work item '" +
                               annotations.value(std::string(kAnnotationWorkId), "") + "', not '" +
                               work_id + "'");
    }
    // A claim that polled the item after us holds the secret the queue re-issued last.
    if (const auto theirs = claimed_at(existing); theirs && ours && *theirs > *ours) {
      return std::nullopt;
    }
    existing["metadata"]["annotations"][std::string(kAnnotationClaimedAt)] =
        secret["metadata"]["annotations"][std::string(kAnnotationClaimedAt)];
    existing.erase("data");
    existing["stringData"] = secret["stringData"];
    try {
      return version_of(secrets_.update(ns, existing, answer_filtered(written_version())));
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kConflict && e.kind() != kube::ErrorKind::kNotFound) throw;
    }
  }
  throw std::runtime_error("secret " + ns + "/" + name + " kept changing while it was written");
}

bool KubeSessionObjectWriter::ensure_pod(const nlohmann::json& pod) {
  const std::string ns = pod["metadata"]["namespace"];
  const std::string name = pod["metadata"]["name"];
  try {
    create_or_refuse(pods_, ns, pod, answer_filtered(nothing_of_the_answer()));
    return true;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
  }
  const auto existing = pods_.get(ns, name);
  const std::string want = pod["metadata"]["annotations"].value(std::string(kAnnotationWorkId), "");
  const auto annotations = existing["metadata"].value("annotations", nlohmann::json::object());
  const std::string have = annotations.value(std::string(kAnnotationWorkId), "");
  if (have != want) {
    throw std::runtime_error("pod " + ns + "/" + name + " belongs to work item '" + have +
                             "', not '" + want + "'");
  }
  if (!pod_finished(existing)) return false;  // a retried claim: the runner is (or will be) there
  // A finished pod of this very claim (made by a request whose answer was lost, or by the claims
  // sweep) has served it: making it again would run the session twice.
  const auto existing_claim = claimed_at(existing), this_claim = claimed_at(pod);
  if (!this_claim || (existing_claim && *existing_claim >= *this_claim)) return false;
  // The item came back to the queue (its lease lapsed) after this pod of an earlier claim had
  // finished: evicted, killed, or its node lost. That attempt is over, so the pod is replaced;
  // the item, acknowledged again, would otherwise have no runner. The uid precondition makes
  // sure only the finished pod seen here is removed.
  kube::DeleteOptions replace_finished;
  replace_finished.precondition_uid = existing["metadata"].value("uid", "");
  replace_finished.grace_period_seconds = 0;
  try {
    pods_.remove(ns, name, replace_finished);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
  }
  try {
    create_or_refuse(pods_, ns, pod, answer_filtered(nothing_of_the_answer()));
    return true;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
    // The kubelet has not let go of the old one yet: the poller tries again at its next pass.
    throw std::runtime_error("pod " + ns + "/" + name +
                             " of an earlier attempt at this item is still being removed");
  }
}

void KubeSessionObjectWriter::check_pod(const nlohmann::json& pod) {
  kube::RequestOptions dry_run = answer_filtered(nothing_of_the_answer());
  dry_run.dry_run = true;
  try {
    create_or_refuse(pods_, pod["metadata"]["namespace"], pod, dry_run);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
  }
}

void KubeSessionObjectWriter::release_pod(const std::string& ns, const std::string& name) {
  // Strategic merge deletes our gate by name, leaving any other controller's gates in place;
  // deleting a gate already gone is a no-op, so a retry is harmless.
  pods_.strategic_merge_patch(
      ns, name,
      {{"spec",
        {{"schedulingGates",
          {{{"$patch", "delete"}, {"name", std::string(kSchedulingGateAcknowledged)}}}}}}});
}

void KubeSessionObjectWriter::remove_finished(const nlohmann::json& pod) {
  if (pod["metadata"].contains("annotations") &&
      !cached_string(pod["metadata"]["annotations"], std::string(kAnnotationAssignedSecret))
           .empty()) {
    remove_assigned_warm_pod(pod);
    return;
  }
  const auto& metadata = pod["metadata"];
  const std::string ns = metadata.value("namespace", "");
  const std::string name = metadata.value("name", "");
  const std::string uid = metadata.value("uid", "");
  const auto annotations = metadata.value("annotations", nlohmann::json::object());
  const std::string work_id = annotations.value(std::string(kAnnotationWorkId), "");
  kube::DeleteOptions pod_options;
  pod_options.propagation_policy = "Background";
  pod_options.precondition_uid = uid;
  pod_options.answer = &nothing_of_the_answer();
  const auto remove_pod = [&] {
    try {
      pods_.remove(ns, name, pod_options);
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
    }
  };

  // The Secret goes first. The pod has finished, so nothing reads the Secret any more; had the
  // pod gone first, a crash or a failed request before the Secret's delete would leave a Secret
  // whose pod no cache shows again, and only the orphan sweep, minutes later, would take it. In
  // this order what is left is the finished pod, and the next pass removes it.
  // The claim that made the pod recorded the Secret as it wrote it: deleting by that uid and
  // resourceVersion removes that Secret and nothing written since, without reading it. A later
  // claim of the item rewrites the Secret (or makes it again) before its ack, and so before any
  // pod of its own: its Secret differs, the delete is refused, and the read below decides. A
  // pod made without rewriting the Secret (the claims sweep's, for an acknowledged claim) is
  // made only once neither the cache nor the apiserver shows this one, and the sweep runs in
  // the same reconcile as this retention, after it; docs/claiming.md has the argument.
  const std::string recorded = annotations.value(std::string(kAnnotationSecretVersion), "");
  if (const auto removed = work_id.empty()
                               ? std::nullopt
                               : remove_secret_as_recorded(secrets_, ns, name, recorded)) {
    // Written since: by a later claim (whose Secret stays) or by someone else.
    if (!*removed) remove_session_secret(secrets_, ns, name, work_id, claimed_at(pod));
    remove_pod();
    return;
  }
  // A pod without that record (made by the claims sweep, or by an earlier version): the Secret
  // goes only while the apiserver's pod of that name is the one cached, since a pod made since
  // (a new attempt at the item, after the cache saw this one) uses the Secret, and both stay.
  bool pod_exists = true;
  try {
    kube::RequestOptions uid_only;
    uid_only.answer = &pod_uid();
    if (pods_.get(ns, name, uid_only)["metadata"].value("uid", "") != uid) return;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
    pod_exists = false;
  }
  remove_session_secret(secrets_, ns, name, work_id, claimed_at(pod));
  if (pod_exists) remove_pod();
}

void KubeSessionObjectWriter::remove_assigned_warm_pod(const nlohmann::json& pod) {
  const auto& metadata = pod["metadata"];
  const std::string ns = metadata.value("namespace", "");
  const std::string name = metadata.value("name", "");
  const auto annotations = metadata.value("annotations", nlohmann::json::object());
  const std::string work_id = annotations.value(std::string(kAnnotationAssignedWorkId), "");
  const std::string session_secret = annotations.value(std::string(kAnnotationAssignedSecret), "");

  // The session's Secret first, then the pod's own, then the pod, for the reason the cold path
  // gives: a crash or a failed request in between leaves the finished pod, and the next pass
  // removes what is left. The session Secret is named after the work item, not the pod, and
  // outlives this pod when a later claim of the item rewrote it (the item came back after this
  // pod failed): the recorded version, then the claimed-at read, keep that one.
  const auto removed = remove_secret_as_recorded(
      secrets_, ns, session_secret, annotations.value(std::string(kAnnotationSecretVersion), ""));
  if (!removed || !*removed) {
    remove_session_secret(secrets_, ns, session_secret, work_id, claimed_at(pod));
  }

  // The pod's own Secret (its token and the assignment service's CA): only a warm pod's Secret,
  // by the uid and resourceVersion read here.
  static const kube::JsonFilter own_secret_identity = kube::JsonFilter::members().keep(
      "metadata", kube::JsonFilter::members().keep("uid").keep("resourceVersion").keep("labels"));
  try {
    kube::RequestOptions identity_only;
    identity_only.answer = &own_secret_identity;
    const auto own = secrets_.get(ns, name, identity_only);
    const auto& own_metadata = own["metadata"];
    if (own_metadata.value("labels", nlohmann::json::object()).value(std::string(kLabelWarm), "") ==
        "true") {
      kube::DeleteOptions listed;
      listed.precondition_uid = own_metadata.value("uid", "");
      listed.precondition_resource_version = own_metadata.value("resourceVersion", "");
      listed.answer = &nothing_of_the_answer();
      secrets_.remove(ns, name, listed);
    }
  } catch (const kube::ApiError& e) {
    // Changed since the read: the claims sweep removes a runner Secret without its pod.
    if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
  }

  kube::DeleteOptions pod_options;
  pod_options.propagation_policy = "Background";
  pod_options.precondition_uid = metadata.value("uid", "");
  pod_options.answer = &nothing_of_the_answer();
  try {
    pods_.remove(ns, name, pod_options);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
  }
}

bool KubeSessionObjectWriter::assign_warm_pod(const std::string& ns, const WarmPodRef& pod,
                                              const ClaimedSession& session,
                                              const std::string& secret_name,
                                              std::int64_t session_deadline_seconds) {
  // The contract's three annotations, and what a cold claim's pod records besides: when the
  // item was polled and the Secret's version (retention deletes by them, docs/claiming.md), and
  // the work and session labels (the session survey, and find_assigned_pod's selector).
  nlohmann::json annotations = {
      {std::string(kAnnotationAssignedWorkId), session.work_id},
      {std::string(kAnnotationAssignedSessionId), session.session_id},
      {std::string(kAnnotationAssignedSecret), secret_name},
  };
  if (!session.claimed_at.empty()) {
    annotations[std::string(kAnnotationClaimedAt)] = session.claimed_at;
  }
  if (!session.secret.uid.empty() && !session.secret.resource_version.empty()) {
    annotations[std::string(kAnnotationSecretVersion)] =
        session.secret.uid + "/" + session.secret.resource_version;
  }
  // Its runner is waiting with a known nonce: the delivery to it is recorded with the assignment,
  // under the same resourceVersion (a pod delivered already has another), and the held request is
  // answered without a write of its own.
  if (!pod.waiting_nonce_sha256.empty()) {
    annotations[std::string(kAnnotationAssignmentConfirmedAt)] =
        format_rfc3339_micros(clock_.wall_now());
    annotations[std::string(kAnnotationAssignmentNonceSha256)] = pod.waiting_nonce_sha256;
  }
  nlohmann::json patch = {{"metadata",
                           {{"resourceVersion", pod.resource_version},
                            {"labels",
                             {{std::string(kLabelWorkId), label_value_for(session.work_id)},
                              {std::string(kLabelSessionId), label_value_for(session.session_id)}}},
                            {"annotations", std::move(annotations)}}}};
  // In the same patch, under the same resourceVersion: the session's deadline lands with its
  // assignment or not at all. The apiserver lets a running pod's deadline be added or lowered.
  if (const auto deadline =
          assigned_warm_pod_deadline(pod, session_deadline_seconds, clock_.wall_now())) {
    patch["spec"] = {{"activeDeadlineSeconds", *deadline}};
  }
  try {
    pods_.merge_patch(ns, pod.name, patch, answer_filtered(nothing_of_the_answer()));
  } catch (const kube::ApiError& e) {
    if (e.kind() == kube::ErrorKind::kConflict || e.kind() == kube::ErrorKind::kNotFound) {
      return false;
    }
    throw;
  }
  return true;
}

std::optional<std::string> KubeSessionObjectWriter::find_assigned_pod(
    const std::string& ns, const std::string& environment_name, const std::string& work_id) {
  kube::ListOptions options;
  options.label_selector = std::string(kLabelEnvironment) + "=" +
                           label_value_for(environment_name) + "," + std::string(kLabelWarm) +
                           "=true," + std::string(kLabelWorkId) + "=" + label_value_for(work_id);
  const auto pods = pods_.list(ns, options);
  for (const auto& pod : pods.value("items", nlohmann::json::array())) {
    const auto& metadata = pod["metadata"];
    // The label may be a hash of a long id: the annotation holds the id itself.
    if (metadata.value("annotations", nlohmann::json::object())
            .value(std::string(kAnnotationAssignedWorkId), "") == work_id) {
      return metadata.value("name", "");
    }
  }
  return std::nullopt;
}

bool pod_finished(const nlohmann::json& pod) {
  const auto status = pod.find("status");
  if (status == pod.end()) return false;
  const std::string& phase = cached_string(*status, "phase");
  return phase == "Succeeded" || phase == "Failed";
}

namespace {

// Indexes of the runner-pod store: "namespace/<environment label>" of each unfinished pod, and
// of each pod still held by Perimeter's gate. A poll's census reads only those pods, not every
// finished pod the environment still keeps (operator_bench: walking them all on every poll was
// the operator's largest own cost per claim).
constexpr const char* kUnfinishedIndex = "perimeter.dev/unfinished-runner";
constexpr const char* kGatedIndex = "perimeter.dev/gated-runner";
// "namespace/<environment label>" of each ready, unassigned warm pod, and "namespace/<work id>"
// of each pod holding an assignment: a claim reads those pods only.
constexpr const char* kReadyWarmIndex = "perimeter.dev/ready-warm-runner";
constexpr const char* kAssignedIndex = "perimeter.dev/assigned-work";

std::string environment_index_value(const nlohmann::json& pod) {
  const auto metadata = pod.find("metadata");
  if (metadata == pod.end() || !metadata->is_object()) return {};
  const auto labels = metadata->find("labels");
  if (labels == metadata->end()) return {};
  const std::string& environment = cached_string(*labels, std::string(kLabelEnvironment));
  if (environment.empty()) return {};
  return cached_string(*metadata, "namespace") + "/" + environment;
}

bool gated_by_perimeter(const nlohmann::json& pod) {
  const auto spec = pod.find("spec");
  if (spec == pod.end() || !spec->is_object()) return false;
  const auto gates = spec->find("schedulingGates");
  if (gates == spec->end() || !gates->is_array()) return false;
  return std::any_of(gates->begin(), gates->end(), [](const nlohmann::json& gate) {
    return cached_string(gate, "name") == kSchedulingGateAcknowledged;
  });
}

const nlohmann::json& member_or_empty(const nlohmann::json& object, const std::string& key) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  if (!object.is_object()) return kEmpty;
  const auto it = object.find(key);
  return it == object.end() ? kEmpty : *it;
}

// The contract of docs/warm-pool.md, as the pool reads it: the warm label, no assignment, not
// being deleted, Running, its runner container running (its runner already asks for its item).
bool ready_unassigned_warm(const nlohmann::json& pod) {
  return unassigned_warm_pod(pod) && warm_pod_state(pod) == WarmPodState::kReady;
}

}  // namespace

StoreRunnerPodCensus::StoreRunnerPodCensus(runtime::Store& pods) : pods_(pods) {
  pods_.add_index(kReadyWarmIndex, [](const nlohmann::json& pod) -> std::vector<std::string> {
    if (!ready_unassigned_warm(pod)) return {};
    std::string value = environment_index_value(pod);
    if (value.empty()) return {};
    return {std::move(value)};
  });
  pods_.add_index(kAssignedIndex, [](const nlohmann::json& pod) -> std::vector<std::string> {
    const auto& metadata = member_or_empty(pod, "metadata");
    const std::string& work_id = cached_string(member_or_empty(metadata, "annotations"),
                                               std::string(kAnnotationAssignedWorkId));
    if (work_id.empty()) return {};
    return {cached_string(metadata, "namespace") + "/" + work_id};
  });
  pods_.add_index(kUnfinishedIndex, [](const nlohmann::json& pod) -> std::vector<std::string> {
    if (pod_finished(pod)) return {};
    std::string value = environment_index_value(pod);
    if (value.empty()) return {};
    return {std::move(value)};
  });
  pods_.add_index(kGatedIndex, [](const nlohmann::json& pod) -> std::vector<std::string> {
    if (!gated_by_perimeter(pod)) return {};
    std::string value = environment_index_value(pod);
    if (value.empty()) return {};
    return {std::move(value)};
  });
}

std::size_t StoreRunnerPodCensus::unfinished(const std::string& ns,
                                             const std::string& environment_name) {
  return pods_.count_by_index(kUnfinishedIndex, ns + "/" + label_value_for(environment_name));
}

std::map<std::string, std::string> StoreRunnerPodCensus::gated(
    const std::string& ns, const std::string& environment_name) {
  static const std::string kName = "name", kAnnotations = "annotations", kWorkId{kAnnotationWorkId};
  std::map<std::string, std::string> gated;
  for (const auto& pod :
       pods_.by_index(kGatedIndex, ns + "/" + label_value_for(environment_name))) {
    const auto& metadata = (*pod)["metadata"];
    const auto annotations = metadata.find(kAnnotations);
    gated[cached_string(metadata, kName)] =
        annotations == metadata.end() ? std::string() : cached_string(*annotations, kWorkId);
  }
  return gated;
}

bool StoreRunnerPodCensus::cached(const std::string& ns, const std::string& name) {
  return pods_.get(ns + "/" + name) != nullptr;
}

std::vector<WarmPodRef> StoreRunnerPodCensus::ready_warm_pods(const std::string& ns,
                                                              const std::string& environment_name) {
  auto pods = pods_.by_index(kReadyWarmIndex, ns + "/" + label_value_for(environment_name));
  // Oldest first (creationTimestamp is RFC 3339 in UTC, so it sorts as text; then by name): the
  // pod longest ready is the likeliest to have its request held already.
  std::sort(pods.begin(), pods.end(), [](const auto& a, const auto& b) {
    const auto& ma = (*a)["metadata"];
    const auto& mb = (*b)["metadata"];
    const auto& ca = cached_string(ma, "creationTimestamp");
    const auto& cb = cached_string(mb, "creationTimestamp");
    if (ca != cb) return ca < cb;
    return cached_string(ma, "name") < cached_string(mb, "name");
  });
  std::vector<WarmPodRef> ready;
  ready.reserve(pods.size());
  static const nlohmann::json kNone = nlohmann::json::object();
  const auto member = [](const nlohmann::json& object, const char* key) -> const nlohmann::json& {
    const auto it = object.find(key);
    return it == object.end() ? kNone : *it;
  };
  for (const auto& pod : pods) {
    const auto& metadata = (*pod)["metadata"];
    WarmPodRef ref{cached_string(metadata, "name"), cached_string(metadata, "uid"),
                   cached_string(metadata, "resourceVersion")};
    static const std::string kTemplate{kAnnotationWarmTemplate};
    ref.template_hash = cached_string(member(metadata, "annotations"), kTemplate);
    ref.started_at = parse_rfc3339(cached_string(member(*pod, "status"), "startTime"));
    if (!ref.started_at)
      ref.started_at = parse_rfc3339(cached_string(metadata, "creationTimestamp"));
    if (const auto& deadline = member(member(*pod, "spec"), "activeDeadlineSeconds");
        deadline.is_number_integer()) {
      ref.active_deadline_seconds = deadline.get<std::int64_t>();
    }
    ready.push_back(std::move(ref));
  }
  return ready;
}

std::optional<AssignedPod> StoreRunnerPodCensus::assigned_pod(const std::string& ns,
                                                              const std::string& work_id) {
  std::optional<AssignedPod> found;
  for (const auto& pod : pods_.by_index(kAssignedIndex, ns + "/" + work_id)) {
    AssignedPod candidate{cached_string((*pod)["metadata"], "name"), pod_finished(*pod)};
    if (!candidate.finished) return candidate;
    if (!found) found = std::move(candidate);
  }
  return found;
}

}  // namespace perimeter::agentenvironment
