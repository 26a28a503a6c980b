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
                "Unix time of the last poll the work queue answered")) {}

}  // namespace perimeter::agentenvironment
