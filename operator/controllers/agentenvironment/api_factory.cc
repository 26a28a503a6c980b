#include "controllers/agentenvironment/api_factory.h"

#include "agentapi/beast_transport.h"

namespace perimeter::agentenvironment {

PrometheusApiMetrics::PrometheusApiMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("perimeter_agentapi_requests_total")
                    .Help("Anthropic API calls (Managed Agents, Tunnels, token exchange) by "
                          "operation and HTTP code (0: no answer)")
                    .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("perimeter_agentapi_request_duration_seconds")
                    .Help("Anthropic API call latency, long-polls included")
                    .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("perimeter_agentapi_retries_total")
                   .Help("Anthropic API calls retried after backoff")
                   .Register(registry)),
      protocol_errors_(prometheus::BuildCounter()
                           .Name("perimeter_agentapi_protocol_errors_total")
                           .Help("API answers with a 2xx status whose body was not what the API "
                                 "documents, by operation")
                           .Register(registry)) {}

void PrometheusApiMetrics::on_response(std::string_view operation, int status, double seconds) {
  const std::string op(operation);
  requests_.Add({{"operation", op}, {"code", std::to_string(status)}}).Increment();
  duration_
      .Add({{"operation", op}},
           prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                   5, 10, 30})
      .Observe(seconds);
}

void PrometheusApiMetrics::on_retry(std::string_view operation, int status,
                                    std::chrono::milliseconds) {
  retries_.Add({{"operation", std::string(operation)}, {"code", std::to_string(status)}})
      .Increment();
}

void PrometheusApiMetrics::on_protocol_error(std::string_view operation) {
  protocol_errors_.Add({{"operation", std::string(operation)}}).Increment();
}

AgentApiClientFactory::AgentApiClientFactory(agentapi::ApiMetrics& metrics, Logger logger)
    : metrics_(metrics),
      logger_(std::move(logger)),
      system_trust_(std::make_shared<agentapi::BeastTransport>()) {}

std::unique_ptr<agentapi::AgentApi> AgentApiClientFactory::make(const std::string& base_url,
                                                                const std::string& environment_id,
                                                                const std::string& credential,
                                                                const std::string& extra_ca_pem) {
  // Environments that trust the same CAs share a transport, its TLS context and connections.
  std::shared_ptr<agentapi::HttpTransport> transport = system_trust_;
  if (!extra_ca_pem.empty()) {
    std::lock_guard lock(mutex_);
    for (auto it = with_extra_cas_.begin(); it != with_extra_cas_.end();) {
      it = it->second.expired() ? with_extra_cas_.erase(it) : std::next(it);
    }
    auto& shared = with_extra_cas_[extra_ca_pem];
    transport = shared.lock();
    if (!transport) {
      agentapi::BeastTransportOptions options;
      options.extra_ca_pem = extra_ca_pem;
      transport = std::make_shared<agentapi::BeastTransport>(std::move(options));
      shared = transport;
    }
  }
  agentapi::ClientConfig config;
  config.base_url = base_url;
  config.environment_id = environment_id;
  config.credential = credential;
  return std::make_unique<agentapi::AgentApiClient>(
      std::move(config), std::make_unique<agentapi::SharedHttpTransport>(std::move(transport)),
      SystemRandom::instance(), sleeper_, &metrics_, logger_);
}

}  // namespace perimeter::agentenvironment
