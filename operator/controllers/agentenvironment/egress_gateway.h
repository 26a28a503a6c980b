#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/runner_egress.h"

namespace perimeter::agentenvironment {

// The egress gateway of --runner-egress=gateway (docs/egress.md): one per operator, in the
// operator's namespace, serving every AgentEnvironment. The operator renders its objects and
// keeps them as rendered; the gateway reloads its configuration and key from the mounted files.
// The image the local real node has (imported by hack/local-cluster); a cluster's own registry
// image is given with --egress-gateway-image.
inline constexpr const char* kDefaultEgressGatewayImage =
    "localhost/perimeter/perimeter-egress-gateway:0.1.0";

struct EgressGatewaySettings {
  std::string namespace_;
  // The Deployment, Service, ConfigMap and NetworkPolicy; the key Secret is name + "-key".
  std::string name = "perimeter-egress-gateway";
  std::string image = kDefaultEgressGatewayImage;
  std::string image_pull_policy = "IfNotPresent";
  int replicas = 2;
  int port = 3128;
  int metrics_port = 9090;
  // Where DNS queries of the gateway go (the same cluster DNS the runner pods use).
  PodSelection cluster_dns{"kube-system", {{"k8s-app", "kube-dns"}}};
  std::string cluster_domain = "cluster.local";

  std::string key_secret_name() const { return name + "-key"; }
  // What HTTPS_PROXY names: the Service's cluster DNS name.
  std::string service_host() const { return name + "." + namespace_ + ".svc." + cluster_domain; }
  // The gateway's pods, as the runner pods' NetworkPolicy allows them.
  PodSelection pods() const;
};

// The data key of the key Secret, and the paths the gateway reads.
inline constexpr const char* kEgressGatewayKeyField = "key";
inline constexpr const char* kEgressGatewayConfigField = "gateway.yaml";

// The part of RunnerEgress the gateway's settings decide, for runner pods and their policy.
void point_runners_at(const EgressGatewaySettings& gateway, RunnerEgress& egress);

// gateway.yaml: every environment with the host names its sessions may reach, the API's host
// (unless the API is given as an address, which runner pods reach directly) and
// spec.egress.allowedHosts. Environments in name order, so equal inputs render equal text.
std::string render_egress_gateway_config(const EgressGatewaySettings& gateway,
                                         std::vector<AgentEnvironment> environments);

nlohmann::json build_egress_gateway_config_map(const EgressGatewaySettings& gateway,
                                               const std::string& config);
nlohmann::json build_egress_gateway_key_secret(const EgressGatewaySettings& gateway,
                                               const std::string& key);
nlohmann::json build_egress_gateway_deployment(const EgressGatewaySettings& gateway);
nlohmann::json build_egress_gateway_service(const EgressGatewaySettings& gateway);
// Ingress to the proxy port from runner pods only (the metrics port from anywhere, for
// Prometheus); egress to the cluster's DNS and to any address but link-local, where cloud
// metadata lives (the gateway itself refuses loopback, link-local and the rest by address).
nlohmann::json build_egress_gateway_network_policy(const EgressGatewaySettings& gateway);

}  // namespace perimeter::agentenvironment
