#include "controllers/agentenvironment/reconciler.h"

#include <algorithm>

#include "controllers/agentenvironment/duplicates.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/kube_warm_pool.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/warm_assignment_service.h"
#include "core/base64.h"
#include "core/time_format.h"
#include "kube/api_error.h"
#include "pki/pki.h"
#include "runtime/conditions.h"
#include "runtime/desired_state.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// At most this many sessions are newly counted by one status write, so pendingMarks stays small
// however many pods finish at once; the rest are counted by the next write.
constexpr size_t kMaxCountedPerWrite = 500;
using runtime::find_condition;
using runtime::json_contains;
using runtime::set_condition;

// Why a pod failed, in a word a person can act on.
std::string failure_reason(const json& pod) {
  const auto& status = pod.value("status", json::object());
  if (const std::string reason = status.value("reason", ""); !reason.empty()) return reason;
  for (const auto& container : status.value("containerStatuses", json::array())) {
    const auto terminated = container.value("state", json::object()).value("terminated", json());
    if (terminated.is_object()) {
      return terminated.value("reason", std::string("Error")) + " (exit code " +
             std::to_string(terminated.value("exitCode", -1)) + ")";
    }
  }
  return "Failed";
}

// The object an Event is about, in the shape the event recorder reads.
json involved_object(const std::string& name, const std::string& ns, const std::string& uid) {
  return {{"apiVersion", std::string(kGroup) + "/" + kVersion},
          {"kind", kKind},
          {"metadata", {{"name", name}, {"namespace", ns}, {"uid", uid}}}};
}

}  // namespace

AgentEnvironmentReconciler::AgentEnvironmentReconciler(ReconcilerDependencies deps,
                                                       ReconcilerOptions options)
    : deps_(std::move(deps)),
      options_(std::move(options)),
      thread_budget_(std::make_shared<PollThreadBudget>(options_.max_extra_poll_threads)),
      // A reconciler is made when leadership is won (Manager::lead): claims from now on are
      // this term's.
      start_latency_(deps_.metrics, deps_.clock.wall_now()) {
  warm_pods_ = deps_.warm_pods;
  if (warm_pods_ == nullptr) {
    own_warm_pods_ = std::make_unique<KubeWarmPodWriter>(deps_.secret_client, deps_.pod_client);
    warm_pods_ = own_warm_pods_.get();
  }
  if ((deps_.workspace_claims == nullptr) != (deps_.workspaces == nullptr)) {
    throw std::invalid_argument("session workspaces need both the claims' cache and their writer");
  }
  if (deps_.workspace_claims != nullptr) {
    workspace_retention_ = std::make_unique<WorkspaceRetention>(
        WorkspaceRetention::Dependencies{*deps_.workspace_claims, deps_.pods, *deps_.workspaces,
                                         deps_.metrics, deps_.clock,
                                         deps_.logger.child("workspaces")},
        WorkspaceRetention::Options{});
  }
  if (options_.egress.mode == EgressMode::kCiliumFqdn &&
      (deps_.cilium_policies == nullptr || deps_.cilium_policy_client == nullptr)) {
    throw std::invalid_argument(
        "Cilium egress mode needs the CiliumNetworkPolicy cache and client");
  }
}

AgentEnvironmentReconciler::~AgentEnvironmentReconciler() {
  stop_all();
}

void AgentEnvironmentReconciler::stop_all() {
  std::map<std::string, std::unique_ptr<SessionPoller>> pollers;
  {
    std::lock_guard lock(mutex_);
    pollers.swap(pollers_);
  }
  for (auto& [key, poller] : pollers) poller->request_stop();  // all at once, then wait
  pollers.clear();                                             // each destructor joins its threads
  retirement_.drain();
}

size_t AgentEnvironmentReconciler::poller_count() const {
  std::lock_guard lock(mutex_);
  return pollers_.size();
}

SessionPoller* AgentEnvironmentReconciler::poller(const std::string& key) {
  std::lock_guard lock(mutex_);
  const auto it = pollers_.find(key);
  return it == pollers_.end() ? nullptr : it->second.get();
}

void AgentEnvironmentReconciler::remove_poller(const std::string& key) {
  std::unique_ptr<SessionPoller> poller;
  {
    std::lock_guard lock(mutex_);
    auto it = pollers_.find(key);
    if (it == pollers_.end()) return;
    poller = std::move(it->second);
    pollers_.erase(it);
  }
  deps_.logger.info("stopping the session poller", {{"environment", key}});
  retirement_.retire(std::move(poller));
}

std::chrono::milliseconds AgentEnvironmentReconciler::credential_retry_delay(const std::string& key,
                                                                             bool failed) {
  std::lock_guard lock(mutex_);
  if (!failed) {
    credential_backoff_.erase(key);
    return std::chrono::milliseconds(0);
  }
  auto it = credential_backoff_.find(key);
  if (it == credential_backoff_.end()) {
    it = credential_backoff_
             .emplace(key, Backoff({std::chrono::seconds(5), std::chrono::minutes(5), 2.0, 0.2},
                                   deps_.random))
             .first;
  }
  return it->second.next();
}

AgentEnvironmentReconciler::Credentials AgentEnvironmentReconciler::read_key(
    const AgentEnvironment& env) {
  Credentials credentials;
  const auto refuse = [&](KeyRefusal refusal) {
    credentials.reason = std::move(refusal.reason);
    credentials.message = std::move(refusal.message);
    return credentials;
  };
  // The host first: a key for a host that is not allowed is not even read.
  if (auto refusal = check_api_host(env, options_.allowed_api_hosts)) return refuse(*refusal);
  const std::string where = "Secret " + env.namespace_ + "/" + env.key_secret_name;
  json secret;
  try {
    secret = deps_.secret_client.get(env.namespace_, env.key_secret_name);
  } catch (const kube::ApiError& e) {
    credentials.reason =
        e.kind() == kube::ErrorKind::kNotFound ? "SecretNotFound" : "SecretUnreadable";
    credentials.message = e.kind() == kube::ErrorKind::kNotFound
                              ? where +
                                    " does not exist; create it with the environment key under '" +
                                    env.key_secret_key + "'"
                              : where + " could not be read: " + e.status_message();
    return credentials;
  } catch (const std::exception& e) {
    credentials.reason = "SecretUnreadable";
    credentials.message = where + " could not be read: " + e.what();
    return credentials;
  }
  if (auto refusal = check_key_secret(secret, env)) return refuse(*refusal);
  const auto data = secret.value("data", json::object());
  const auto it = data.find(env.key_secret_key);
  std::string key;
  if (it == data.end() || !it->is_string() || !base64_decode_any(it->get<std::string>(), &key) ||
      key.empty()) {
    credentials.reason = "KeyMissing";
    credentials.message = where + " has no non-empty key '" + env.key_secret_key + "'";
    return credentials;
  }
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) {
    key.pop_back();  // `kubectl create secret --from-file` keeps a trailing newline
  }
  credentials.ok = true;
  credentials.key = std::move(key);
  credentials.reason = "KeyFound";
  credentials.message = "the environment key is read from " + where;
  if (!env.api_ca_config_map_name.empty()) read_api_ca(env, credentials);
  return credentials;
}

