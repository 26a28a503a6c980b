#pragma once

#include <map>
#include <string>

namespace perimeter::testing {

// Readers of a Prometheus text exposition, such as OperatorProcess::metrics() returns.

// The sum of every sample of the metric family `name` (0 when it has none).
double metric_sum(const std::string& exposition, const std::string& name);

// The samples of `name` summed by the value of one of their labels; samples without that label
// are left out.
std::map<std::string, double> metric_sums_by_label(const std::string& exposition,
                                                   const std::string& name,
                                                   const std::string& label);

}  // namespace perimeter::testing
