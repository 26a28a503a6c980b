#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstddef>
#include <map>
#include <optional>
#include <string>

namespace perimeter::agentenvironment {

// What the runner-pod cache says of one environment's unfinished runner pods.
struct RunnerPodFigures {
  std::size_t pending = 0, running = 0, unknown = 0;  // by pod phase (no phase yet: Pending)
  std::optional<double> oldest_pending_created;       // Unix seconds
};

// The AgentEnvironment controller's domain metrics, every one labelled by environment
// ("namespace/name" of the AgentEnvironment).
class OperatorMetrics {
 public:
  explicit OperatorMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& sessions_claimed_total;          // {environment}
  prometheus::Family<prometheus::Counter>& sessions_started_total;          // {environment}
  prometheus::Family<prometheus::Counter>& sessions_succeeded_total;        // {environment}
  prometheus::Family<prometheus::Counter>& sessions_failed_total;           // {environment,reason}
  prometheus::Family<prometheus::Gauge>& active_sessions;                   // {environment}
  prometheus::Family<prometheus::Histogram>& claim_to_pod_created_seconds;  // {environment}
  // From the claim to the runner container starting (runner_start_latency.h observes it, once
  // per pod).
  prometheus::Family<prometheus::Histogram>& claim_to_runner_started_seconds;  // {environment}
  prometheus::Family<prometheus::Counter>& polls_total;                     // {environment,result}
  prometheus::Family<prometheus::Counter>& poll_errors_total;               // {environment,reason}
  prometheus::Family<prometheus::Counter>& claim_errors_total;   // {environment,step,reason}
  prometheus::Family<prometheus::Counter>& pods_released_total;  // {environment,result}
  prometheus::Family<prometheus::Counter>& healthchecks_total;   // {environment,result}
  prometheus::Family<prometheus::Gauge>& queue_depth;            // {environment}
  prometheus::Family<prometheus::Gauge>& queue_pending;          // {environment}
  prometheus::Family<prometheus::Counter>& poll_retries_total;   // {environment}
  // Unix time of the last poll the queue answered (alert on time() - this).
  prometheus::Family<prometheus::Gauge>& last_successful_poll_timestamp_seconds;  // {environment}
  // Unfinished runner pods by phase (Pending, Running, Unknown), and the creation time of the
  // oldest one still Pending (absent when none is): alert on time() - this.
  prometheus::Family<prometheus::Gauge>& runner_pods;  // {environment,phase}
  prometheus::Family<prometheus::Gauge>&
      runner_pod_oldest_pending_timestamp_seconds;  // {environment}

  // Session workspaces on PersistentVolumeClaims (docs/workspaces.md).
  prometheus::Family<prometheus::Counter>& workspaces_created_total;  // {environment}
  prometheus::Family<prometheus::Counter>& workspaces_deleted_total;  // {environment,reason}
  // Items whose pod waited for the session's previous pod to end (once per item).
  prometheus::Family<prometheus::Counter>& workspace_waits_total;  // {environment}
  // The environment's workspace claims by state: Bound, Pending (not bound yet), Idle (bound, no
  // live pod of the session), Lost.
  prometheus::Family<prometheus::Gauge>& session_workspaces;  // {environment,state}

  // The warm pool (spec.warmPool, docs/warm-pool.md): its unassigned warm pods by state (ready,
  // starting), the number it is kept at now, and the creates and removals that failed.
  prometheus::Family<prometheus::Gauge>& warm_pool_pods;            // {environment,state}
  prometheus::Family<prometheus::Gauge>& warm_pool_target;          // {environment}
  prometheus::Family<prometheus::Counter>& warm_pool_errors_total;  // {environment,step}

  // The claim with a warm pod (docs/warm-pool.md): claims by kind (warm: a ready warm pod was
  // assigned the item; cold: a pod was made for it), and from the poll that returned the item to
  // the claim's last write (warm: the ack after the assignment; cold: the pod's create).
  prometheus::Family<prometheus::Counter>& claims_total;     // {environment,kind}
  prometheus::Family<prometheus::Histogram>& claim_seconds;  // {environment,kind}
  // Assignment patches that lost their warm pod to another claim or to the pod's end (409/404).
  prometheus::Family<prometheus::Counter>& warm_assignment_conflicts_total;  // {environment}
  void observe_claim(const std::string& environment, const std::string& kind, double seconds);

  void observe_claim_to_runner_started(const std::string& environment, double seconds);
  // Sets the runner-pod gauges of `environment` from one survey of the cache.
  void set_runner_pods(const std::string& environment, const RunnerPodFigures& figures);
  // Removes them: the environment is gone, or not served (its pods are not surveyed), and a
  // gauge left at its last value would keep an alert firing.
  void remove_runner_pods(const std::string& environment);
  // Sets the workspace gauge of `environment` (state -> count; states absent are 0).
  void set_session_workspaces(const std::string& environment,
                              const std::map<std::string, std::size_t>& by_state);
  // Removes what a session poller sets (queue depth and pending, active sessions, the last
  // successful poll) once it has stopped: nothing polls, so nothing there is true any more, and
  // a stale queue depth would keep PerimeterClaimsStalled firing.
  void remove_poller_gauges(const std::string& environment);
  // Sets the warm pool's gauges of `environment`; removes them (no pool, or not served).
  void set_warm_pool(const std::string& environment, std::size_t ready, std::size_t starting,
                     std::size_t target);
  void remove_warm_pool(const std::string& environment);
};

}  // namespace perimeter::agentenvironment