void AgentEnvironmentReconciler::read_api_ca(const AgentEnvironment& env,
                                             Credentials& credentials) {
  // The operator's own calls to the API (the poll, the ack, health checks) trust what the runner
  // pods trust: one field, both sides.
  const std::string where = "ConfigMap " + env.namespace_ + "/" + env.api_ca_config_map_name;
  const auto refuse = [&](std::string reason, std::string message) {
    credentials.ok = false;
    credentials.key.clear();
    credentials.reason = std::move(reason);
    credentials.message = std::move(message) + " (spec.apiCAConfigMapRef)";
  };
  if (deps_.config_map_client == nullptr) {
    return refuse("ApiCAConfigMapUnreadable", where + " cannot be read: no ConfigMap client");
  }
  json config_map;
  try {
    config_map = deps_.config_map_client->get(env.namespace_, env.api_ca_config_map_name);
  } catch (const kube::ApiError& e) {
    if (e.kind() == kube::ErrorKind::kNotFound) {
      return refuse("ApiCAConfigMapNotFound",
                    where + " does not exist; create it with the API's CA certificates under '" +
                        env.api_ca_config_map_key + "'");
    }
    return refuse("ApiCAConfigMapUnreadable", where + " could not be read: " + e.status_message());
  } catch (const std::exception& e) {
    return refuse("ApiCAConfigMapUnreadable", where + " could not be read: " + e.what());
  }
  const auto data = config_map.value("data", json::object());
  const auto it = data.find(env.api_ca_config_map_key);
  if (it == data.end() || !it->is_string() || it->get<std::string>().empty()) {
    return refuse("ApiCAMissing", where + " has no non-empty key '" + env.api_ca_config_map_key +
                                      "' of PEM certificates");
  }
  const std::string pem = it->get<std::string>();
  std::size_t certificates = 0;
  try {
    certificates = pki::Certificate::all_from_pem(pem).size();
  } catch (const std::exception& e) {
    return refuse("ApiCAInvalid", where + " key '" + env.api_ca_config_map_key +
                                      "' holds a certificate that does not parse: " + e.what());
  }
  if (certificates == 0) {
    return refuse("ApiCAInvalid",
                  where + " key '" + env.api_ca_config_map_key + "' holds no PEM certificate");
  }
  credentials.api_ca_pem = pem;
  credentials.message += "; the API's certificates are also checked against the " +
                         std::to_string(certificates) + " in " + where + " key '" +
                         env.api_ca_config_map_key + "'";
}

namespace {

// Whether `live` says what `desired` says (fields the apiserver defaulted are not a difference).
bool network_policy_matches(const json& live, const json& desired) {
  return json_contains(live.value("spec", json()), desired["spec"]) &&
         json_contains(live.value("metadata", json::object()).value("labels", json::object()),
                       desired["metadata"].value("labels", json::object()));
}

}  // namespace

bool AgentEnvironmentReconciler::policy_drifted(const runtime::Store& cache,
                                                const AgentEnvironment& env,
                                                const json& desired) const {
  const auto cached = cache.get(env.namespace_ + "/" + desired["metadata"].value("name", ""));
  return !cached || !network_policy_matches(*cached, desired);
}

void AgentEnvironmentReconciler::apply_policy(kube::ResourceClient& client,
                                              const AgentEnvironment& env, const json& desired,
                                              bool spec_changed) {
  if (!spec_changed) {
    // Reads before it writes: an idle environment writes nothing, and a cache that has not yet
    // seen the operator's own last write costs a read, not another write.
    try {
      const json live = client.get(env.namespace_, desired["metadata"].value("name", ""));
      if (network_policy_matches(live, desired)) return;
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound) throw;
    }
  }
  client.apply(env.namespace_, desired, {options_.field_manager, true});
}

SessionPoller& AgentEnvironmentReconciler::ensure_poller(const std::string& key,
                                                         const AgentEnvironment& env,
                                                         const Credentials& credentials,
                                                         const std::string& warm_template) {
  PollerSettings settings{env, credentials.key, options_.worker_id + "/" + key,
                          credentials.api_ca_pem, warm_template};
  std::lock_guard lock(mutex_);
  auto it = pollers_.find(key);
  if (it != pollers_.end()) {
    it->second->update(std::move(settings));
    it->second->wake();
    return *it->second;
  }
  const json involved = involved_object(env.name, env.namespace_, env.uid);
  PollerDependencies poller_deps{
      deps_.api_factory,
      deps_.session_objects,
      deps_.census,
      deps_.metrics,
      deps_.clock,
      deps_.random,
      deps_.logger.child("poller"),
      [this, involved](const std::string& type, const std::string& reason,
                       const std::string& message) {
        deps_.events.record(involved, type, reason, message);
      },
      [this, key] { deps_.enqueue(key); },
      thread_budget_,
      options_.egress,
      deps_.workspaces,
      options_.hand_over_warm_pod,
      options_.warm_pod_waiting_nonce,
  };
  auto poller = std::make_unique<SessionPoller>(std::move(settings), std::move(poller_deps),
                                                options_.poll_threads);
  if (options_.poll_threads > 0) poller->start();
  deps_.logger.info("started the session poller", {{"environment", key}});
  return *pollers_.emplace(key, std::move(poller)).first->second;
}

