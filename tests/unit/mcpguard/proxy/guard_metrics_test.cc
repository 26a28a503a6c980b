#include "proxy/guard_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <map>
#include <string>

namespace perimeter::mcpguard {
namespace {

// Every series of `family` as "label=value,..." -> value (counters, and histograms' counts).
std::map<std::string, double> series(prometheus::Registry& registry, const std::string& family) {
  std::map<std::string, double> out;
  for (const auto& collected : registry.Collect()) {
    if (collected.name != family) continue;
    for (const auto& metric : collected.metric) {
      std::string key;
      for (const auto& label : metric.label) key += label.name + "=" + label.value + ",";
      out[key] = collected.type == prometheus::MetricType::Histogram
                     ? static_cast<double>(metric.histogram.sample_count)
                     : metric.counter.value;
    }
  }
  return out;
}

TEST(GuardMetrics, EachLabelSetCountsInItsOwnSeries) {
  // The metrics are cached by label values: the same values must find the same series, and
  // values that differ (or only split differently between labels) must not.
  prometheus::Registry registry;
  PrometheusGuardMetrics metrics(registry);
  metrics.request("r", "tools/call", "echo", true);
  metrics.request("r", "tools/call", "echo", true);
  metrics.request("r", "tools/call", "echo", false);
  metrics.request("r", "tools/call", "ech", true);
  metrics.request("r2", "tools/call", "echo", true);
  metrics.request("r", "tools/list", "", true);
  metrics.bytes("r", 10, 0);
  metrics.bytes("r", 5, 7);
  metrics.bytes("r2", 1, 1);
  metrics.request_duration("r", "tools/call", 0.001);
  metrics.request_duration("r", "tools/call", 0.002);
  metrics.request_duration("r", "tools/list", 0.002);

  EXPECT_EQ(series(registry, "perimeter_mcp_guard_requests_total"),
            (std::map<std::string, double>{
                {"decision=allowed,method=tools/call,route=r,tool=echo,", 2},
                {"decision=denied,method=tools/call,route=r,tool=echo,", 1},
                {"decision=allowed,method=tools/call,route=r,tool=ech,", 1},
                {"decision=allowed,method=tools/call,route=r2,tool=echo,", 1},
                {"decision=allowed,method=tools/list,route=r,tool=,", 1},
            }));
  EXPECT_EQ(series(registry, "perimeter_mcp_guard_bytes_total"), (std::map<std::string, double>{
                                                                     {"direction=in,route=r,", 15},
                                                                     {"direction=out,route=r,", 7},
                                                                     {"direction=in,route=r2,", 1},
                                                                     {"direction=out,route=r2,", 1},
                                                                 }));
  EXPECT_EQ(series(registry, "perimeter_mcp_guard_request_duration_seconds"),
            (std::map<std::string, double>{
                {"method=tools/call,route=r,", 2},
                {"method=tools/list,route=r,", 1},
            }));
}

TEST(GuardMetrics, TwoInstancesOnOneThreadCountInTheirOwnRegistries) {
  // The last metric used is remembered per thread: it must not be taken for another instance's.
  prometheus::Registry first_registry;
  prometheus::Registry second_registry;
  PrometheusGuardMetrics first(first_registry);
  PrometheusGuardMetrics second(second_registry);
  for (int i = 0; i < 3; ++i) {
    first.request("r", "tools/call", "echo", true);
    second.request("r", "tools/call", "echo", true);
    first.bytes("r", 2, 3);
    second.bytes("r", 5, 0);
    first.request_duration("r", "tools/call", 0.001);
  }
  second.request_duration("r", "tools/call", 0.001);
  EXPECT_EQ(series(first_registry, "perimeter_mcp_guard_requests_total"),
            (std::map<std::string, double>{
                {"decision=allowed,method=tools/call,route=r,tool=echo,", 3}}));
  EXPECT_EQ(series(second_registry, "perimeter_mcp_guard_requests_total"),
            (std::map<std::string, double>{
                {"decision=allowed,method=tools/call,route=r,tool=echo,", 3}}));
  EXPECT_EQ(
      series(first_registry, "perimeter_mcp_guard_bytes_total"),
      (std::map<std::string, double>{{"direction=in,route=r,", 6}, {"direction=out,route=r,", 9}}));
  EXPECT_EQ(series(second_registry, "perimeter_mcp_guard_bytes_total"),
            (std::map<std::string, double>{{"direction=in,route=r,", 15}}));
  EXPECT_EQ(series(first_registry, "perimeter_mcp_guard_request_duration_seconds"),
            (std::map<std::string, double>{{"method=tools/call,route=r,", 3}}));
  EXPECT_EQ(series(second_registry, "perimeter_mcp_guard_request_duration_seconds"),
            (std::map<std::string, double>{{"method=tools/call,route=r,", 1}}));
}

}  // namespace
}  // namespace perimeter::mcpguard
