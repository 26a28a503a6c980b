#include "proxy/guard_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace perimeter::mcpguard {

namespace {

constexpr std::array<std::string_view, 24> kMcpMethods = {
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
};

}  // namespace

std::string_view metric_method(std::string_view method) {
  for (const auto known : kMcpMethods) {
    if (method == known) return known;
  }
  return method.empty() ? std::string_view("") : std::string_view("(other)");
}

struct PrometheusGuardMetrics::Families {
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Counter>& denials;
  prometheus::Family<prometheus::Counter>& upstream_errors;
  prometheus::Family<prometheus::Histogram>& durations;
  prometheus::Family<prometheus::Gauge>& open_streams;
  prometheus::Family<prometheus::Counter>& bytes;
  prometheus::Family<prometheus::Counter>& reloads;
  prometheus::Family<prometheus::Counter>& server_requests_unanswered;
  prometheus::Family<prometheus::Counter>& malformed_requests;
};

namespace {

// Lookups by std::string_view, so a cache hit builds no std::string.
struct KeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
};
template <typename Metric>
using MetricCache = std::unordered_map<std::string, Metric*, KeyHash, std::equal_to<>>;

// A cache key: the family's letter and the label values, separated by a byte no label holds.
// Built in a buffer of the calling thread's, which keeps its capacity from call to call.
std::string_view cache_key(char family, std::initializer_list<std::string_view> values) {
  thread_local std::string key;
  key.assign(1, family);
  for (const auto value : values) {
    key += '\x1f';
    key.append(value.data(), value.size());
  }
  return key;
}

// Per thread and per kind of metric, the metric of the label values used last: the requests of a
// route mostly repeat the labels of the one before, and a hit compares those few bytes, with no
// key built, no hash and no lock. `owner` is the cache's id (never reused, unlike an address).
template <typename Metric, std::size_t N>
struct LastUsed {
  std::uint64_t owner = 0;
  std::array<std::string, N> values;
  Metric* metric = nullptr;

  Metric* find(std::uint64_t cache_id, const std::array<std::string_view, N>& wanted) const {
    if (owner != cache_id) return nullptr;
    for (std::size_t i = 0; i < N; ++i) {
      if (values[i] != wanted[i]) return nullptr;
    }
    return metric;
  }
  void remember(std::uint64_t cache_id, const std::array<std::string_view, N>& used, Metric* m) {
    owner = cache_id;
    for (std::size_t i = 0; i < N; ++i) values[i].assign(used[i].data(), used[i].size());
    metric = m;
  }
};

std::uint64_t next_cache_id() {
  static std::atomic<std::uint64_t> last{0};
  return ++last;
}

}  // namespace

struct PrometheusGuardMetrics::Cache {
  const std::uint64_t id = next_cache_id();
  // The metric of each label set seen, so a request costs a hash lookup rather than a
  // Family::Add (a std::map of label strings built and looked up under the family's lock).
  // Label sets are bounded (see guard_metrics.h), and so are these maps.
  std::mutex mutex;
  MetricCache<prometheus::Counter> counters;      // guarded by mutex
  MetricCache<prometheus::Histogram> histograms;  // guarded by mutex
  MetricCache<prometheus::Gauge> gauges;          // guarded by mutex

  template <typename Metric, typename Add>
  Metric& cached(MetricCache<Metric>& cache, std::string_view key, Add add) {
    std::lock_guard lock(mutex);
    auto found = cache.find(key);
    if (found == cache.end()) found = cache.emplace(std::string(key), &add()).first;
    return *found->second;
  }
};

PrometheusGuardMetrics::PrometheusGuardMetrics(prometheus::Registry& registry)
    : families_(std::make_unique<Families>(Families{
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_requests_total")
              .Help("JSON-RPC requests and notifications clients sent, by decision")
              .Register(registry),
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_denials_total")
              .Help("Requests the guard refused, by reason")
              .Register(registry),
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_upstream_errors_total")
              .Help("Failures talking to the route's upstream, by kind")
              .Register(registry),
          prometheus::BuildHistogram()
              .Name("perimeter_mcp_guard_request_duration_seconds")
              .Help("From a request's arrival to its response")
              .Register(registry),
          prometheus::BuildGauge()
              .Name("perimeter_mcp_guard_open_streams")
              .Help("SSE streams being forwarded")
              .Register(registry),
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_bytes_total")
              .Help("HTTP body bytes, in (from clients) and out (to clients)")
              .Register(registry),
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_config_reloads_total")
              .Help("Config reloads, by result")
              .Register(registry),
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_server_requests_unanswered_total")
              .Help("Server-initiated requests audited without the client's answer, by reason")
              .Register(registry),
          prometheus::BuildCounter()
              .Name("perimeter_mcp_guard_malformed_requests_total")
              .Help("Requests that were not parseable HTTP, answered 400")
              .Register(registry),
      })),
      cache_(std::make_unique<Cache>()) {}