AgentEnvironmentReconciler::Outcomes AgentEnvironmentReconciler::survey_sessions(
    const AgentEnvironment& env) {
  Outcomes outcomes;
  outcomes.surveyed = true;
  const auto now = deps_.clock.wall_now();
  // Every pass reads every runner pod of the environment, finished ones kept for their retention
  // included: in place, without copying their fields.
  static const std::string kMetadata = "metadata", kNamespace = "namespace",
                           kAnnotations = "annotations", kLabels = "labels", kStatus = "status",
                           kPhase = "phase", kCreationTimestamp = "creationTimestamp",
                           kOutcome{kAnnotationOutcome}, kRecordedAt{kAnnotationRecordedAt},
                           kWarmTemplate{kAnnotationWarmTemplate}, kSessionId{kLabelSessionId};
  static const json kEmpty = json::object();
  const auto field = [](const json& object, const std::string& key) -> const json& {
    const auto it = object.find(key);
    return it == object.end() ? kEmpty : *it;
  };
  const std::string selector = std::string(kLabelEnvironment) + "=" + label_value_for(env.name);
  const auto pods = deps_.pods.by_index(runtime::Store::kLabelIndex, selector);
  std::vector<const json*> surveyed;
  surveyed.reserve(pods.size());
  // The claims of the last window size the warm pool; read only for an environment with one.
  const bool count_claims = env.warm_pool.has_value();
  const auto claims_since = now - options_.warm_pool_claim_window;
  static const std::string kClaimedAt{kAnnotationClaimedAt},
      kConfirmedAt{kAnnotationAssignmentConfirmedAt};
  for (const auto& pod : pods) {
    const json& metadata = field(*pod, kMetadata);
    if (cached_string(metadata, kNamespace) != env.namespace_) continue;
    // A warm pod no claim has assigned is not a session: no outcome, no Event, not in
    // activeSessions; the pool removes it with its own Secret when it finishes.
    const bool warm = unassigned_warm_pod(*pod);
    if (warm) {
      const WarmPodState state = warm_pod_state(*pod);
      std::string failure;
      if (state == WarmPodState::kFinished &&
          cached_string(field(*pod, kStatus), kPhase) == "Failed") {
        failure = failure_reason(*pod);
        if (failure == "DeadlineExceeded") failure.clear();  // waited its whole deadline
      }
      outcomes.warm_pods.push_back(
          {metadata.value("name", ""), metadata.value("uid", ""),
           metadata.value("resourceVersion", ""), cached_string(metadata, kCreationTimestamp),
           state, std::move(failure), cached_string(field(metadata, kAnnotations), kWarmTemplate)});
    } else {
      surveyed.push_back(pod.get());
      if (count_claims) {
        // A cold pod's claim time; a warm pod assigned without one, the runner's confirm.
        const json& annotations = field(metadata, kAnnotations);
        const std::string& claimed = cached_string(annotations, kClaimedAt);
        const auto at = parse_rfc3339_micros(
            claimed.empty() ? cached_string(annotations, kConfirmedAt) : claimed);
        if (at && *at >= claims_since) outcomes.claims_seen[metadata.value("uid", "")] = *at;
      }
    }
    if (!pod_finished(*pod)) {
      ++outcomes.unfinished;
      if (!warm) ++outcomes.active;
      if (assigned_warm_pod(*pod)) ++outcomes.active_warm;
      // By phase, for the metrics: a pod the kubelet has not reported on yet is Pending.
      const std::string& phase = cached_string(field(*pod, kStatus), kPhase);
      if (phase == "Running") {
        ++outcomes.runner_pods.running;
      } else if (phase == "Unknown") {
        ++outcomes.runner_pods.unknown;
      } else {
        ++outcomes.runner_pods.pending;
        if (const auto created = parse_rfc3339(cached_string(metadata, kCreationTimestamp))) {
          const double at = std::chrono::duration<double>(created->time_since_epoch()).count();
          auto& oldest = outcomes.runner_pods.oldest_pending_created;
          if (!oldest || at < *oldest) oldest = at;
        }
      }
      continue;
    }
    if (warm) continue;
    const json& annotations = field(metadata, kAnnotations);
    const std::string& outcome = cached_string(annotations, kOutcome);
    const auto recorded_at = parse_rfc3339(cached_string(annotations, kRecordedAt));
    if (outcome.empty() || !recorded_at) {
      FinishedPod finished;
      finished.uid = metadata.value("uid", "");
      finished.name = metadata.value("name", "");
      finished.resource_version = metadata.value("resourceVersion", "");
      finished.session_id = cached_string(field(metadata, kLabels), kSessionId);
      finished.work_id = session_work_id(*pod);
      finished.succeeded = (*pod)["status"].value("phase", "") == "Succeeded";
      finished.warm = assigned_warm_pod(*pod);
      if (!finished.succeeded) finished.failure_reason = failure_reason(*pod);
      outcomes.unmarked.push_back(std::move(finished));
      continue;
    }
    // Counted and marked: kept for its retention, then removed with its Secret.
    const std::int64_t keep_seconds =
        outcome == "succeeded" ? env.retain_succeeded_seconds : env.retain_failed_seconds;
    const auto delete_at = *recorded_at + std::chrono::seconds(keep_seconds);
    if (now >= delete_at) {
      deps_.session_objects.remove_finished(*pod);
    } else {
      const auto wait = std::chrono::duration_cast<Clock::Duration>(delete_at - now);
      if (!outcomes.next_deletion || wait < *outcomes.next_deletion) outcomes.next_deletion = wait;
    }
  }
  start_latency_.survey(env.namespace_ + "/" + env.name, surveyed);
  return outcomes;
}

AgentEnvironmentReconciler::WarmTemplate AgentEnvironmentReconciler::decide_warm_template(
    const AgentEnvironment& env) const {
  WarmTemplate decided;
  const auto& endpoint = options_.assignment_endpoint;
  if (!env.warm_pool) {
    // No pool: pods a spec with one made go; the status says nothing of a pool.
  } else if (!endpoint || endpoint->url.empty()) {
    decided.refusal_reason = "AssignmentNotServed";
    decided.refusal_message =
        "spec.warmPool: this operator does not serve warm runners' assignments (its assignment "
        "service is not enabled), so no warm pod is made and every claim starts its own pod";
  } else {
    try {
      // The template decides whether a warm pod can exist for this spec (gateway egress and a
      // per-session workspace claim need the session before the pod starts).
      decided.hash = warm_runner_template_hash(env, *endpoint, options_.egress);
    } catch (const SpecError& e) {
      decided.refusal_reason = "NotOffered";
      decided.refusal_message = std::string("spec.warmPool: ") + e.what();
    }
  }
  return decided;
}

