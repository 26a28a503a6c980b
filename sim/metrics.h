#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace perimeter::sim {

// The simulator's Prometheus metrics, served in text format on GET /metrics.
class SimMetrics {
 public:
  SimMetrics();
  void count_request(const std::string& route, int status, double seconds);
  void count_fault(const std::string& kind);
  void count_bad_request(const std::string& route);
  prometheus::Gauge& open_streams() { return *open_streams_; }
  prometheus::Gauge& waiting_polls() { return *waiting_polls_; }
  std::string render() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Counter>* faults_;
  prometheus::Family<prometheus::Counter>* bad_requests_;
  prometheus::Gauge* open_streams_;
  prometheus::Gauge* waiting_polls_;
};

}  // namespace perimeter::sim
