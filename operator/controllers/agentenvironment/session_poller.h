#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "agentapi/agent_api.h"
#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/operator_metrics.h"
#include "controllers/agentenvironment/poll_thread_budget.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/session_ports.h"
#include "controllers/agentenvironment/session_workspace.h"
#include "controllers/agentenvironment/warm_assignment_service.h"
#include "controllers/agentenvironment/workspace_retention.h"
#include "core/backoff.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"

namespace perimeter::agentenvironment {

// What the reconciler hands the poller; replaced whenever the resource or its key changes.
struct PollerSettings {
  AgentEnvironment environment;
  std::string environment_key;  // never logged
  std::string worker_id;        // sent as Anthropic-Worker-ID
  // PEM certificates trusted for the API besides the system's store: the ConfigMap key
  // spec.apiCAConfigMapRef names (empty without one).
  std::string api_ca_pem{};
  // The digest of the runner template warm pods are made from now (warm_runner_template_hash):
  // a claim assigns only a warm pod that carries it. Empty when the spec offers no warm pool.
  std::string warm_template_hash{};
};

enum class PollerHealth {
  kStarting,  // no poll has finished yet
  kPolling,   // the last poll succeeded
  kFailing,   // polls fail with errors that may pass (network, 5xx, 429)
  kRejected,  // the API refused the key or does not know the environment: waits for new settings
  // The apiserver refuses the runner objects the spec builds: no claims until a new generation.
  kSpecRefused,
};

// How the poller is doing, for the resource's conditions.
struct PollerState {
  PollerHealth health = PollerHealth::kStarting;
  std::string reason;   // CamelCase, for a condition
  std::string message;  // for people; carries the API's error message
  std::optional<std::chrono::system_clock::time_point> last_success;
  std::optional<agentapi::WorkQueueStats> stats;
};

// What one pass of the poll loop did; the loop decides how long to wait from it.
enum class PollOutcome {
  kClaimed,     // a session got its pod (or a health check was answered)
  kEmpty,       // the queue had nothing
  kAtCapacity,  // at maxConcurrentSessions: no poll was made
  kSuspended,   // spec.suspend: no poll was made
  kFailed,      // the poll or the claim failed; back off
  kRejected,    // a fatal 4xx: wait for new settings
};

struct PollerDependencies {
  AgentApiFactory& api_factory;
  SessionObjectWriter& objects;
  RunnerPodCensus& census;
  OperatorMetrics& metrics;
  Clock& clock;
  RandomSource& random;
  Logger logger;
  // A Kubernetes Event on the AgentEnvironment: type ("Normal"/"Warning"), reason, message.
  std::function<void(const std::string&, const std::string&, const std::string&)> record_event;
  // Called when the state changes in a way the resource's status shows.
  std::function<void()> on_state_change;
  // Shared by every poller of the operator; null: no limit beyond each poller's threads.
  std::shared_ptr<PollThreadBudget> thread_budget = nullptr;
  // The operator's egress mode: what the session's Secret and Pod say about the network.
  RunnerEgress egress = {};
  // Session workspaces on PersistentVolumeClaims (spec.runner.workspace.persistentVolumeClaim);
  // null: such a spec cannot be served (the reconciler always passes one).
  SessionWorkspaces* workspaces = nullptr;
  // Told each warm pod a claim assigned, as its patch is answered (the assignment service
  // answers the pod's held request at once); empty: nobody listens here.
  std::function<void(WarmHandOver)> hand_over_warm_pod = {};
  // The nonce hash a warm pod's runner is waiting with, by pod uid
  // (WarmAssignmentService::waiting_nonce); empty: nobody knows.
  std::function<std::optional<std::string>(const std::string& pod_uid)> warm_pod_waiting_nonce = {};
};

// What the claims sweep found of a claim whose Secret has no pod.
enum class PodlessClaim {
  // Its item was acknowledged: the pod is made now. Or a warm pod holds the item's assignment
  // (found before asking the queue, or after it said acknowledged): that pod serves it.
  kStarted,
  kQueued,   // its item is queued (mid-claim, or left to the reclaim): a later claim makes the pod
  kOver,     // its item is stopped, or the queue no longer knows it: no pod will be made
  kUnknown,  // the queue or the apiserver did not answer: decided at a later sweep
};

// Long-polls one environment's work queue and turns each session item into its runner pod.
//
// The claim order is poll -> Secret -> ack -> Pod: two apiserver writes per claim. With a ready
// warm pod (docs/warm-pool.md) it is poll -> Secret -> ack -> the pod's assignment, and no pod is
// made: a crash at any step leaves what the next claim of the item or the claims sweep finds
// (docs/claiming.md). The Secret
// is the claim's record in the cluster, written before the ack, so an operator that dies before
// the ack leaves the item to the queue's reclaim (the retry meets the Secret by its name, derived
// from the work id), and one that dies after the ack leaves a Secret whose item is no longer
// queued, for which the claims sweep makes the pod (start_if_acknowledged). The runner only
// ever starts after the ack, so its first heartbeat meets a started lease. Nothing is lost,
// nothing doubled. See docs/claiming.md for the full argument.
//
// The concurrency limit is exact: a slot is reserved before each poll, and pods created but not
// yet seen by the informer count until they are. Warm pods count against it like any unfinished
// pod, so a pass that will hand its item to a ready warm pod needs no slot of its own: it holds
// one of the ready warm pods instead, and may poll at the limit.
class SessionPoller {
 public:
  SessionPoller(PollerSettings settings, PollerDependencies deps, int threads = 4);
  ~SessionPoller();  // stops and joins
  SessionPoller(const SessionPoller&) = delete;
  SessionPoller& operator=(const SessionPoller&) = delete;

