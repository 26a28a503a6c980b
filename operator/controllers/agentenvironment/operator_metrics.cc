#include "controllers/agentenvironment/operator_metrics.h"

namespace perimeter::agentenvironment {
namespace {

prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& registry, const char* name,
                                                 const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Gauge>& gauge(prometheus::Registry& registry, const char* name,
                                             const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

}  // namespace

OperatorMetrics::OperatorMetrics(prometheus::Registry& registry)
    : sessions_claimed_total(counter(registry, "perimeter_sessions_claimed_total",
                                     "Session work items polled from the queue for a runner pod")),
      sessions_started_total(counter(registry, "perimeter_sessions_started_total",
                                     "Runner pods created for claimed sessions")),
      sessions_succeeded_total(counter(registry, "perimeter_sessions_succeeded_total",
                                       "Runner pods that finished with success")),
      sessions_failed_total(counter(registry, "perimeter_sessions_failed_total",
                                    "Runner pods that failed, by reason")),
      active_sessions(
          gauge(registry, "perimeter_active_sessions", "Runner pods that have not finished")),
      claim_to_pod_created_seconds(
          prometheus::BuildHistogram()
              .Name("perimeter_claim_to_pod_created_seconds")
              .Help("From the poll that returned a session to its runner pod being created")
              .Register(registry)),
      claim_to_runner_started_seconds(
          prometheus::BuildHistogram()
              .Name("perimeter_claim_to_runner_started_seconds")
              .Help("From the poll that returned a session to its cold runner pod's container "
                    "starting (the pod's startedAt, whole seconds); warm pods are not observed")
              .Register(registry)),
      polls_total(counter(registry, "perimeter_polls_total",
                          "Work-queue polls, by result (work, empty, error)")),
      poll_errors_total(
          counter(registry, "perimeter_poll_errors_total", "Failed work-queue polls, by reason")),
      claim_errors_total(counter(registry, "perimeter_claim_errors_total",
                                 "Failures while turning a polled item into a runner pod")),
      pods_released_total(counter(registry, "perimeter_pods_released_total",
                                  "Scheduling gates of runner pods released after the ack, by "
                                  "result (released, error)")),
      healthchecks_total(counter(registry, "perimeter_healthchecks_total",
                                 "Health-check work items answered, by result")),
      queue_depth(gauge(registry, "perimeter_queue_depth", "Work items waiting in the queue")),
      queue_pending(gauge(registry, "perimeter_queue_pending",
                          "Work items handed out but not yet acknowledged")),
      poll_retries_total(
          counter(registry, "perimeter_poll_retries_total", "Backoff waits after a failed poll")),
      last_successful_poll_timestamp_seconds(
          gauge(registry, "perimeter_last_successful_poll_timestamp_seconds",
                "Unix time of the last poll the work queue answered")),
      runner_pods(
          gauge(registry, "perimeter_runner_pods",
                "Runner pods that have not finished, by phase (Pending, Running, Unknown)")),
      runner_pod_oldest_pending_timestamp_seconds(
          gauge(registry, "perimeter_runner_pod_oldest_pending_timestamp_seconds",
                "Creation time of the environment's oldest runner pod still Pending")),
      workspaces_created_total(counter(registry, "perimeter_workspaces_created_total",
                                       "Session workspace claims created")),
      workspaces_deleted_total(
          counter(registry, "perimeter_workspaces_deleted_total",
                  "Session workspace claims deleted, by reason (terminated, retention)")),
      workspace_waits_total(counter(registry, "perimeter_workspace_waits_total",
                                    "Work items whose pod waited for the session's previous pod "
                                    "to end before mounting its workspace")),
      session_workspaces(gauge(registry, "perimeter_session_workspaces",
                               "Session workspace claims, by state (Pending, Bound, Idle, "
                               "Lost)")),
      warm_pool_pods(gauge(registry, "perimeter_warm_pool_pods",
                           "Warm runner pods not assigned to a session, by state (ready, "
                           "starting)")),
      warm_pool_target(gauge(registry, "perimeter_warm_pool_target",
                             "The number of unassigned warm runner pods the pool is kept at now")),
      warm_pool_errors_total(counter(registry, "perimeter_warm_pool_errors_total",
                                     "Warm pods the pool failed to create or remove, by step "
                                     "(create, remove)")),
      claims_total(counter(registry, "perimeter_claims_total",
                           "Session claims that handed the item to a runner pod, by kind (warm: "
                           "a ready warm pod was assigned it; cold: a pod was made for it)")),
      claim_seconds(prometheus::BuildHistogram()
                        .Name("perimeter_claim_seconds")
                        .Help("From the poll that returned a session to its claim's last write "
                              "(warm: the assignment after the ack; cold: the pod's create), by "
                              "kind")
                        .Register(registry)),
      warm_assignment_conflicts_total(
          counter(registry, "perimeter_warm_assignment_conflicts_total",
                  "Assignments of a warm pod refused because another claim won it or it ended "
                  "(409 or 404); the claim tries the next ready pod, then a cold pod")) {}

namespace {

constexpr const char* kRunnerPodPhases[] = {"Pending", "Running", "Unknown"};
constexpr const char* kWorkspaceStates[] = {"Pending", "Bound", "Idle", "Lost"};

void remove_series(prometheus::Family<prometheus::Gauge>& family,
                   const prometheus::Labels& labels) {
  if (family.Has(labels)) family.Remove(&family.Add(labels));
}

}  // namespace

void OperatorMetrics::observe_claim_to_runner_started(const std::string& environment,
                                                      double seconds) {
  // Scheduling, an image pull and the container's start: seconds to minutes, where the pod's
  // creation alone takes milliseconds.
  claim_to_runner_started_seconds
      .Add({{"environment", environment}},
           prometheus::Histogram::BucketBoundaries{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600})
      .Observe(seconds);
}

void OperatorMetrics::observe_claim(const std::string& environment, const std::string& kind,
                                    double seconds) {
  claims_total.Add({{"environment", environment}, {"kind", kind}}).Increment();
  claim_seconds
      .Add({{"environment", environment}, {"kind", kind}},
           prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                   5, 10})
      .Observe(seconds);
}

void OperatorMetrics::set_runner_pods(const std::string& environment,
                                      const RunnerPodFigures& figures) {
  runner_pods.Add({{"environment", environment}, {"phase", "Pending"}})
      .Set(static_cast<double>(figures.pending));
  runner_pods.Add({{"environment", environment}, {"phase", "Running"}})
      .Set(static_cast<double>(figures.running));
  runner_pods.Add({{"environment", environment}, {"phase", "Unknown"}})
      .Set(static_cast<double>(figures.unknown));
  if (figures.oldest_pending_created) {
    runner_pod_oldest_pending_timestamp_seconds.Add({{"environment", environment}})
        .Set(*figures.oldest_pending_created);
  } else {
    remove_series(runner_pod_oldest_pending_timestamp_seconds, {{"environment", environment}});
  }
}

void OperatorMetrics::set_session_workspaces(const std::string& environment,
                                             const std::map<std::string, std::size_t>& by_state) {
  for (const char* state : kWorkspaceStates) {
    const auto it = by_state.find(state);
    session_workspaces.Add({{"environment", environment}, {"state", state}})
        .Set(it == by_state.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void OperatorMetrics::remove_runner_pods(const std::string& environment) {
  for (const char* state : kWorkspaceStates) {
    remove_series(session_workspaces, {{"environment", environment}, {"state", state}});
  }
  for (const char* phase : kRunnerPodPhases) {
    remove_series(runner_pods, {{"environment", environment}, {"phase", phase}});
  }
  remove_series(runner_pod_oldest_pending_timestamp_seconds, {{"environment", environment}});
}

void OperatorMetrics::remove_poller_gauges(const std::string& environment) {
  for (auto* family :
       {&queue_depth, &queue_pending, &active_sessions, &last_successful_poll_timestamp_seconds}) {
    remove_series(*family, {{"environment", environment}});
  }
}

void OperatorMetrics::set_warm_pool(const std::string& environment, std::size_t ready,
                                    std::size_t starting, std::size_t target) {
  warm_pool_pods.Add({{"environment", environment}, {"state", "ready"}})
      .Set(static_cast<double>(ready));
  warm_pool_pods.Add({{"environment", environment}, {"state", "starting"}})
      .Set(static_cast<double>(starting));
  warm_pool_target.Add({{"environment", environment}}).Set(static_cast<double>(target));
}

void OperatorMetrics::remove_warm_pool(const std::string& environment) {
  for (const char* state : {"ready", "starting"}) {
    remove_series(warm_pool_pods, {{"environment", environment}, {"state", state}});
  }
  remove_series(warm_pool_target, {{"environment", environment}});
}

}  // namespace perimeter::agentenvironment
