#include "gateway/gateway_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

namespace perimeter::egressgateway {

struct PrometheusGatewayMetrics::Families {
  prometheus::Family<prometheus::Counter>& connections;
  prometheus::Counter& bytes_up;
  prometheus::Counter& bytes_down;
  prometheus::Gauge& open_tunnels;
  prometheus::Histogram& connect_seconds;
  prometheus::Counter& reload_ok;
  prometheus::Counter& reload_error;
  prometheus::Counter& refusals;
};

namespace {

prometheus::Family<prometheus::Counter>& bytes_family(prometheus::Registry& registry) {
  return prometheus::BuildCounter()
      .Name("perimeter_egress_bytes_total")
      .Help("Bytes relayed through tunnels; up: client to upstream, down: upstream to client")
      .Register(registry);
}

prometheus::Family<prometheus::Counter>& reloads_family(prometheus::Registry& registry) {
  return prometheus::BuildCounter()
      .Name("perimeter_egress_config_reloads_total")
      .Help("Config reloads by result (ok, error); a refused reload keeps the old config")
      .Register(registry);
}

}  // namespace

PrometheusGatewayMetrics::PrometheusGatewayMetrics(prometheus::Registry& registry) {
  auto& bytes = bytes_family(registry);
  auto& reloads = reloads_family(registry);
  families_ = std::make_unique<Families>(Families{
      prometheus::BuildCounter()
          .Name("perimeter_egress_connections_total")
          .Help("CONNECT requests by environment, decision (allowed, denied) and reason")
          .Register(registry),
      bytes.Add({{"direction", "up"}}),
      bytes.Add({{"direction", "down"}}),
      prometheus::BuildGauge()
          .Name("perimeter_egress_open_tunnels")
          .Help("Tunnels open now (after the 200 answer)")
          .Register(registry)
          .Add({}),
      prometheus::BuildHistogram()
          .Name("perimeter_egress_connect_seconds")
          .Help("Time from the resolved name to the upstream TCP connection")
          .Register(registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                           0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      reloads.Add({{"result", "ok"}}),
      reloads.Add({{"result", "error"}}),
      prometheus::BuildCounter()
          .Name("perimeter_egress_max_connections_refusals_total")
          .Help("Connections refused because max_connections were open")
          .Register(registry)
          .Add({}),
  });
}

PrometheusGatewayMetrics::~PrometheusGatewayMetrics() = default;

void PrometheusGatewayMetrics::connection(std::string_view environment, bool allowed,
                                          std::string_view reason) {
  families_->connections
      .Add({{"environment", std::string(environment)},
            {"decision", allowed ? "allowed" : "denied"},
            {"reason", std::string(reason)}})
      .Increment();
}

void PrometheusGatewayMetrics::bytes(std::uint64_t up, std::uint64_t down) {
  families_->bytes_up.Increment(static_cast<double>(up));
  families_->bytes_down.Increment(static_cast<double>(down));
}

void PrometheusGatewayMetrics::tunnel_opened() {
  families_->open_tunnels.Increment();
}

void PrometheusGatewayMetrics::tunnel_closed() {
  families_->open_tunnels.Decrement();
}

void PrometheusGatewayMetrics::connect_latency(double seconds) {
  families_->connect_seconds.Observe(seconds);
}

void PrometheusGatewayMetrics::config_reload(bool ok) {
  (ok ? families_->reload_ok : families_->reload_error).Increment();
}

void PrometheusGatewayMetrics::max_connections_refused() {
  families_->refusals.Increment();
}

}  // namespace perimeter::egressgateway
