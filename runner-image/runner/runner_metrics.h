#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace perimeter::runner {

// The runner's counters. The pod has no ingress, so they are read from the final log line
// (`summary`) and by tests; a registry is still used so they can be served if that changes.
class RunnerMetrics {
 public:
  explicit RunnerMetrics(
      std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>());

  void heartbeat(const std::string& outcome) {
    heartbeats_->Add({{"outcome", outcome}}).Increment();
  }
  void stream_reconnect() { stream_reconnects_->Increment(); }
  void result_send_retry() { send_retries_->Increment(); }
  void tool_call(const std::string& outcome) {
    tool_calls_->Add({{"outcome", outcome}}).Increment();
  }
  void bad_event() { bad_events_->Increment(); }
  void assignment_retry() { assignment_retries_->Increment(); }

  double heartbeats(const std::string& outcome) const;
  double stream_reconnects() const { return stream_reconnects_->Value(); }
  double result_send_retries() const { return send_retries_->Value(); }
  double tool_calls(const std::string& outcome) const;
  double bad_events() const { return bad_events_->Value(); }
  double assignment_retries() const { return assignment_retries_->Value(); }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* heartbeats_;
  prometheus::Counter* stream_reconnects_;
  prometheus::Counter* send_retries_;
  prometheus::Family<prometheus::Counter>* tool_calls_;
  prometheus::Counter* bad_events_;
  prometheus::Counter* assignment_retries_;
};

}  // namespace perimeter::runner
