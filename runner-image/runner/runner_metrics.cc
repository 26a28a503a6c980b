#include "runner/runner_metrics.h"

namespace perimeter::runner {

RunnerMetrics::RunnerMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  heartbeats_ = &prometheus::BuildCounter()
                     .Name("perimeter_runner_heartbeats_total")
                     .Help("Lease heartbeats by outcome (ok, transient, lost, rejected)")
                     .Register(*registry_);
  stream_reconnects_ = &prometheus::BuildCounter()
                            .Name("perimeter_runner_stream_reconnects_total")
                            .Help("Session event stream reconnects after a drop or an error")
                            .Register(*registry_)
                            .Add({});
  send_retries_ = &prometheus::BuildCounter()
                       .Name("perimeter_runner_result_send_retries_total")
                       .Help("Tool result sends retried after a transient failure")
                       .Register(*registry_)
                       .Add({});
  tool_calls_ = &prometheus::BuildCounter()
                     .Name("perimeter_runner_tool_calls_total")
                     .Help("Tool calls by outcome (ok, error, denied, unowned, unposted)")
                     .Register(*registry_);
  bad_events_ = &prometheus::BuildCounter()
                     .Name("perimeter_runner_bad_events_total")
                     .Help("Session events the runner could not use (missing or mistyped fields)")
                     .Register(*registry_)
                     .Add({});
  assignment_retries_ = &prometheus::BuildCounter()
                             .Name("perimeter_runner_assignment_retries_total")
                             .Help("A warm runner's assignment requests retried after a failure")
                             .Register(*registry_)
                             .Add({});
}

double RunnerMetrics::heartbeats(const std::string& outcome) const {
  return heartbeats_->Add({{"outcome", outcome}}).Value();
}

double RunnerMetrics::tool_calls(const std::string& outcome) const {
  return tool_calls_->Add({{"outcome", outcome}}).Value();
}

}  // namespace perimeter::runner
