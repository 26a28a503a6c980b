#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/key_release.h"
#include "controllers/agentenvironment/operator_metrics.h"
#include "controllers/agentenvironment/poller_retirement.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_start_latency.h"
#include "controllers/agentenvironment/session_poller.h"
#include "controllers/agentenvironment/session_ports.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "controllers/agentenvironment/workspace_retention.h"
#include "core/backoff.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "kube/resource_client.h"
#include "runtime/controller.h"
#include "runtime/event_recorder.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {


struct ReconcilerDependencies {
  runtime::Store& environments;  // AgentEnvironment informer cache
  runtime::Store& pods;          // runner pod informer cache
  // The environments' NetworkPolicy informer cache: a policy deleted or edited by hand is seen
  // at once and put back, not at the next periodic check.
  runtime::Store& network_policies;
  kube::ResourceClient& environment_client;
  kube::ResourceClient& secret_client;
  kube::ResourceClient& pod_client;
  kube::ResourceClient& network_policy_client;
  runtime::EventRecorder& events;
  AgentApiFactory& api_factory;
  SessionObjectWriter& session_objects;
  RunnerPodCensus& census;
  OperatorMetrics& metrics;
  Clock& clock;
  RandomSource& random;
  Logger logger;
  // Queues a reconcile of "namespace/name" (the poller calls it when its state changes).
  std::function<void(const std::string&)> enqueue;
  // Cilium egress mode only: the environments' CiliumNetworkPolicy cache and client.
  runtime::Store* cilium_policies = nullptr;
  kube::ResourceClient* cilium_policy_client = nullptr;
  // Reads the ConfigMap of an environment's spec.apiCAConfigMapRef; an environment naming one
  // is refused (ApiCAConfigMapUnreadable) without it.
  kube::ResourceClient* config_map_client = nullptr;
  // Session workspaces on PersistentVolumeClaims: the claims' cache and their writer. Both or
  // neither; without them a spec that asks for claims is refused (InvalidSpec).
  runtime::Store* workspace_claims = nullptr;
  SessionWorkspaces* workspaces = nullptr;
  // Creates and removes warm pods (spec.warmPool); null: through secret_client and pod_client.
  WarmPodWriter* warm_pods = nullptr;
};

struct ReconcilerOptions {
  std::string field_manager = "perimeter-operator";
  std::string worker_id = "perimeter-operator";  // Anthropic-Worker-ID prefix
  // Long-poll threads per environment; 0 creates pollers without threads (unit tests drive them
  // through poller()).
  int poll_threads = 4;
  // Extra poll threads (beyond each environment's first) all environments may run together.
  int max_extra_poll_threads = 64;
  // Where environment keys may be sent (key_release.h).
  ApiHostAllowList allowed_api_hosts = ApiHostAllowList::official();
  // The namespaces that opted in to sessions (the operator may manage Secrets and Pods there);
  // nullopt: every namespace (cluster-wide mode).
  std::optional<std::set<std::string>> session_namespaces;
  // How often an environment is looked at even when nothing changes (queue stats, the key).
  std::chrono::seconds resync{15};
  std::chrono::seconds key_refresh{30};
  // How long the last key read serves while the Secret cannot be read (not: is missing or
  // refused), before the poller stops and Ready turns false.
  std::chrono::seconds key_grace{300};
  std::chrono::minutes policy_refresh{5};
  // How often runner Secrets without their pod are looked for (the claims sweep: it makes the
  // pods of acknowledged claims and removes the Secrets no claim will use).
  std::chrono::seconds orphan_sweep{60};
  // How often runner pods an earlier version left gated after their item's ack are released.
  std::chrono::seconds gate_sweep{15};
  // Status writes of one environment are at least this far apart; changes in between are
  // written together (sessions finishing by the hundred make one write, not a hundred).
  std::chrono::milliseconds status_write_interval{1000};
  // How runner pods reach the network (--runner-egress); status.egress.mode shows it.
  RunnerEgress egress;
  // Where warm runners ask for their assignment (docs/warm-pool.md). Empty: this operator does
  // not serve assignments, so an environment's spec.warmPool gets no warm pod, and its
  // WarmPoolReady condition says why.
  std::optional<AssignmentEndpoint> assignment_endpoint;
  // The runner pods' one egress to that service, in the NetworkPolicy of environments with a
  // warm pool (a cold runner never asks it).
  std::optional<AssignmentPeer> assignment_peer;
  // Told each warm pod a claim assigned (PollerDependencies::hand_over_warm_pod).
  std::function<void(WarmHandOver)> hand_over_warm_pod;
  // Whose runner waits now, with which nonce (PollerDependencies::warm_pod_waiting_nonce).
  std::function<std::optional<std::string>(const std::string& pod_uid)> warm_pod_waiting_nonce;
  // The warm pool keeps spec.warmPool.minReady plus the sessions claimed within this window.
  std::chrono::seconds warm_pool_claim_window{60};
};

