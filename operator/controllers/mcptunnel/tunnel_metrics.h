#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

namespace perimeter::mcptunnel {

// What an McpTunnel's status says that alerts need, read from the status the reconciler writes
// (so the gauges and `kubectl get mcptunnel` never disagree).
struct TunnelStatusFigures {
  std::optional<std::int64_t> connected_replicas;  // status.connectedReplicas
  std::map<std::string, bool> conditions;          // type: whether its status is "True"
  // Unix seconds: status.certificate.notAfter, .renewAt and .caNotAfter (Manual mode has no
  // renewAt and no CA: the user renews).
  std::optional<double> server_not_after, server_renew_at, ca_not_after;
};
TunnelStatusFigures tunnel_status_figures(const nlohmann::json& status);

// What the McpTunnel controller did with the hosted tunnels (the API calls themselves are in
// perimeter_agentapi_requests_total{operation="tunnels.*"}), and what each McpTunnel's status
// says. `tunnel` is "namespace/name" of the McpTunnel.
class TunnelMetrics {
 public:
  virtual ~TunnelMetrics() = default;
  // kind: tunnel_created, tunnel_adopted, tunnel_archived, token_rotated, ca_registered,
  // ca_archived, certificate_issued, ...
  virtual void on_action(const std::string& tunnel, const std::string& kind) = 0;
  // A reconcile step failed (step: tunnel, token, certificates, gateway, ...).
  virtual void on_failure(const std::string& tunnel, const std::string& step) = 0;
  // The status a pass wrote (or found already written).
  virtual void on_status(const std::string& tunnel, const TunnelStatusFigures& figures) = 0;
  // The McpTunnel is gone: its gauges go with it.
  virtual void on_deleted(const std::string& tunnel) = 0;
};

class PrometheusTunnelMetrics final : public TunnelMetrics {
 public:
  explicit PrometheusTunnelMetrics(prometheus::Registry& registry);
  void on_action(const std::string& tunnel, const std::string& kind) override;
  void on_failure(const std::string& tunnel, const std::string& step) override;
  void on_status(const std::string& tunnel, const TunnelStatusFigures& figures) override;
  void on_deleted(const std::string& tunnel) override;

 private:
  void set_or_remove(prometheus::Family<prometheus::Gauge>& family,
                     const prometheus::Labels& labels, const std::optional<double>& value);

  prometheus::Family<prometheus::Counter>& actions_;              // {mcptunnel,action}
  prometheus::Family<prometheus::Counter>& failures_;             // {mcptunnel,step}
  prometheus::Family<prometheus::Gauge>& connected_replicas_;     // {mcptunnel}
  prometheus::Family<prometheus::Gauge>& condition_;              // {mcptunnel,condition}
  prometheus::Family<prometheus::Gauge>& certificate_not_after_;  // {mcptunnel,certificate}
  prometheus::Family<prometheus::Gauge>& certificate_renew_at_;   // {mcptunnel,certificate}
  std::mutex mutex_;
  // The condition types each tunnel's gauges were set for, so a type that leaves the status,
  // or the tunnel itself, takes its series away.
  std::map<std::string, std::set<std::string>> conditions_;  // guarded by mutex_
};

}  // namespace perimeter::mcptunnel