std::optional<Clock::Duration> AgentEnvironmentReconciler::reconcile_warm_pool(
    const std::string& key, const AgentEnvironment& env, const WarmTemplate& warm_template,
    Outcomes& outcomes) {
  outcomes.warm_pool_surveyed = true;
  if (!env.warm_pool && outcomes.warm_pods.empty()) {
    deps_.metrics.remove_warm_pool(key);
    std::lock_guard lock(mutex_);
    warm_pool_failures_.erase(key);
    return std::nullopt;
  }
  const auto now = deps_.clock.now();
  WarmPoolInputs inputs;
  inputs.spec = env.warm_pool.value_or(WarmPoolSpec{});  // none: the pods left from one go
  inputs.suspended = env.suspend;
  inputs.max_concurrent_sessions = env.max_concurrent_sessions;
  inputs.unfinished_runner_pods = outcomes.unfinished;
  const auto wall_now = deps_.clock.wall_now();
  inputs.recent_claims = recent_claims_.update(key, outcomes.claims_seen, wall_now);
  inputs.pods = outcomes.warm_pods;
  inputs.template_hash = warm_template.hash;
  warm_expectations_.apply(
      key, now,
      [this, &env](const std::string& name) {
        return deps_.pods.get(env.namespace_ + "/" + name) != nullptr;
      },
      inputs);

  WarmPoolStatus pool;
  // Why no warm pod may be made now, if one is not: then the pool keeps none.
  const std::string& refusal_reason = warm_template.refusal_reason;
  const std::string& refusal_message = warm_template.refusal_message;
  const auto& endpoint = options_.assignment_endpoint;
  if (!refusal_reason.empty()) inputs.spec = {};  // nothing can assign the pods: none are kept
  const bool pool_wanted = env.warm_pool && refusal_reason.empty();
  WarmPoolPlan plan = plan_warm_pool(inputs);

  const std::string environment_label = env.namespace_ + "/" + env.name;
  const Logger log = deps_.logger.child("warm-pool");
  for (const auto& pod : plan.remove) {
    // A surplus pod only while it is the one cached (its resourceVersion): a claim that assigned
    // it since wins. A finished one cannot be assigned; its uid is enough.
    const bool finished = pod.state == WarmPodState::kFinished;
    const std::string version = finished ? std::string() : pod.resource_version;
    const char* why = finished                                    ? "finished unassigned"
                      : pod.template_hash != inputs.template_hash ? "an earlier runner template"
                                                                  : "over the pool's target";
    try {
      if (warm_pods_->remove(env.namespace_, pod.name, pod.uid, version)) {
        warm_expectations_.removed(key, pod.uid, now);
        log.info("removed a warm pod",
                 {{"environment", environment_label}, {"pod", pod.name}, {"why", why}});
      }
    } catch (const std::exception& e) {
      deps_.metrics.warm_pool_errors_total
          .Add({{"environment", environment_label}, {"step", "remove"}})
          .Increment();
      log.warn("could not remove a warm pod",
               {{"environment", environment_label}, {"pod", pod.name}, {"error", e.what()}});
    }
  }

  // After a failed create, none is tried before its backoff ends, and the condition keeps
  // saying why until one succeeds.
  std::optional<Clock::Duration> retry_in;
  std::string failure_reason, failure_message;
  {
    std::lock_guard lock(mutex_);
    const auto failed = warm_pool_failures_.find(key);
    if (failed != warm_pool_failures_.end()) {
      failure_reason = failed->second.reason;
      failure_message = failed->second.message;
      if (now < failed->second.retry_at) retry_in = failed->second.retry_at - now;
    }
  }
  // Holds creates back for the failure's backoff, and says why in the condition until it is over.
  const auto hold_back = [&](std::string reason, std::string message, bool pod_failed) {
    failure_reason = std::move(reason);
    failure_message = std::move(message);
    std::lock_guard lock(mutex_);
    auto it = warm_pool_failures_.find(key);
    if (it == warm_pool_failures_.end()) {
      it = warm_pool_failures_
               .emplace(key, WarmPoolFailure{Backoff(
                                 {std::chrono::seconds(1), std::chrono::minutes(5), 2.0, 0.2},
                                 deps_.random)})
               .first;
    }
    const auto delay = it->second.backoff.next();
    it->second.retry_at = now + delay;
    it->second.reason = failure_reason;
    it->second.message = failure_message;
    it->second.pod_failed = pod_failed;
    retry_in = delay;
    return delay;
  };
  // A warm pod that failed on its own says the image or the runner is broken: making the next
  // one at once would loop as fast as pods can fail.
  bool pod_failed_now = false;
  for (const auto& pod : plan.remove) {
    if (pod.failure.empty()) continue;
    pod_failed_now = true;
    const auto delay = hold_back(
        "WarmPodFailed", "warm pod " + pod.name + " failed unassigned: " + pod.failure, true);
    log.warn("a warm pod failed before any assignment", {{"environment", environment_label},
                                                         {"pod", pod.name},
                                                         {"reason", pod.failure},
                                                         {"retry_in_ms", delay.count()}});
    break;
  }
  std::size_t created = 0;
  for (std::size_t i = 0; pool_wanted && !retry_in && i < plan.create; ++i) {
    try {
      const WarmPodToken token = mint_warm_pod_token();
      // The token's hash (public: it is on the pod) makes the name new; the Secret has it too.
      const std::string name =
          object_name_for("warm-", env.name + "-" + token.sha256.substr(0, 16));
      warm_pods_->create(
          build_warm_pod_secret(env, name, token.token, *endpoint),
          build_warm_runner_pod(env, name, token.sha256, *endpoint, options_.egress));
      warm_expectations_.created(key, name, now);
      ++created;
    } catch (const std::exception& e) {
      const bool refused = dynamic_cast<const ObjectRefused*>(&e) != nullptr;
      failure_reason = refused ? "WarmPodRefused" : "CreateFailed";
      failure_message = std::string(refused ? "the apiserver refused a warm pod as built: "
                                            : "could not create a warm pod: ") +
                        e.what();
      deps_.metrics.warm_pool_errors_total
          .Add({{"environment", environment_label}, {"step", "create"}})
          .Increment();
      const auto delay = hold_back(failure_reason, failure_message, false);
      log.warn("could not create a warm pod", {{"environment", environment_label},
                                               {"error", e.what()},
                                               {"retry_in_ms", delay.count()}});
      break;
    }
  }
  {
    // A failed create is over once nothing more is wanted; a failed pod once one is ready.
    std::lock_guard lock(mutex_);
    const auto failed = warm_pool_failures_.find(key);
    if (failed != warm_pool_failures_.end() && !pod_failed_now && created == plan.create &&
        (!failed->second.pod_failed || plan.ready > 0)) {
      warm_pool_failures_.erase(failed);
      failure_reason.clear();
    }
  }

  if (!env.warm_pool) {
    deps_.metrics.remove_warm_pool(key);
    return retry_in;
  }
  if (const auto expiry = recent_claims_.next_expiry(key, wall_now)) {
    // The target falls when a claim leaves the window; look again then (a second after).
    const auto at = std::chrono::duration_cast<Clock::Duration>(*expiry) + std::chrono::seconds(1);
    if (!retry_in || at < *retry_in) retry_in = at;
  }
  pool.ready = plan.ready;
  pool.starting = plan.starting + created;
  pool.target = plan.target;
  deps_.metrics.set_warm_pool(key, pool.ready, pool.starting, pool.target);
  const std::string figures = std::to_string(pool.ready) + " of " + std::to_string(pool.target) +
                              " warm pods ready, " + std::to_string(pool.starting) + " starting";
  pool.condition_status = "False";
  if (!refusal_reason.empty()) {
    pool.reason = refusal_reason;
    pool.message = refusal_message;
  } else if (!failure_reason.empty()) {
    pool.reason = failure_reason;
    pool.message = failure_message;
  } else if (env.suspend) {
    pool.reason = "Suspended";
    pool.message = "spec.suspend is set: no warm pod is kept";
  } else if (pool.ready >= pool.target) {
    pool.condition_status = "True";
    pool.reason = "Ready";
    pool.message = figures;
  } else if (plan.held_by_session_limit) {
    pool.reason = "AtSessionLimit";
    pool.message = figures + "; maxConcurrentSessions (" +
                   std::to_string(env.max_concurrent_sessions) +
                   ") leaves no room for more: warm pods count against it";
  } else {
    pool.reason = "Starting";
    pool.message = figures;
  }
  outcomes.warm_pool = std::move(pool);
  return retry_in;
}

