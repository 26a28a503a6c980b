#include "controllers/agentenvironment/runner_egress.h"

#include <map>
#include <set>
#include <vector>

#include "controllers/agentenvironment/key_release.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/cidr.h"
#include "pki/hmac.h"

namespace perimeter::agentenvironment {
namespace {

constexpr std::string_view kProxyVariables[] = {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                                "http_proxy",  "ALL_PROXY",   "all_proxy",
                                                "NO_PROXY",    "no_proxy"};

bool is_ip_literal(const std::string& host) {
  return parse_ip_address(host).has_value();
}

}  // namespace

std::optional<EgressMode> parse_egress_mode(std::string_view text) {
  if (text == "public-addresses") return EgressMode::kPublicAddresses;
  if (text == "gateway") return EgressMode::kGateway;
  if (text == "cilium") return EgressMode::kCiliumFqdn;
  return std::nullopt;
}

std::string egress_mode_name(EgressMode mode) {
  switch (mode) {
    case EgressMode::kPublicAddresses:
      return "PublicAddresses";
    case EgressMode::kGateway:
      return "Gateway";
    case EgressMode::kCiliumFqdn:
      return "CiliumFQDN";
  }
  return "Unknown";
}

ProxyCredentials egress_proxy_credentials(std::string_view key, const AgentEnvironment& env,
                                          std::string_view session_id) {
  ProxyCredentials credentials;
  credentials.user = env.namespace_ + "~" + env.name + "~" + std::string(session_id);
  credentials.password = pki::hmac_sha256_hex(key, credentials.user);
  return credentials;
}

std::string egress_proxy_url(const RunnerEgress& egress, const AgentEnvironment& env,
                             std::string_view session_id) {
  if (egress.mode != EgressMode::kGateway) return "";
  // User and password need no percent-encoding: names, session ids and hex hold no reserved
  // character of a URL's userinfo.
  const auto credentials = egress_proxy_credentials(egress.credentials_key, env, session_id);
  return "http://" + credentials.user + ":" + credentials.password + "@" + egress.gateway_host +
         ":" + std::to_string(egress.gateway_port);
}

std::string egress_no_proxy(const RunnerEgress& egress, const AgentEnvironment& env) {
  std::vector<std::string> entries = {"localhost", "127.0.0.1", "::1", ".svc",
                                      "." + egress.cluster_domain};
  std::string why;
  if (const auto api = parse_api_origin(env.api_base_url, &why); api && is_ip_literal(api->host))
    entries.push_back(api->host);
  for (const auto& cidr : env.egress_allowed_cidrs) entries.push_back(cidr);
  std::string joined;
  for (const auto& entry : entries) joined += (joined.empty() ? "" : ",") + entry;
  return joined;
}

bool is_proxy_variable(std::string_view name) {
  for (const auto variable : kProxyVariables)
    if (name == variable) return true;
  return false;
}

nlohmann::json build_cilium_network_policy(const AgentEnvironment& env,
                                           const RunnerEgress& egress) {
  std::string why;
  const auto api = parse_api_origin(env.api_base_url, &why);
  if (!api) throw SpecError("spec.apiBaseUrl '" + env.api_base_url + "' is not usable: " + why);

  nlohmann::json rules = nlohmann::json::array();
  // DNS through the cluster's DNS only. Cilium's DNS proxy must see the answers for toFQDNs to
  // learn the names' addresses; "*" because a resolver's search-list queries come first.
  nlohmann::json dns_peer = {{"k8s:io.kubernetes.pod.namespace", egress.cluster_dns.namespace_}};
  for (const auto& [key, value] : egress.cluster_dns.labels) dns_peer["k8s:" + key] = value;
  rules.push_back({{"toEndpoints", {{{"matchLabels", dns_peer}}}},
                   {"toPorts",
                    {{{"ports", {{{"port", "53"}, {"protocol", "ANY"}}}},
                      {"rules", {{"dns", {{{"matchPattern", "*"}}}}}}}}}});

  // Names grouped by port, so each rule reads as "these names on this port".
  std::map<int, std::vector<nlohmann::json>> names_by_port;
  if (is_ip_literal(api->host)) {
    rules.push_back(
        {{"toCIDR", {api->host + (api->host.find(':') == std::string::npos ? "/32" : "/128")}},
         {"toPorts", {{{"ports", {{{"port", std::to_string(api->port)}, {"protocol", "TCP"}}}}}}}});
  } else {
    names_by_port[api->port].push_back({{"matchName", api->host}});
  }
  for (const auto& allowed : env.egress_allowed_hosts) {
    const bool wildcard = allowed.host.rfind("*.", 0) == 0;
    for (const int port : allowed.ports) {
      names_by_port[port].push_back(wildcard ? nlohmann::json{{"matchPattern", allowed.host}}
                                             : nlohmann::json{{"matchName", allowed.host}});
    }
  }
  for (const auto& [port, selectors] : names_by_port) {
    rules.push_back(
        {{"toFQDNs", selectors},
         {"toPorts", {{{"ports", {{{"port", std::to_string(port)}, {"protocol", "TCP"}}}}}}}});
  }
  if (!env.egress_allowed_cidrs.empty()) {
    nlohmann::json cidrs = nlohmann::json::array();
    for (const auto& cidr : env.egress_allowed_cidrs)
      cidrs.push_back(cidr_without_link_local(cidr));
    rules.push_back({{"toCIDRSet", cidrs}});
  }

  return {{"apiVersion", "cilium.io/v2"},
          {"kind", "CiliumNetworkPolicy"},
          {"metadata", runner_policy_metadata(env)},
          {"spec",
           {{"endpointSelector", runner_pod_selector(env)},
            // No ingress rule: nothing may connect to a runner pod.
            {"enableDefaultDeny", {{"ingress", true}, {"egress", true}}},
            {"egress", rules}}}};
}

}  // namespace perimeter::agentenvironment