PrometheusGuardMetrics::~PrometheusGuardMetrics() = default;

void PrometheusGuardMetrics::request(std::string_view route, std::string_view method,
                                     std::string_view tool, bool allowed) {
  thread_local LastUsed<prometheus::Counter, 4> last;
  const std::string_view decision = allowed ? "allowed" : "denied";
  const std::array<std::string_view, 4> labels{route, method, tool, decision};
  auto* counter = last.find(cache_->id, labels);
  if (counter == nullptr) {
    counter =
        &cache_->cached(cache_->counters, cache_key('r', {route, method, tool, decision}),
                        [&]() -> prometheus::Counter& {
                          return families_->requests.Add({{"route", std::string(route)},
                                                          {"method", std::string(method)},
                                                          {"tool", std::string(tool)},
                                                          {"decision", std::string(decision)}});
                        });
    last.remember(cache_->id, labels, counter);
  }
  counter->Increment();
}

void PrometheusGuardMetrics::denial(std::string_view route, std::string_view reason) {
  families_->denials.Add({{"route", std::string(route)}, {"reason", std::string(reason)}})
      .Increment();
}

void PrometheusGuardMetrics::upstream_error(std::string_view route, std::string_view kind) {
  families_->upstream_errors.Add({{"route", std::string(route)}, {"kind", std::string(kind)}})
      .Increment();
}

void PrometheusGuardMetrics::request_duration(std::string_view route, std::string_view method,
                                              double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  thread_local LastUsed<prometheus::Histogram, 2> last;
  const std::array<std::string_view, 2> labels{route, method};
  auto* histogram = last.find(cache_->id, labels);
  if (histogram == nullptr) {
    histogram = &cache_->cached(
        cache_->histograms, cache_key('d', {route, method}), [&]() -> prometheus::Histogram& {
          return families_->durations.Add(
              {{"route", std::string(route)}, {"method", std::string(method)}}, kBuckets);
        });
    last.remember(cache_->id, labels, histogram);
  }
  histogram->Observe(seconds);
}

prometheus::Gauge& PrometheusGuardMetrics::open_streams(std::string_view route) {
  // Each stream opens and closes its route's gauge: the thread's last one takes no key or lock.
  thread_local LastUsed<prometheus::Gauge, 1> last;
  const std::array<std::string_view, 1> labels{route};
  if (auto* gauge = last.find(cache_->id, labels)) return *gauge;
  auto& gauge =
      cache_->cached(cache_->gauges, cache_key('s', {route}), [&]() -> prometheus::Gauge& {
        return families_->open_streams.Add({{"route", std::string(route)}});
      });
  last.remember(cache_->id, labels, &gauge);
  return gauge;
}

void PrometheusGuardMetrics::stream_opened(std::string_view route) {
  open_streams(route).Increment();
}

void PrometheusGuardMetrics::stream_closed(std::string_view route) {
  open_streams(route).Decrement();
}

void PrometheusGuardMetrics::bytes(std::string_view route, std::uint64_t in, std::uint64_t out) {
  thread_local LastUsed<prometheus::Counter, 1> last_in;
  thread_local LastUsed<prometheus::Counter, 1> last_out;
  const std::array<std::string_view, 1> labels{route};
  for (auto [direction, count, last] : {std::tuple{std::string_view("in"), in, &last_in},
                                        std::tuple{std::string_view("out"), out, &last_out}}) {
    if (count == 0) continue;
    auto* counter = last->find(cache_->id, labels);
    if (counter == nullptr) {
      counter = &cache_->cached(
          cache_->counters, cache_key('b', {route, direction}), [&]() -> prometheus::Counter& {
            return families_->bytes.Add(
                {{"route", std::string(route)}, {"direction", std::string(direction)}});
          });
      last->remember(cache_->id, labels, counter);
    }
    counter->Increment(static_cast<double>(count));
  }
}

void PrometheusGuardMetrics::config_reload(bool ok) {
  families_->reloads.Add({{"result", ok ? "ok" : "error"}}).Increment();
}

void PrometheusGuardMetrics::server_request_unanswered(std::string_view route,
                                                       std::string_view reason) {
  families_->server_requests_unanswered
      .Add({{"route", std::string(route)}, {"reason", std::string(reason)}})
      .Increment();
}

void PrometheusGuardMetrics::malformed_request(std::string_view route) {
  families_->malformed_requests.Add({{"route", std::string(route)}}).Increment();
}

}  // namespace perimeter::mcpguard
