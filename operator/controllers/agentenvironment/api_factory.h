#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <mutex>

#include "agentapi/agent_api_client.h"
#include "controllers/agentenvironment/session_ports.h"

namespace perimeter::agentenvironment {

// Counts every Managed Agents API call the operator makes:
// perimeter_agentapi_requests_total{operation,code}, ..._request_duration_seconds{operation},
// perimeter_agentapi_retries_total{operation,code}, perimeter_agentapi_protocol_errors_total{operation}.
// The Tunnels API calls (operations tunnels.*, oauth.token) are counted here too.
class PrometheusApiMetrics final : public agentapi::ApiMetrics {
 public:
  explicit PrometheusApiMetrics(prometheus::Registry& registry);
  void on_response(std::string_view operation, int status, double seconds) override;
  void on_retry(std::string_view operation, int status, std::chrono::milliseconds delay) override;
  void on_protocol_error(std::string_view operation) override;

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& protocol_errors_;
};

// Real clients, with the official SDK's retries, all over one BeastTransport: its I/O runs on the
// poll threads themselves, and every environment shares its TLS context and kept-alive
// connections.
class AgentApiClientFactory final : public AgentApiFactory {
 public:
  AgentApiClientFactory(agentapi::ApiMetrics& metrics, Logger logger);
  // Throws std::runtime_error when `extra_ca_pem` holds no certificate.
  std::unique_ptr<agentapi::AgentApi> make(const std::string& base_url,
                                           const std::string& environment_id,
                                           const std::string& credential,
                                           const std::string& extra_ca_pem) override;

 private:
  agentapi::ApiMetrics& metrics_;
  Logger logger_;
  agentapi::RealSleeper sleeper_;
  std::shared_ptr<agentapi::HttpTransport> system_trust_;
  std::mutex mutex_;
  // By the CAs trusted besides the system's store: held by the clients that use them, so a bundle
  // no environment names any more goes with its last client.
  std::map<std::string, std::weak_ptr<agentapi::HttpTransport>> with_extra_cas_;
};

}  // namespace perimeter::agentenvironment