// Converges one AgentEnvironment: reads its key, keeps its NetworkPolicy and its session poller
// in line with the spec, records and removes finished runner pods, and writes the status. The
// leader runs it; pollers exist only while it does.
class AgentEnvironmentReconciler final : public runtime::Reconciler {
 public:
  AgentEnvironmentReconciler(ReconcilerDependencies deps, ReconcilerOptions options);
  ~AgentEnvironmentReconciler() override;

  runtime::ReconcileResult reconcile(const kube::ObjectKey& key) override;
  // Stops every poller and waits for them to end (leadership lost, or shutdown).
  void stop_all();
  // The number of environments with a running poller.
  size_t poller_count() const;
  // The poller of "namespace/name", if one runs (for tests that drive it).
  SessionPoller* poller(const std::string& key);

 private:
  // The runner template of the environment's warm pods, or why it has none.
  struct WarmTemplate {
    std::string hash{};  // warm_runner_template_hash; empty without a pool or when refused
    std::string refusal_reason{}, refusal_message{};  // why no warm pod may be made, if so
  };
  // What a reconcile does not need to redo each time: the key is re-read, the NetworkPolicy
  // re-applied and Secrets without pods swept when the spec changes, and otherwise at these
  // intervals.
  struct Memo {
    std::int64_t generation = -1;
    WarmTemplate warm_template{};  // of `generation`
    Clock::TimePoint policy_applied_at{}, orphans_swept_at{}, gates_swept_at{};
    std::optional<Clock::TimePoint> status_written_at;
  };
  struct Credentials {
    bool ok = false;
    std::string key;
    std::string api_ca_pem;  // spec.apiCAConfigMapRef's certificates; empty without one
    std::string reason;
    std::string message;
  };
  // A finished runner pod whose outcome mark is not on it yet, as cached.
  struct FinishedPod {
    std::string uid, name, resource_version, session_id, work_id;
    bool succeeded = false;
    bool warm = false;  // a warm pod a claim assigned served it
    std::string failure_reason;
  };
  // What the pool is and says, for status.warmPool and the WarmPoolReady condition.
  struct WarmPoolStatus {
    std::size_t ready = 0, starting = 0, target = 0;
    std::string condition_status{}, reason{}, message{};
  };
  // What the cache says of the environment's sessions.
  struct Outcomes {
    bool surveyed = false;  // false: the status's session figures are left as they are
    std::vector<FinishedPod> unmarked;
    std::optional<Clock::Duration> next_deletion;
    size_t active = 0;      // sessions' pods not finished
    size_t active_warm = 0;  // of those, warm pods a claim assigned
    size_t unfinished = 0;  // every runner pod not finished: sessions' and unassigned warm ones
    // spec.warmPool (or warm pods left from one): the unassigned warm pods, and the sessions
    // claimed within options.warm_pool_claim_window.
    std::vector<UnassignedWarmPod> warm_pods;
    std::map<std::string, RecentClaims::WallTime> claims_seen;  // pod uid -> claimed at
    // Set when the environment has a pool; unset with warm_pool_surveyed: it has none.
    std::optional<WarmPoolStatus> warm_pool;
    bool warm_pool_surveyed = false;  // false: status.warmPool is left as it is
    RunnerPodFigures runner_pods;  // the active ones by phase
    // The session workspaces (claims), when the environment has any or asks for them.
    std::optional<WorkspaceFigures> workspaces;
    bool workspaces_surveyed = false;  // false: status.workspaces is left as it is
  };
  struct StatusWrite {
    // `planned`, or sooner when a change was held back to coalesce writes.
    runtime::ReconcileResult next(runtime::ReconcileResult planned) const {
      if (deferred && (!planned.requeue_after || *deferred < *planned.requeue_after)) {
        return runtime::ReconcileResult::after(*deferred);
      }
      return planned;
    }
    std::optional<Clock::Duration> deferred;  // written later, to coalesce
    std::vector<FinishedPod> counted;         // newly counted by the write that was made
    std::set<std::string> pending_marks;      // uids counted in status and not yet marked
  };

