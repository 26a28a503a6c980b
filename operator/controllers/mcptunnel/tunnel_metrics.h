#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <string>

namespace perimeter::mcptunnel {

// What the McpTunnel controller did with the hosted tunnels (the API calls themselves are in
// perimeter_agentapi_requests_total{operation="tunnels.*"}).
class TunnelMetrics {
 public:
  virtual ~TunnelMetrics() = default;
  // kind: tunnel_created, tunnel_adopted, tunnel_archived, token_rotated, ca_registered,
  // ca_archived, certificate_issued, ...
  virtual void on_action(const std::string& kind) = 0;
  // A reconcile step failed (step: tunnel, token, certificates, gateway, ...).
  virtual void on_failure(const std::string& step) = 0;
};

class PrometheusTunnelMetrics final : public TunnelMetrics {
 public:
  explicit PrometheusTunnelMetrics(prometheus::Registry& registry)
      : actions_(prometheus::BuildCounter()
                     .Name("perimeter_mcptunnel_actions_total")
                     .Help("What the McpTunnel controller did: tunnels created or adopted, tokens "
                           "rotated, CAs registered or archived, certificates issued")
                     .Register(registry)),
        failures_(prometheus::BuildCounter()
                      .Name("perimeter_mcptunnel_failures_total")
                      .Help("McpTunnel reconcile steps that failed, by step")
                      .Register(registry)) {}
  void on_action(const std::string& kind) override {
    actions_.Add({{"action", kind}}).Increment();
  }
  void on_failure(const std::string& step) override {
    failures_.Add({{"step", step}}).Increment();
  }

 private:
  prometheus::Family<prometheus::Counter>& actions_;
  prometheus::Family<prometheus::Counter>& failures_;
};

}  // namespace perimeter::mcptunnel
