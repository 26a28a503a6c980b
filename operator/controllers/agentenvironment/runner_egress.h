#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "controllers/agentenvironment/agent_environment.h"

namespace perimeter::agentenvironment {

// How runner pods reach the network (docs/egress.md). Chosen once per operator
// (--runner-egress), because it follows from what the cluster runs, not from one environment.
enum class EgressMode {
  // NetworkPolicy only: the API's port to every public address (a hostname cannot be written in
  // a NetworkPolicy), never to private ranges or link-local, plus spec.egress.allowedCIDRs.
  kPublicAddresses,
  // NetworkPolicy to the egress gateway, the cluster's DNS and allowedCIDRs only; names (the API
  // and spec.egress.allowedHosts) are reached by HTTP CONNECT through the gateway, which checks
  // each against the environment's list and the TLS SNI against the CONNECT host.
  kGateway,
  // A CiliumNetworkPolicy with toFQDNs for the API and allowedHosts, DNS through the cluster's
  // DNS (Cilium's DNS proxy learns the names' addresses there), and allowedCIDRs.
  kCiliumFqdn,
};

// "public-addresses", "gateway", "cilium"; nullopt for anything else.
std::optional<EgressMode> parse_egress_mode(std::string_view text);
// The value status.egress.mode shows: "PublicAddresses", "Gateway", "CiliumFQDN".
std::string egress_mode_name(EgressMode mode);

// Pods picked by namespace and labels, as a NetworkPolicy peer selects them.
struct PodSelection {
  std::string namespace_;
  std::map<std::string, std::string> labels;
};

// The operator-wide half of the runner pods' egress: the mode and what it needs.
struct RunnerEgress {
  EgressMode mode = EgressMode::kPublicAddresses;
  // Gateway mode: the gateway's Service name and port (what HTTPS_PROXY names), its pods (what
  // the NetworkPolicy allows), and the HMAC key its per-session credentials are signed with.
  std::string gateway_host;
  int gateway_port = 3128;
  PodSelection gateway_pods;
  std::string credentials_key;
  // Gateway and Cilium modes: the only place DNS queries may go. kube-dns's conventional labels
  // (kubeadm, kind, GKE, EKS and AKS CoreDNS carry them).
  PodSelection cluster_dns{"kube-system", {{"k8s-app", "kube-dns"}}};
  std::string cluster_domain = "cluster.local";
};

// A session's gateway credential: user "<namespace>~<name>~<session id>" (none of the three can
// hold '~'), password the lowercase hex HMAC-SHA256 of the user under the gateway's key. The
// gateway recomputes it, so one session cannot speak for another or for another environment.
struct ProxyCredentials {
  std::string user;
  std::string password;
};
ProxyCredentials egress_proxy_credentials(std::string_view key, const AgentEnvironment& env,
                                          std::string_view session_id);

// The session's HTTPS_PROXY value ("http://user:password@host:port"); empty unless the mode is
// kGateway.
std::string egress_proxy_url(const RunnerEgress& egress, const AgentEnvironment& env,
                             std::string_view session_id);

// NO_PROXY for a runner pod in gateway mode: loopback, the cluster's own names, an API given
// as an IP address (reached directly), and the allowed CIDRs (reached directly).
std::string egress_no_proxy(const RunnerEgress& egress, const AgentEnvironment& env);

// The proxy variables the operator sets in gateway mode; spec.runner.env cannot override them.
bool is_proxy_variable(std::string_view name);

// The environment's CiliumNetworkPolicy for its runner pods (kCiliumFqdn), same name as the
// NetworkPolicy.
nlohmann::json build_cilium_network_policy(const AgentEnvironment& env, const RunnerEgress& egress);

}  // namespace perimeter::agentenvironment
