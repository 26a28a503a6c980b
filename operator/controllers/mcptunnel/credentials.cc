#include "controllers/mcptunnel/credentials.h"

#include "agentapi/beast_transport.h"
#include "core/clock.h"
#include "core/random.h"
#include "tunnelsapi/tunnels_api_client.h"
#include "tunnelsapi/workload_identity.h"

namespace perimeter::mcptunnel {

std::optional<ServiceAccountRef> ServiceAccountRef::parse(const std::string& text,
                                                          std::string* error) {
  const auto slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == text.size() ||
      text.find('/', slash + 1) != std::string::npos) {
    if (error) *error = "'" + text + "' is not namespace/name";
    return std::nullopt;
  }
  return ServiceAccountRef{text.substr(0, slash), text.substr(slash + 1)};
}

tunnelsapi::Secret KubeServiceAccountTokenRequester::request(const ServiceAccountRef& account,
                                                             const std::string& audience,
                                                             std::chrono::seconds lifetime) {
  const nlohmann::json request = {
      {"apiVersion", "authentication.k8s.io/v1"},
      {"kind", "TokenRequest"},
      {"spec", {{"audiences", {audience}}, {"expirationSeconds", lifetime.count()}}}};
  const auto answer =
      service_accounts_.create_subresource(account.ns, account.name, "token", request);
  const auto token = answer.value("status", nlohmann::json::object()).value("token", "");
  if (token.empty()) {
    throw std::runtime_error("the TokenRequest for ServiceAccount " + account.str() +
                             " came back without a token");
  }
  return tunnelsapi::Secret(token);
}

WorkloadIdentityApiFactory::WorkloadIdentityApiFactory(WorkloadIdentitySettings settings,
                                                       ServiceAccountTokenRequester& tokens,
                                                       agentapi::ApiMetrics& metrics,
                                                       Logger logger)
    : settings_(std::move(settings)),
      tokens_(tokens),
      metrics_(metrics),
      logger_(std::move(logger)),
      transport_(std::make_shared<agentapi::BeastTransport>()) {}

tunnelsapi::AccessTokenSource& WorkloadIdentityApiFactory::source_for(const McpTunnel& tunnel) {
  if (!settings_.identity) {
    throw CredentialsError(
        "workload identity is not configured on this operator: it needs its own ServiceAccount "
        "(--tunnels-service-account, set by the Helm chart) to exchange for a Tunnels API token");
  }
  const auto& w = tunnel.workload_identity;
  const std::string key = tunnel.api_base_url + "|" + w.federation_rule_id + "|" +
                          w.organization_id + "|" + w.service_account_id + "|" + w.workspace_id +
                          "|" + w.audience;
  std::lock_guard lock(mutex_);
  auto& source = sources_[key];
  if (!source) {
    tunnelsapi::WorkloadIdentityConfig config;
    config.base_url = tunnel.api_base_url;
    config.federation_rule_id = w.federation_rule_id;
    config.organization_id = w.organization_id;
    config.service_account_id = w.service_account_id;
    config.workspace_id = w.workspace_id;
    config.user_agent = settings_.user_agent;
    config.allow_plain_http = settings_.allow_plain_http;
    const ServiceAccountRef identity = *settings_.identity;
    const std::string audience = w.audience;
    const auto lifetime = settings_.assertion_lifetime;
    config.assertion_source = [this, identity, audience, lifetime] {
      return tokens_.request(identity, audience, lifetime);
    };
    source = std::make_unique<tunnelsapi::WorkloadIdentityTokenSource>(
        std::move(config), std::make_unique<agentapi::SharedHttpTransport>(transport_),
        SystemClock::instance(), SystemRandom::instance(), sleeper_, &metrics_,
        logger_.child("wif"));
  }
  return *source;
}

std::unique_ptr<tunnelsapi::TunnelsApi> WorkloadIdentityApiFactory::make(const McpTunnel& tunnel) {
  auto& source = source_for(tunnel);
  tunnelsapi::TunnelsClientConfig config;
  config.base_url = tunnel.api_base_url;
  config.workspace_id = tunnel.workload_identity.workspace_id;
  config.user_agent = settings_.user_agent;
  return std::make_unique<tunnelsapi::TunnelsApiClient>(
      std::move(config), source, std::make_unique<agentapi::SharedHttpTransport>(transport_),
      SystemRandom::instance(), sleeper_, &metrics_, logger_.child("tunnelsapi"));
}

}  // namespace perimeter::mcptunnel