void AgentEnvironmentReconciler::mark_counted(const AgentEnvironment& env, const json& involved,
                                              const Outcomes& outcomes,
                                              const StatusWrite& written) {
  const std::string environment_label = env.namespace_ + "/" + env.name;
  // Metrics, Events and logs follow the status: once per session, when the write that first
  // counted it succeeded.
  for (const auto& pod : written.counted) {
    if (pod.succeeded) {
      deps_.metrics.sessions_succeeded_total.Add({{"environment", environment_label}}).Increment();
      deps_.events.record(involved, "Normal", "SessionSucceeded",
                          "session " + pod.session_id + " finished (pod " + pod.name + ")");
    } else {
      deps_.metrics.sessions_failed_total
          .Add({{"environment", environment_label}, {"reason", pod.failure_reason}})
          .Increment();
      deps_.events.record(involved, "Warning", "SessionFailed",
                          "session " + pod.session_id + " failed: " + pod.failure_reason +
                              " (pod " + pod.name + ")");
    }
    deps_.logger.info("session finished", {{"environment", environment_label},
                                           {"pod", pod.name},
                                           {"work_id", pod.work_id},
                                           {"outcome", pod.succeeded ? "succeeded" : "failed"}});
  }
  // The mark says "counted" on the pod itself, so the pod leaves status.sessions.pendingMarks and
  // its retention starts. It is written against the resourceVersion the count was decided from:
  // a cache that lags gets 409 and the next pass decides again.
  const std::string now = format_rfc3339(deps_.clock.wall_now());
  static const kube::JsonFilter nothing_of_the_answer = kube::JsonFilter::members();
  kube::RequestOptions unread_answer;  // the pod as patched is not read here: its watch event is
  unread_answer.answer = &nothing_of_the_answer;
  for (const auto& pod : outcomes.unmarked) {
    if (written.pending_marks.count(pod.uid) == 0) continue;
    try {
      deps_.pod_client.merge_patch(
          env.namespace_, pod.name,
          {{"metadata",
            {{"resourceVersion", pod.resource_version},
             {"annotations",
              {{std::string(kAnnotationOutcome), pod.succeeded ? "succeeded" : "failed"},
               {std::string(kAnnotationRecordedAt), now}}}}}},
          unread_answer);
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
    }
  }
}

runtime::ReconcileResult AgentEnvironmentReconciler::refuse(
    const std::string& key, const json& object, const AgentEnvironment& env, const json& involved,
    const std::string& reason, const std::string& message, runtime::ReconcileResult after) {
  remove_poller(key);
  deps_.metrics.remove_runner_pods(key);  // not surveyed while refused
  deps_.metrics.remove_warm_pool(key);
  Credentials refused;
  refused.reason = reason;
  refused.message = message;
  const json conditions = object.value("status", json::object()).value("conditions", json::array());
  const json* ready = find_condition(conditions, "Ready");
  if (ready == nullptr || ready->value("reason", "") != reason) {
    deps_.events.record(involved, "Warning", reason, message);
  }
  return write_status(object, &env, refused, nullptr, {}, "").next(after);
}

void AgentEnvironmentReconciler::settle_podless_claims(const AgentEnvironment& env,
                                                       SessionPoller& poller) {
  // A Secret without its Pod is a claim that ended between the two: before its ack (the item
  // goes back to the queue, and a retry of ours rewrites the Secret and goes on) or after it
  // (the item is ours, and its pod is made here). docs/claiming.md has the argument:
  //  - the apiserver, not the cache, says there is no pod of that name;
  //  - the queue says whether the item was acknowledged;
  //  - a Secret is removed only when its item is over or still queued, and the last claim that
  //    wrote it (perimeter.dev/claimed-at, rewritten by every retry) polled its item longer ago
  //    than the horizon: a claim gives up before its ack once it is older than the reclaim
  //    window, and the margin covers the requests' own timeouts and retries;
  //  - the delete names the uid and resourceVersion listed here, so a claim that rewrote the
  //    Secret after the list wins and the Secret stays.
  const auto horizon =
      std::chrono::milliseconds(2 * env.reclaim_older_than_ms) + std::chrono::minutes(2);
  kube::ListOptions options;
  options.label_selector = std::string(kLabelEnvironment) + "=" + label_value_for(env.name) + "," +
                           std::string(kLabelComponent) + "=runner";
  const auto now = deps_.clock.wall_now();
  for (const auto& secret :
       deps_.secret_client.list(env.namespace_, options).value("items", json::array())) {
    const auto& metadata = secret["metadata"];
    const std::string name = metadata.value("name", "");
    if (deps_.pods.get(env.namespace_ + "/" + name)) continue;
    const auto annotations = metadata.value("annotations", json::object());
    const std::string work_id = annotations.value(std::string(kAnnotationWorkId), "");
    const std::string claimed_at = annotations.value(std::string(kAnnotationClaimedAt), "");
    try {
      deps_.pod_client.get(env.namespace_, name);
      continue;  // the pod exists; the cache has not shown it yet
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound) throw;
    }
    const PodlessClaim found =
        work_id.empty() ? PodlessClaim::kOver : poller.start_if_acknowledged(work_id, claimed_at);
    if (found == PodlessClaim::kStarted || found == PodlessClaim::kUnknown) continue;
    auto last_claimed = parse_rfc3339_micros(claimed_at);
    if (!last_claimed) last_claimed = parse_rfc3339(metadata.value("creationTimestamp", ""));
    if (!last_claimed || now - *last_claimed < horizon) continue;
    try {
      kube::DeleteOptions listed;
      listed.precondition_uid = metadata.value("uid", "");
      listed.precondition_resource_version = metadata.value("resourceVersion", "");
      deps_.secret_client.remove(env.namespace_, name, listed);
      deps_.logger.info("removed a session Secret whose pod was never created",
                        {{"environment", env.namespace_ + "/" + env.name},
                         {"secret", name},
                         {"item", found == PodlessClaim::kQueued ? "queued" : "over"}});
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound && e.kind() != kube::ErrorKind::kConflict) throw;
    }
  }
}

