#include "runtime/metrics.h"

namespace perimeter::runtime {

RuntimeMetrics::RuntimeMetrics(prometheus::Registry& registry)
    : reconcile_total(prometheus::BuildCounter()
                          .Name("perimeter_controller_reconcile_total")
                          .Help("Reconciles per controller and result")
                          .Register(registry)),
      reconcile_errors_total(prometheus::BuildCounter()
                                 .Name("perimeter_controller_reconcile_errors_total")
                                 .Help("Reconciles that returned an error, terminal or not")
                                 .Register(registry)),
      reconcile_time_seconds(prometheus::BuildHistogram()
                                 .Name("perimeter_controller_reconcile_time_seconds")
                                 .Help("Time spent in one reconcile")
                                 .Register(registry)),
      workqueue_depth(prometheus::BuildGauge()
                          .Name("perimeter_workqueue_depth")
                          .Help("Keys waiting in a work queue")
                          .Register(registry)),
      workqueue_adds_total(prometheus::BuildCounter()
                               .Name("perimeter_workqueue_adds_total")
                               .Help("Keys added to a work queue")
                               .Register(registry)),
      workqueue_retries_total(prometheus::BuildCounter()
                                  .Name("perimeter_workqueue_retries_total")
                                  .Help("Rate-limited re-adds of a key after a failure")
                                  .Register(registry)),
      watch_restarts_total(prometheus::BuildCounter()
                               .Name("perimeter_watch_restarts_total")
                               .Help("Watch restarts per resource and reason")
                               .Register(registry)),
      handler_errors_total(prometheus::BuildCounter()
                               .Name("perimeter_informer_handler_errors_total")
                               .Help("Informer event handlers that threw, per resource")
                               .Register(registry)),
      watch_events_total(prometheus::BuildCounter()
                             .Name("perimeter_watch_events_total")
                             .Help("Watch events applied to an informer cache")
                             .Register(registry)),
      leader_election_is_leader(prometheus::BuildGauge()
                                    .Name("perimeter_leader_election_is_leader")
                                    .Help("1 while this process holds the lease")
                                    .Register(registry)),
      leader_election_renew_failures_total(
          prometheus::BuildCounter()
              .Name("perimeter_leader_election_renew_failures_total")
              .Help("Renewals of a held lease that failed: an error, a request that ran out of "
                    "renew deadline, a conflict, or another holder")
              .Register(registry)),
      events_dropped_total(
          prometheus::BuildCounter()
              .Name("perimeter_events_dropped_total")
              .Help("Kubernetes Events not written (queue full, rate limit, error)")
              .Register(registry)) {}

const prometheus::Histogram::BucketBoundaries& RuntimeMetrics::reconcile_buckets() {
  static const prometheus::Histogram::BucketBoundaries buckets = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return buckets;
}

}  // namespace perimeter::runtime