  Credentials read_key(const AgentEnvironment& env);
  // After the key: the certificates of spec.apiCAConfigMapRef into `credentials`, or why not.
  void read_api_ca(const AgentEnvironment& env, Credentials& credentials);
  // Whether the cached policy (a NetworkPolicy, or a CiliumNetworkPolicy in Cilium mode) is
  // missing or differs from `desired`.
  bool policy_drifted(const runtime::Store& cache, const AgentEnvironment& env,
                      const nlohmann::json& desired) const;
  // Applies `desired`: always when the spec changed, otherwise only when the live policy differs
  // (deleted or edited).
  void apply_policy(kube::ResourceClient& client, const AgentEnvironment& env,
                    const nlohmann::json& desired, bool spec_changed);
  SessionPoller& ensure_poller(const std::string& key, const AgentEnvironment& env,
                               const Credentials& credentials, const std::string& warm_template);
  // Whether a warm pod can exist for this spec and from which template (docs/warm-pool.md).
  WarmTemplate decide_warm_template(const AgentEnvironment& env) const;
  void remove_poller(const std::string& key);
  // An environment the operator will not serve for a reason someone must fix (its namespace did
  // not opt in, another one serves its environment id): no poller, Ready false with the reason,
  // and one Warning Event per change of reason.
  // Returns when to look again: `after` when nothing was held back, sooner to make a status
  // write held back to coalesce writes.
  runtime::ReconcileResult refuse(const std::string& key, const nlohmann::json& object,
                                  const AgentEnvironment& env, const nlohmann::json& involved,
                                  const std::string& reason, const std::string& message,
                                  runtime::ReconcileResult after);
  // Reads the environment's runner pods from the cache, and removes finished ones whose
  // retention is over. Writes nothing else.
  Outcomes survey_sessions(const AgentEnvironment& env);
  // The warm pool: removes finished and surplus unassigned warm pods and creates what the pool
  // lacks (warm_pool.h has the rule), then fills outcomes.warm_pool. Returns when to look again
  // for the pool's sake: a failed create's backoff, or a claim leaving the window.
  std::optional<Clock::Duration> reconcile_warm_pool(const std::string& key,
                                                     const AgentEnvironment& env,
                                                     const WarmTemplate& warm_template,
                                                     Outcomes& outcomes);
  // Marks the pods the status has counted, and reports the newly counted ones.
  void mark_counted(const AgentEnvironment& env, const nlohmann::json& involved,
                    const Outcomes& outcomes, const StatusWrite& written);
  // The claims sweep: a runner Secret without its pod gets the pod when its item was
  // acknowledged, and is removed when no claim will use it (docs/claiming.md).
  void settle_podless_claims(const AgentEnvironment& env, SessionPoller& poller);
  // The status the object should have, computed from `base` (its current status).
  // `counted` receives the unmarked pods this status counts for the first time.
  nlohmann::json desired_status(const nlohmann::json& base, std::int64_t generation,
                                const AgentEnvironment* env, const Credentials& credentials,
                                const PollerState* poller, const Outcomes& outcomes,
                                const std::string& spec_error,
                                std::vector<FinishedPod>* counted = nullptr) const;
  StatusWrite write_status(const nlohmann::json& object, const AgentEnvironment* env,
                           const Credentials& credentials, const PollerState* poller,
                           const Outcomes& outcomes, const std::string& spec_error);
  std::chrono::milliseconds credential_retry_delay(const std::string& key, bool failed);

  ReconcilerDependencies deps_;
  ReconcilerOptions options_;
  mutable std::mutex mutex_;
  std::shared_ptr<PollThreadBudget> thread_budget_;
  std::map<std::string, std::unique_ptr<SessionPoller>> pollers_;
  std::map<std::string, Backoff> credential_backoff_;
  std::map<std::string, Memo> memos_;
  std::map<std::string, std::pair<Clock::TimePoint, Credentials>> key_cache_;
  // Where removed pollers end, off the reconcile workers.
  PollerRetirement retirement_;
  // Claim-to-start latency of the pods this reconciler's leadership term claimed.
  RunnerStartLatency start_latency_;
  // Session workspaces' retention; null without the claims' cache.
  std::unique_ptr<WorkspaceRetention> workspace_retention_;
  // The warm pool's writer when none was given, what it asked the cache does not show yet, and
  // per environment when a failed create may be tried again (guarded by mutex_).
  std::unique_ptr<WarmPodWriter> own_warm_pods_;
  WarmPodWriter* warm_pods_ = nullptr;
  WarmPoolExpectations warm_expectations_;
  RecentClaims recent_claims_{options_.warm_pool_claim_window};
  struct WarmPoolFailure {
    Backoff backoff;
    Clock::TimePoint retry_at{};
    std::string reason{}, message{};  // the condition says it until a create succeeds
    // A warm pod failed: over once a warm pod is ready, so a crash-looping runner backs off
    // further with each pod rather than starting at the first delay again.
    bool pod_failed = false;
  };
  std::map<std::string, WarmPoolFailure> warm_pool_failures_;
};

}  // namespace perimeter::agentenvironment