json AgentEnvironmentReconciler::desired_status(const json& base, std::int64_t generation,
                                                const AgentEnvironment* env,
                                                const Credentials& credentials,
                                                const PollerState* poller, const Outcomes& outcomes,
                                                const std::string& spec_error,
                                                std::vector<FinishedPod>* counted) const {
  json status = base.is_object() ? base : json::object();
  json conditions = status.value("conditions", json::array());
  const std::string now = format_rfc3339(deps_.clock.wall_now());

  if (!spec_error.empty()) {
    set_condition(conditions, "Ready", "False", "InvalidSpec", spec_error, generation, now);
  } else {
    std::string cred_status = credentials.ok ? "True" : "False";
    std::string cred_reason = credentials.reason, cred_message = credentials.message;
    std::string queue_status = "Unknown", queue_reason = "NotPolling",
                queue_message = "the work queue is not polled";
    if (poller != nullptr) {
      queue_reason = poller->reason;
      queue_message = poller->message;
      switch (poller->health) {
        case PollerHealth::kStarting:
          queue_status = "Unknown";
          break;
        case PollerHealth::kPolling:
          queue_status = "True";
          break;
        case PollerHealth::kFailing:
          queue_status = "False";
          break;
        case PollerHealth::kSpecRefused:
          // The queue answers; it is the cluster that refuses what the spec builds.
          queue_status = "True";
          queue_reason = "Polling";
          queue_message = "the work queue answers";
          break;
        case PollerHealth::kRejected:
          queue_status = "False";
          if (poller->reason == "KeyRejected") {
            cred_status = "False";
            cred_reason = "KeyRejected";
            cred_message = "the API refused the environment key: " + poller->message;
          }
          break;
      }
    }
    const bool suspended = env != nullptr && env->suspend;
    if (suspended) {
      queue_status = "Unknown";
      queue_reason = "Suspended";
      queue_message = "spec.suspend is set: no new sessions are claimed";
    }
    std::string ready = "False", ready_reason, ready_message;
    if (cred_status != "True") {
      ready_reason = cred_reason;
      ready_message = cred_message;
    } else if (suspended) {
      ready = "True";
      ready_reason = "Suspended";
      ready_message = "not claiming new sessions; " + std::to_string(outcomes.active) +
                      " running sessions finish";
    } else if (poller != nullptr && poller->health == PollerHealth::kSpecRefused) {
      ready_reason = poller->reason;
      ready_message = poller->message;
    } else if (queue_status == "True") {
      const bool full = static_cast<int>(outcomes.active) >= env->max_concurrent_sessions;
      ready = "True";
      ready_reason = full ? "AtCapacity" : "Polling";
      ready_message = std::to_string(outcomes.active) + " of " +
                      std::to_string(env->max_concurrent_sessions) + " sessions running";
    } else {
      ready = queue_status;
      ready_reason = queue_reason;
      ready_message = queue_message;
    }
    set_condition(conditions, "Ready", ready, ready_reason, ready_message, generation, now);
    set_condition(conditions, "CredentialsReady", cred_status, cred_reason, cred_message,
                  generation, now);
    set_condition(conditions, "QueueReachable", queue_status, queue_reason, queue_message,
                  generation, now);
  }
  if (outcomes.warm_pool_surveyed) {
    if (outcomes.warm_pool) {
      const auto& pool = *outcomes.warm_pool;
      set_condition(conditions, "WarmPoolReady", pool.condition_status, pool.reason, pool.message,
                    generation, now);
      status["warmPool"] = {{"ready", static_cast<std::int64_t>(pool.ready)},
                            {"starting", static_cast<std::int64_t>(pool.starting)},
                            {"target", static_cast<std::int64_t>(pool.target)}};
    } else {
      // No pool in the spec: neither its figures nor its condition.
      if (conditions.is_array()) {
        conditions.erase(
            std::remove_if(conditions.begin(), conditions.end(),
                           [](const json& c) { return c.value("type", "") == "WarmPoolReady"; }),
            conditions.end());
      }
      status.erase("warmPool");
    }
  }
  status["conditions"] = conditions;
  status["observedGeneration"] = generation;
  if (outcomes.surveyed) {
    // Counting exactly once (docs/claiming.md): a finished pod is counted here and its uid kept
    // in pendingMarks by the same write; it is marked afterwards, and leaves the list once the
    // cache shows the mark (or the pod gone). A pod whose uid is listed is never counted again,
    // whatever the cache says, and a write that fails counts nothing.
    const json sessions = status.value("sessions", json::object());
    std::int64_t succeeded = sessions.value("succeeded", std::int64_t{0});
    std::int64_t failed = sessions.value("failed", std::int64_t{0});
    // Of those, the sessions a warm pod served: counted with their outcome, by the same write.
    std::int64_t finished_warm = sessions.value("finishedWarm", std::int64_t{0});
    std::set<std::string> listed;
    for (const auto& uid : sessions.value("pendingMarks", json::array())) {
      if (uid.is_string()) listed.insert(uid.get<std::string>());
    }
    json pending = json::array();
    size_t newly = 0;
    for (const auto& pod : outcomes.unmarked) {
      if (!listed.count(pod.uid)) {
        if (newly == kMaxCountedPerWrite) continue;  // the rest in the next write
        ++newly;
        ++(pod.succeeded ? succeeded : failed);
        if (pod.warm) ++finished_warm;
        if (counted != nullptr) counted->push_back(pod);
      }
      pending.push_back(pod.uid);
    }
    status["activeSessions"] = static_cast<std::int64_t>(outcomes.active);
    // Every claimed session is running, or has been counted as succeeded or failed; and was
    // served by a warm pod or by its own cold one.
    const std::int64_t claimed = succeeded + failed + static_cast<std::int64_t>(outcomes.active);
    const std::int64_t warm = finished_warm + static_cast<std::int64_t>(outcomes.active_warm);
    status["sessions"] = {{"succeeded", succeeded}, {"failed", failed},
                          {"claimed", claimed},     {"warm", warm},
                          {"cold", claimed - warm}, {"finishedWarm", finished_warm}};
    if (!pending.empty()) status["sessions"]["pendingMarks"] = std::move(pending);
  }
  if (outcomes.workspaces) {
    const auto& w = *outcomes.workspaces;
    status["workspaces"] = {{"claims", static_cast<std::int64_t>(w.total)},
                            {"pending", static_cast<std::int64_t>(w.pending)},
                            {"inUse", static_cast<std::int64_t>(w.in_use)},
                            {"idle", static_cast<std::int64_t>(w.idle)}};
  } else if (outcomes.workspaces_surveyed) {
    status.erase("workspaces");
  }
  if (poller != nullptr && poller->stats) {
    json queue = {{"depth", poller->stats->depth}, {"pending", poller->stats->pending}};
    if (poller->stats->workers_polling) queue["workersPolling"] = *poller->stats->workers_polling;
    if (poller->stats->oldest_queued_at) queue["oldestQueuedAt"] = *poller->stats->oldest_queued_at;
    status["queue"] = queue;
  }
  // No longer written: a time that changes with every poll is either a write a second or
  // untrue when read. The metric perimeter_last_successful_poll_timestamp_seconds has it, and
  // QueueReachable says at once when polls fail. A value left by an earlier version goes.
  status.erase("lastSuccessfulPollTime");
  // Operator-wide, but shown where the user looks: which kind of policy holds these pods in.
  if (env != nullptr) {
    status["egress"] = {{"mode", egress_mode_name(options_.egress.mode)},
                        {"policy", network_policy_name(*env)}};
  }
  return status;
}

