#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace perimeter::runtime {

// The controller runtime's metrics, named like controller-runtime's so existing dashboards read
// them. One instance per process registry; every controller, queue and informer shares it.
class RuntimeMetrics {
 public:
  explicit RuntimeMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& reconcile_total;           // {controller,result}
  prometheus::Family<prometheus::Counter>& reconcile_errors_total;    // {controller}
  prometheus::Family<prometheus::Histogram>& reconcile_time_seconds;  // {controller}
  prometheus::Family<prometheus::Gauge>& workqueue_depth;             // {name}
  prometheus::Family<prometheus::Counter>& workqueue_adds_total;      // {name}
  prometheus::Family<prometheus::Counter>& workqueue_retries_total;   // {name}
  prometheus::Family<prometheus::Counter>& watch_restarts_total;      // {resource,reason}
  prometheus::Family<prometheus::Counter>& handler_errors_total;      // {resource}
  prometheus::Family<prometheus::Counter>& watch_events_total;        // {resource,type}
  prometheus::Family<prometheus::Gauge>& leader_election_is_leader;   // {lease}
  prometheus::Family<prometheus::Counter>& leader_election_renew_failures_total;  // {lease}
  prometheus::Family<prometheus::Counter>& events_dropped_total;      // {reason}

  static const prometheus::Histogram::BucketBoundaries& reconcile_buckets();
};

}  // namespace perimeter::runtime
