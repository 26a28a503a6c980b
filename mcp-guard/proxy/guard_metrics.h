#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

namespace prometheus {
class Gauge;
class Registry;
}  // namespace prometheus

namespace perimeter::mcpguard {

// The guard's metrics (docs/mcp-guard.md, "Metrics"). An interface so the proxy's tests can count
// without Prometheus. Label values are bounded by the caller: `method` by metric_method(), `tool`
// by the tools the route's server listed.
class GuardMetrics {
 public:
  virtual ~GuardMetrics() = default;
  virtual void request(std::string_view route, std::string_view method, std::string_view tool,
                       bool allowed) = 0;
  virtual void denial(std::string_view route, std::string_view reason) = 0;
  // kind: connect, not_allowed, reset, timeout, bad_reply
  virtual void upstream_error(std::string_view route, std::string_view kind) = 0;
  virtual void request_duration(std::string_view route, std::string_view method,
                                double seconds) = 0;
  virtual void stream_opened(std::string_view route) = 0;
  virtual void stream_closed(std::string_view route) = 0;
  virtual void bytes(std::string_view route, std::uint64_t in, std::uint64_t out) = 0;
  virtual void config_reload(bool ok) = 0;
  // A request of the server's whose answer was never seen; reason: evicted, expired, shutdown.
  virtual void server_request_unanswered(std::string_view route, std::string_view reason) = 0;
  // A request that is not HTTP the guard can parse (answered 400, no audit line).
  virtual void malformed_request(std::string_view route) = 0;
};

// A method name as a label: the MCP methods as they are, anything else "(other)", so a client
// cannot grow the label set without bound.
std::string_view metric_method(std::string_view method);

class PrometheusGuardMetrics final : public GuardMetrics {
 public:
  explicit PrometheusGuardMetrics(prometheus::Registry& registry);
  ~PrometheusGuardMetrics() override;

  void request(std::string_view route, std::string_view method, std::string_view tool,
               bool allowed) override;
  void denial(std::string_view route, std::string_view reason) override;
  void upstream_error(std::string_view route, std::string_view kind) override;
  void request_duration(std::string_view route, std::string_view method, double seconds) override;
  void stream_opened(std::string_view route) override;
  void stream_closed(std::string_view route) override;
  void bytes(std::string_view route, std::uint64_t in, std::uint64_t out) override;
  void config_reload(bool ok) override;
  void server_request_unanswered(std::string_view route, std::string_view reason) override;
  void malformed_request(std::string_view route) override;

 private:
  struct Families;
  prometheus::Gauge& open_streams(std::string_view route);
  std::unique_ptr<Families> families_;  // the metrics themselves are owned by the registry
  struct Cache;
  std::unique_ptr<Cache> cache_;
};

}  // namespace perimeter::mcpguard