AgentEnvironmentReconciler::StatusWrite AgentEnvironmentReconciler::write_status(
    const json& object, const AgentEnvironment* env, const Credentials& credentials,
    const PollerState* poller, const Outcomes& outcomes, const std::string& spec_error) {
  const std::string ns = object["metadata"].value("namespace", "");
  const std::string name = object["metadata"].value("name", "");
  const std::string key = ns + "/" + name;
  const auto generation_of = [](const json& o) {
    return o["metadata"].value("generation", std::int64_t{0});
  };
  const auto pending_marks_of = [](const json& status) {
    std::set<std::string> uids;
    for (const auto& uid :
         status.value("sessions", json::object()).value("pendingMarks", json::array())) {
      if (uid.is_string()) uids.insert(uid.get<std::string>());
    }
    return uids;
  };
  StatusWrite result;
  json current = object.value("status", json::object());
  json status = desired_status(current, generation_of(object), env, credentials, poller, outcomes,
                               spec_error);
  if (status == current) {
    result.pending_marks = pending_marks_of(current);
    return result;
  }
  // Coalesced: within the interval after the last write, the change waits for the next one.
  const auto now = deps_.clock.now();
  {
    std::lock_guard lock(mutex_);
    const auto& written_at = memos_[key].status_written_at;
    if (written_at && now - *written_at < options_.status_write_interval) {
      result.deferred = *written_at + options_.status_write_interval - now;
      result.pending_marks = pending_marks_of(current);
      return result;
    }
  }
  // Written against the resourceVersion it was computed from: the counts are lifetime totals,
  // and a cached copy that lags must never overwrite newer ones. On conflict, the live object is
  // read and everything is decided again from it.
  json base = object;
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::vector<FinishedPod> counted;
    current = base.value("status", json::object());
    status = desired_status(current, generation_of(base), env, credentials, poller, outcomes,
                            spec_error, &counted);
    if (status == current) {
      result.pending_marks = pending_marks_of(current);
      return result;
    }
    base["status"] = status;
    try {
      deps_.environment_client.update_status(ns, base);
      {
        std::lock_guard lock(mutex_);
        memos_[key].status_written_at = now;
      }
      result.counted = std::move(counted);
      result.pending_marks = pending_marks_of(status);
      return result;
    } catch (const kube::ApiError& e) {
      if (e.kind() == kube::ErrorKind::kNotFound) return result;
      if (e.kind() != kube::ErrorKind::kConflict) throw;
    }
    try {
      base = deps_.environment_client.get(ns, name);
    } catch (const kube::ApiError& e) {
      if (e.kind() == kube::ErrorKind::kNotFound) return result;
      throw;
    }
  }
  throw std::runtime_error("status of " + ns + "/" + name + " kept conflicting");
}

