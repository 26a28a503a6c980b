#include "sim/metrics.h"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace perimeter::sim {

SimMetrics::SimMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("perimeter_sim_requests_total")
                   .Help("API requests answered, by route and status code")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("perimeter_sim_request_duration_seconds")
                  .Help("Time from a request's arrival to its reply, long-poll waits included")
                  .Register(*registry_);
  faults_ = &prometheus::BuildCounter()
                 .Name("perimeter_sim_faults_injected_total")
                 .Help("Faults injected, by kind")
                 .Register(*registry_);
  bad_requests_ = &prometheus::BuildCounter()
                       .Name("perimeter_sim_bad_requests_total")
                       .Help("Requests refused as malformed (400), by route")
                       .Register(*registry_);
  open_streams_ = &prometheus::BuildGauge()
                       .Name("perimeter_sim_open_event_streams")
                       .Help("SSE event streams currently open")
                       .Register(*registry_)
                       .Add({});
  waiting_polls_ = &prometheus::BuildGauge()
                        .Name("perimeter_sim_waiting_polls")
                        .Help("Long-polls currently waiting for work")
                        .Register(*registry_)
                        .Add({});
}

void SimMetrics::count_request(const std::string& route, int status, double seconds) {
  requests_->Add({{"route", route}, {"code", std::to_string(status)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  latency_->Add({{"route", route}}, kBuckets).Observe(seconds);
  if (status == 400) count_bad_request(route);
}

void SimMetrics::count_fault(const std::string& kind) {
  faults_->Add({{"kind", kind}}).Increment();
}

void SimMetrics::count_bad_request(const std::string& route) {
  bad_requests_->Add({{"route", route}}).Increment();
}

std::string SimMetrics::render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace perimeter::sim
