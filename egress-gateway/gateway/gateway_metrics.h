#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace perimeter::egressgateway {

// The gateway's metrics (docs/egress-gateway.md, "Metrics"). An interface so tests can count
// without Prometheus. `environment` is a configured environment's name or "(unknown)", and
// `reason` one of a fixed set, so no client can grow the label sets.
class GatewayMetrics {
 public:
  virtual ~GatewayMetrics() = default;
  virtual void connection(std::string_view environment, bool allowed, std::string_view reason) = 0;
  virtual void bytes(std::uint64_t up, std::uint64_t down) = 0;
  virtual void tunnel_opened() = 0;
  virtual void tunnel_closed() = 0;
  virtual void connect_latency(double seconds) = 0;
  virtual void config_reload(bool ok) = 0;
  virtual void max_connections_refused() = 0;
};

class PrometheusGatewayMetrics final : public GatewayMetrics {
 public:
  explicit PrometheusGatewayMetrics(prometheus::Registry& registry);
  ~PrometheusGatewayMetrics() override;

  void connection(std::string_view environment, bool allowed, std::string_view reason) override;
  void bytes(std::uint64_t up, std::uint64_t down) override;
  void tunnel_opened() override;
  void tunnel_closed() override;
  void connect_latency(double seconds) override;
  void config_reload(bool ok) override;
  void max_connections_refused() override;

 private:
  struct Families;
  std::unique_ptr<Families> families_;  // the metrics are owned by the registry
};

}  // namespace perimeter::egressgateway