runtime::ReconcileResult AgentEnvironmentReconciler::reconcile(const kube::ObjectKey& key) {
  const std::string key_text = key.str();
  const auto object = deps_.environments.get(key_text);
  if (!object || (*object)["metadata"].contains("deletionTimestamp")) {
    // Gone: stop claiming. Its pods and Secrets are owned by it and go with it; each runner gets
    // SIGTERM and stops its work item gracefully (docs/claiming.md says why no finalizer).
    remove_poller(key_text);
    credential_retry_delay(key_text, false);
    deps_.metrics.remove_runner_pods(key_text);
    deps_.metrics.remove_warm_pool(key_text);
    warm_expectations_.forget(key_text);
    recent_claims_.forget(key_text);
    start_latency_.forget(key_text);
    if (workspace_retention_) workspace_retention_->forget(key_text);
    std::lock_guard lock(mutex_);
    memos_.erase(key_text);
    key_cache_.erase(key_text);
    return runtime::ReconcileResult::done();
  }
  const auto& metadata = (*object)["metadata"];
  const json involved = involved_object(metadata.value("name", ""), metadata.value("namespace", ""),
                                        metadata.value("uid", ""));

  AgentEnvironment env;
  try {
    env = parse_agent_environment(*object);
  } catch (const SpecError& e) {
    remove_poller(key_text);
    deps_.metrics.remove_runner_pods(key_text);
    deps_.metrics.remove_warm_pool(key_text);
    deps_.events.record(involved, "Warning", "InvalidSpec", e.what());
    // A new generation triggers the next attempt.
    return write_status(*object, nullptr, {}, nullptr, {}, e.what())
        .next(runtime::ReconcileResult::done());
  }

  if (env.runner.workspace_claim && !workspace_retention_) {
    remove_poller(key_text);
    const std::string message =
        "spec.runner.workspace.persistentVolumeClaim: this operator was started without session "
        "workspaces (no PersistentVolumeClaim access)";
    deps_.events.record(involved, "Warning", "InvalidSpec", message);
    return write_status(*object, nullptr, {}, nullptr, {}, message)
        .next(runtime::ReconcileResult::done());
  }

  if (options_.session_namespaces && options_.session_namespaces->count(env.namespace_) == 0) {
    // The operator has no rights here (RBAC follows the same list): say so once, and wait for
    // an administrator rather than failing on every attempt.
    return refuse(key_text, *object, env, involved, "NamespaceNotEnabled",
                  "namespace " + env.namespace_ +
                      " has not opted in to Perimeter sessions, so the operator may not read its "
                      "Secrets or create pods there; an administrator adds it to the Helm value "
                      "sessionNamespaces (the operator's --session-namespaces)",
                  runtime::ReconcileResult::done());
  }

  // One hosted environment, one AgentEnvironment: a second would claim the same items and could
  // start two pods for one. The first created serves it; the others say which one does, and look
  // again now and then (the first may go).
  if (const auto claimant =
          earlier_claimant(deps_.environments, env, [this](const std::string& ns) {
            return !options_.session_namespaces || options_.session_namespaces->contains(ns);
          })) {
    return refuse(
        key_text, *object, env, involved, "DuplicateEnvironment",
        "environment " + env.environment_id + " is already served by AgentEnvironment " +
            *claimant +
            " (created first); two would claim the same items and could start two pods for "
            "one. Delete one of them",
        runtime::ReconcileResult::after(options_.resync));
  }

  Outcomes outcomes = survey_sessions(env);
  deps_.metrics.set_runner_pods(key_text, outcomes.runner_pods);

  // The key, the NetworkPolicy and the orphan sweep are redone when the spec changed, and
  // otherwise only now and then: pod events wake this reconcile many times a second under load.
  const auto now = deps_.clock.now();
  Memo memo;
  {
    std::lock_guard lock(mutex_);
    memo = memos_[key_text];
  }
  const bool spec_changed = memo.generation != env.generation;
  Credentials credentials;
  {
    std::lock_guard lock(mutex_);
    const auto cached = key_cache_.find(key_text);
    if (!spec_changed && cached != key_cache_.end() && cached->second.second.ok &&
        now - cached->second.first < options_.key_refresh) {
      credentials = cached->second.second;
    }
  }
  if (!credentials.ok) {
    Credentials read = read_key(env);
    std::lock_guard lock(mutex_);
    const auto cached = key_cache_.find(key_text);
    const bool unreadable =
        read.reason == "SecretUnreadable" || read.reason == "ApiCAConfigMapUnreadable";
    const bool keep_last_good = !read.ok && unreadable && !spec_changed &&
                                cached != key_cache_.end() && cached->second.second.ok &&
                                now - cached->second.first < options_.key_grace;
    if (keep_last_good) {
      // A read that failed (a timeout, a 500) says nothing about the key: the last good one
      // serves until the grace runs out, and the next pass reads again.
      deps_.logger.warn("could not read the environment key again; using the last one read",
                        {{"environment", key_text}, {"error", read.message}});
      credentials = cached->second.second;
    } else {
      credentials = std::move(read);
      key_cache_[key_text] = {now, credentials};
    }
  }
  if (!credentials.ok) {
    remove_poller(key_text);
    deps_.events.record(involved, "Warning", credentials.reason, credentials.message);
    const StatusWrite written = write_status(*object, &env, credentials, nullptr, outcomes, "");
    mark_counted(env, involved, outcomes, written);
    const auto delay = credential_retry_delay(key_text, true);
    deps_.logger.warn("cannot read the environment key", {{"environment", key_text},
                                                          {"reason", credentials.reason},
                                                          {"retry_in_ms", delay.count()}});
    return written.next(runtime::ReconcileResult::after(delay));
  }
  credential_retry_delay(key_text, false);

  // The informer wakes this pass when the policy is deleted or edited; the periodic check stays
  // for a watch that missed it.
  const json policy = build_network_policy(env, options_.egress,
                                           env.warm_pool ? options_.assignment_peer : std::nullopt);
  const bool cilium = options_.egress.mode == EgressMode::kCiliumFqdn;
  const json cilium_policy = cilium ? build_cilium_network_policy(env, options_.egress) : json();
  if (spec_changed || policy_drifted(deps_.network_policies, env, policy) ||
      (cilium && policy_drifted(*deps_.cilium_policies, env, cilium_policy)) ||
      now - memo.policy_applied_at >= options_.policy_refresh) {
    // The policy that allows first: in Cilium mode the NetworkPolicy denies everything.
    if (cilium) apply_policy(*deps_.cilium_policy_client, env, cilium_policy, spec_changed);
    apply_policy(deps_.network_policy_client, env, policy, spec_changed);
    memo.policy_applied_at = now;
  }
  // The warm pods' template follows the spec: decided again only for a new generation.
  const WarmTemplate warm_template =
      spec_changed ? decide_warm_template(env) : std::move(memo.warm_template);
  auto& poller = ensure_poller(key_text, env, credentials, warm_template.hash);
  // On a new spec (a new leader's first pass included: claims its predecessor acknowledged get
  // their pods) and now and then.
  if (spec_changed || now - memo.orphans_swept_at >= options_.orphan_sweep) {
    settle_podless_claims(env, poller);
    memo.orphans_swept_at = now;
  }
  {
    std::lock_guard lock(mutex_);
    auto& stored = memos_[key_text];
    stored.generation = env.generation;
    stored.warm_template = warm_template;
    stored.policy_applied_at = memo.policy_applied_at;
    stored.orphans_swept_at = memo.orphans_swept_at;
  }
  if (now - memo.gates_swept_at >= options_.gate_sweep) {
    poller.release_acknowledged_pods();
    std::lock_guard lock(mutex_);
    memos_[key_text].gates_swept_at = now;
  }
  // After the claims sweep, so the items a predecessor acknowledged are among those owed a pod.
  if (workspace_retention_) {
    outcomes.workspaces = workspace_retention_->survey(
        env, poller.sessions_owed_pods(),
        [&poller](const std::string& session_id) { return poller.session_fate(session_id); },
        [this, &involved](const std::string& type, const std::string& reason,
                          const std::string& message) {
          deps_.events.record(involved, type, reason, message);
        });
    outcomes.workspaces_surveyed = true;
    if (outcomes.workspaces->total == 0 && !env.runner.workspace_claim) outcomes.workspaces.reset();
  }
  // After the NetworkPolicy: a warm pod is never up before the policy that holds it in.
  const auto warm_pool_retry = reconcile_warm_pool(key_text, env, warm_template, outcomes);
  const PollerState state = poller.state();
  const StatusWrite written = write_status(*object, &env, credentials, &state, outcomes, "");
  mark_counted(env, involved, outcomes, written);

  Clock::Duration next = options_.resync;
  if (warm_pool_retry && *warm_pool_retry < next) next = *warm_pool_retry;
  if (outcomes.next_deletion && *outcomes.next_deletion < next) next = *outcomes.next_deletion;
  if (outcomes.workspaces && outcomes.workspaces->next_check &&
      *outcomes.workspaces->next_check < next) {
    next = *outcomes.workspaces->next_check;
  }
  return written.next(runtime::ReconcileResult::after(next));
}

}  // namespace perimeter::agentenvironment