  // Starts polling with one thread. The others join in while the queue has work (after a pass
  // that claimed), as far as the operator's thread budget allows, and leave at their first pass
  // that does not claim, so an idle environment holds one long-poll and one thread. Unit tests
  // drive poll_once() instead.
  void start();
  // How many poll threads are running now.
  int running_threads() const;
  // Claims nothing from now on (an item polled after this is left to the queue) and wakes the
  // threads; does not wait for them.
  void request_stop();
  // request_stop(), then waits for the threads to end.
  void stop();
  // New settings take effect at the next poll; a rejected poller tries again with them.
  void update(PollerSettings settings);
  // Capacity may have changed (a pod finished): re-check now rather than at the next tick.
  void wake();
  PollerState state() const;

  // One pass: reserve a slot, poll, claim. Never sleeps; returns what happened.
  PollOutcome poll_once();
  // Fetches the queue's stats into the state and the gauges.
  void refresh_stats();
  // Whether the stats fetched at `last_refresh` are due for a refresh.
  bool stats_due(Clock::TimePoint last_refresh) const;
  // Releases the gate of every runner pod an earlier version of the operator left gated whose
  // item the queue no longer holds as queued (acknowledged, but the release after the ack failed
  // or that operator died before it). Items still queued keep their gate. Returns how many pods
  // were released.
  int release_acknowledged_pods();
  // For a Secret without its pod: asks the queue about its item and, when it was acknowledged,
  // makes the pod (the claim that wrote `claimed_at` ended between its ack and its pod).
  PodlessClaim start_if_acknowledged(const std::string& work_id, const std::string& claimed_at);
  // Makes the pods of this process's acknowledged items whose pod creation failed. poll_once()
  // calls it first.
  void start_unstarted();
  // The sessions of the acknowledged items this poller still owes a pod (waiting for their
  // workspace, or whose pod could not be made yet): their workspace is about to be used.
  std::set<std::string> sessions_owed_pods() const;
  // What the API says of a session (retrieved with the environment key), for its workspace.
  SessionFate session_fate(const std::string& session_id);
  // How long the loop waits after an outcome (exposed for tests).
  std::chrono::milliseconds delay_after(PollOutcome outcome);

 private:
  // One slot of maxConcurrentSessions, held by a pass from before its poll to the end of its
  // claim; released on every path by its destructor. A claim that made its pod says so, and the
  // pod then counts against the limit until the informer shows it.
  class SlotReservation {
   public:
    // `warm`: the pass holds one of the ready warm pods, not a slot under the limit.
    explicit SlotReservation(SessionPoller* poller, bool warm = false)
        : poller_(poller), warm_(warm) {}
    SlotReservation(SlotReservation&& other) noexcept;
    SlotReservation& operator=(SlotReservation&&) = delete;
    SlotReservation(const SlotReservation&) = delete;
    ~SlotReservation();
    void count_pod(const std::string& name) { created_pod_ = name; }
    bool warm() const { return warm_; }

   private:
    friend class SessionPoller;  // prefer_warm() decides warm or cold once the item is in hand
    SessionPoller* poller_;
    bool warm_ = false;
    bool holds_item_ = false;  // its poll returned an item: decided by prefer_warm()
    std::string created_pod_;
  };

