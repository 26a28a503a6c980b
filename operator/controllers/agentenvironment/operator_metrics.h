#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace perimeter::agentenvironment {

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
};

}  // namespace perimeter::agentenvironment
