#pragma once

#include <prometheus/registry.h>

#include <map>
#include <string>

namespace perimeter::testing {

// The value of one counter or gauge (or a histogram's sample count) in a registry, or -1 when no
// such series exists, so a test can tell "zero" from "never registered".
inline double metric_value(prometheus::Registry& registry, const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      bool match = true;
      for (const auto& [key, value] : labels) {
        bool found = false;
        for (const auto& pair : metric.label) {
          if (pair.name == key && pair.value == value) found = true;
        }
        match = match && found;
      }
      if (!match) continue;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          return metric.counter.value;
        case prometheus::MetricType::Gauge:
          return metric.gauge.value;
        case prometheus::MetricType::Histogram:
          return static_cast<double>(metric.histogram.sample_count);
        default:
          return -1;
      }
    }
  }
  return -1;
}

}  // namespace perimeter::testing