  void run(std::stop_token stop, int index);
  // Starts every poll thread that is not running.
  void spread();
  std::shared_ptr<agentapi::AgentApi> api();
  // A ready warm pod when one is not yet held by another pass (unless `cold_only`), else a slot
  // under the limit; nullopt when neither is free.
  std::optional<SlotReservation> reserve_slot(bool cold_only = false);
  // Decides, once the pass's poll returned an item, whether it goes to a warm pod: a cold
  // reservation, taken before a long-poll held for seconds, turns warm when a ready warm pod is
  // not taken by another pass holding an item, even one a pass still waiting reserved (that pass
  // takes over the slot under the limit this one gives up); a warm reservation whose pod went
  // that way turns cold, in that slot.
  void prefer_warm(SlotReservation& slot);
  // The ready warm pods of the census that no pass holds or this poller assigned (pruning the
  // assigned ones the census no longer shows ready). Called under mutex_ and counting_mutex_.
  std::size_t available_warm_locked(const std::set<std::string>& ready_warm, Clock::TimePoint now);
  // The census's ready warm pods of the current runner template, oldest first (reads the cache:
  // not under mutex_).
  std::vector<WarmPodRef> assignable_warm_pods();
  // The same, by name.
  std::set<std::string> ready_warm_names();
  // A slot regardless of the limit, for an item already acknowledged.
  SlotReservation take_slot();
  void release_slot(const std::string& created_pod, bool warm, bool holds_item);
  // When a poll returned, on both clocks: steady for durations, wall for the Secret's marker.
  struct PollTime {
    Clock::TimePoint steady;
    std::chrono::system_clock::time_point wall;
  };
  PollOutcome claim(const agentapi::WorkItem& item, PollTime polled_at, SlotReservation& slot);
  // The claim's steps after its Secret, for a cold pod: the dry run, the ack, the pod.
  PollOutcome claim_cold(const agentapi::WorkItem& item, const AgentEnvironment& env,
                         const ClaimedSession& session, PollTime polled_at, SlotReservation& slot);
  // Assigns the acknowledged item to one of the ready warm pods (the next on each 409). nullopt
  // when every ready pod was lost (the caller makes a cold pod: the item is owed one).
  std::optional<PollOutcome> claim_warm(const agentapi::WorkItem& item, const AgentEnvironment& env,
                                        const ClaimedSession& session, PollTime polled_at);
  // Acks `item`; false (counted and reported as a failed claim) when the ack failed.
  bool acknowledge(const agentapi::WorkItem& item);
  // Counts, logs and reports a failed step of the claim of `item`.
  void claim_error(const agentapi::WorkItem& item, const std::string& step,
                   const std::string& reason, const std::string& message);
  // Makes the runner pod of an acknowledged item; on failure keeps it for start_unstarted().
  PollOutcome start_pod(const AgentEnvironment& env, const ClaimedSession& session,
                        std::optional<Clock::TimePoint> polled_at, SlotReservation& slot);
  // Makes ready the session's workspace claim for its pod; a reason when the pod must wait
  // (another live pod of the session mounts it, another start of the session is under way, the
  // claim is being deleted). Throws what the apiserver throws.
  std::optional<std::string> prepare_workspace(const AgentEnvironment& env,
                                               const ClaimedSession& session);
  void answer_healthcheck(const agentapi::WorkItem& item);
  // The apiserver refused an object of the claim as `generation` of the spec builds it.
  PollOutcome refuse_spec(const agentapi::WorkItem& item, std::int64_t generation,
                          const std::string& step, const std::string& message);
  bool release_pod(const std::string& ns, const std::string& pod_name, const std::string& work_id);
  PollOutcome fail_poll(const std::string& reason, const std::string& metric_reason,
                        const std::string& message, bool rejected);
  void set_state(PollerHealth health, const std::string& reason, const std::string& message);
  std::string label() const { return environment_label_; }

  PollerDependencies deps_;
  const int threads_;
  const std::string environment_label_;  // "namespace/name"

  mutable std::mutex mutex_;
  std::mutex counting_mutex_;  // held by reserve_slot() around its census; before mutex_
  std::condition_variable_any wake_cv_;
  PollerSettings settings_;
  std::uint64_t settings_generation_ = 0;
  std::uint64_t wake_generation_ = 0;
  std::shared_ptr<agentapi::AgentApi> api_;
  std::uint64_t api_generation_ = ~0ULL;
  PollerState state_;
  Clock::TimePoint rejected_until_{};
  std::int64_t refused_generation_ = -1;  // the generation whose objects were refused
  std::int64_t checked_generation_ = -1;  // the generation whose pod had its dry run
  // Acknowledged items whose pod could not be made yet, by work id (no secret kept).
  std::map<std::string, ClaimedSession> unstarted_;
  // Of those, the ones waiting for their session's workspace (by work id), so the wait is told
  // once; and the sessions whose pod some thread is starting now.
  std::set<std::string> waiting_for_workspace_;
  std::set<std::string> starting_sessions_;
  bool stopping_ = false;  // set once by stop(); an item polled after it is not claimed
  // The queue's figures changed (a claim, or an empty poll while they showed items): thread 0
  // fetches them again soon.
  std::atomic<bool> stats_stale_{false};
  // The last pass polled and found nothing (not: claimed, or made no poll at the limit).
  std::atomic<bool> last_poll_empty_{false};
  int reserved_ = 0;
  // Passes holding a ready warm pod (reserve_slot), the warm pods some pass is assigning now,
  // and the ones this poller assigned that the census may still show ready (with when).
  std::size_t reserved_warm_ = 0;
  // Of those, the passes whose poll returned an item; and how many of the passes still waiting
  // gave their warm pod to a pass with an item and hold its slot under the limit instead
  // (counted in reserved_, not reserved_warm_): the next of them to end or get an item is cold.
  std::size_t warm_with_item_ = 0;
  std::size_t warm_given_up_ = 0;
  std::set<std::string> assigning_;
  std::map<std::string, std::chrono::steady_clock::time_point> recently_assigned_;
  // Pods this poller created that the census has not shown yet, with when they were created.
  std::map<std::string, std::chrono::steady_clock::time_point> recently_created_;
  Backoff backoff_;
  // workers_[0] polls from start() to stop(); the others run while helper_running_ says so.
  std::vector<std::jthread> workers_;
  std::vector<bool> helper_running_;
};

}  // namespace perimeter::agentenvironment
