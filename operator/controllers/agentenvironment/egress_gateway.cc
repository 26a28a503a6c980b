#include "controllers/agentenvironment/egress_gateway.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <stdexcept>

#include "controllers/agentenvironment/runner_naming.h"
#include "core/base64.h"
#include "core/cidr.h"
#include "kube/pod_security.h"
#include "runtime/api_hosts.h"

namespace perimeter::agentenvironment {
namespace {

using json = nlohmann::json;

constexpr const char* kComponent = "egress-gateway";
constexpr const char* kConfigDir = "/etc/perimeter-egress/config";
constexpr const char* kKeyDir = "/var/run/perimeter-egress/key";
constexpr int kNonRootId = 65532;
// Open tunnels get this long to end before the gateway cuts them (--drain-seconds) on a rollout;
// the grace period is a little longer so the kubelet never kills it mid-drain.
constexpr int kDrainSeconds = 25;
constexpr int kTerminationGraceSeconds = 30;

std::map<std::string, std::string> selector_labels(const EgressGatewaySettings& gateway) {
  return {{"app.kubernetes.io/name", gateway.name}, {std::string(kLabelComponent), kComponent}};
}

json labels(const EgressGatewaySettings& gateway) {
  json result = selector_labels(gateway);
  result[std::string(kLabelManagedBy)] = "perimeter";
  return result;
}

json metadata(const EgressGatewaySettings& gateway, const std::string& name) {
  return {{"name", name}, {"namespace", gateway.namespace_}, {"labels", labels(gateway)}};
}

}  // namespace

PodSelection EgressGatewaySettings::pods() const {
  return {namespace_, selector_labels(*this)};
}

void point_runners_at(const EgressGatewaySettings& gateway, RunnerEgress& egress) {
  egress.gateway_host = gateway.service_host();
  egress.gateway_port = gateway.port;
  egress.gateway_pods = gateway.pods();
}

std::string render_egress_gateway_config(const EgressGatewaySettings& gateway,
                                         std::vector<AgentEnvironment> environments) {
  std::sort(environments.begin(), environments.end(), [](const auto& a, const auto& b) {
    return std::tie(a.namespace_, a.name) < std::tie(b.namespace_, b.name);
  });
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << YAML::DoubleQuoted
      << "0.0.0.0:" + std::to_string(gateway.port);
  out << YAML::Key << "metrics_listen" << YAML::Value << YAML::DoubleQuoted
      << "0.0.0.0:" + std::to_string(gateway.metrics_port);
  out << YAML::Key << "credentials_key_file" << YAML::Value
      << std::string(kKeyDir) + "/" + kEgressGatewayKeyField;
  out << YAML::Key << "environments" << YAML::Value << YAML::BeginSeq;
  for (const auto& env : environments) {
    out << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << env.namespace_ + "/" + env.name;
    out << YAML::Key << "allow" << YAML::Value << YAML::BeginSeq;
    const auto api = runtime::parse_api_origin(env.api_base_url);
    // An API given as an address is reached directly (NO_PROXY and the NetworkPolicy say so);
    // the gateway takes names only.
    if (api && !parse_ip_address(api->host)) {
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "host" << YAML::Value << api->host
          << YAML::Key << "ports" << YAML::Value << YAML::Flow << YAML::BeginSeq << api->port
          << YAML::EndSeq << YAML::EndMap;
    }
    for (const auto& allowed : env.egress_allowed_hosts) {
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "host" << YAML::Value
          << YAML::DoubleQuoted << allowed.host << YAML::Key << "ports" << YAML::Value << YAML::Flow
          << YAML::BeginSeq;
      for (const int port : allowed.ports) out << port;
      out << YAML::EndSeq << YAML::EndMap;
    }
    out << YAML::EndSeq;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::EndMap;
  if (!out.good()) throw std::logic_error("egress gateway config: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

json build_egress_gateway_config_map(const EgressGatewaySettings& gateway,
                                     const std::string& config) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", metadata(gateway, gateway.name)},
          {"data", {{kEgressGatewayConfigField, config}}}};
}

json build_egress_gateway_key_secret(const EgressGatewaySettings& gateway, const std::string& key) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", metadata(gateway, gateway.key_secret_name())},
          {"type", "Opaque"},
          {"data", {{kEgressGatewayKeyField, base64_encode(key)}}}};
}

json build_egress_gateway_deployment(const EgressGatewaySettings& gateway) {
  if (gateway.image.empty()) throw std::invalid_argument("the egress gateway needs an image");
  const json probe_target = {{"path", "/healthz"}, {"port", "metrics"}};
  const json container = {
      {"name", "gateway"},
      {"image", gateway.image},
      {"imagePullPolicy", gateway.image_pull_policy},
      {"args", json::array({"--config", std::string(kConfigDir) + "/" + kEgressGatewayConfigField,
                            "--drain-seconds", std::to_string(kDrainSeconds)})},
      {"ports",
       json::array(
           {{{"name", "proxy"}, {"containerPort", gateway.port}, {"protocol", "TCP"}},
            {{"name", "metrics"}, {"containerPort", gateway.metrics_port}, {"protocol", "TCP"}}})},
      {"readinessProbe", {{"httpGet", probe_target}, {"periodSeconds", 5}}},
      {"livenessProbe",
       {{"httpGet", probe_target},
        {"initialDelaySeconds", 10},
        {"periodSeconds", 10},
        {"timeoutSeconds", 5}}},
      {"resources",
       {{"requests", {{"cpu", "50m"}, {"memory", "32Mi"}}}, {"limits", {{"memory", "256Mi"}}}}},
      {"securityContext", kube::restricted_container_security_context()},
      {"volumeMounts",
       json::array({{{"name", "config"}, {"mountPath", kConfigDir}, {"readOnly", true}},
                    {{"name", "key"}, {"mountPath", kKeyDir}, {"readOnly", true}}})},
      {"terminationMessagePolicy", "FallbackToLogsOnError"},
  };
  const json selector = selector_labels(gateway);
  json pod_spec = {
      {"automountServiceAccountToken", false},
      {"enableServiceLinks", false},
      {"terminationGracePeriodSeconds", kTerminationGraceSeconds},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", kNonRootId},
        {"runAsGroup", kNonRootId},
        // The key file is mode 0440: readable through the group the kubelet gives it.
        {"fsGroup", kNonRootId},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
      {"containers", json::array({container})},
      {"volumes",
       json::array(
           {{{"name", "config"}, {"configMap", {{"name", gateway.name}}}},
            {{"name", "key"},
             {"secret", {{"secretName", gateway.key_secret_name()}, {"defaultMode", 0440}}}}})},
  };
  if (gateway.replicas > 1) {
    // ScheduleAnyway: a one-node cluster still runs every replica.
    pod_spec["topologySpreadConstraints"] =
        json::array({{{"maxSkew", 1},
                      {"topologyKey", "kubernetes.io/hostname"},
                      {"whenUnsatisfiable", "ScheduleAnyway"},
                      {"labelSelector", {{"matchLabels", selector}}}}});
  }
  return {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", metadata(gateway, gateway.name)},
      {"spec",
       {{"replicas", gateway.replicas},
        {"selector", {{"matchLabels", selector}}},
        // Never fewer ready gateways than asked for during a rollout: sessions keep egress.
        {"strategy",
         {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxUnavailable", 0}, {"maxSurge", 1}}}}},
        {"template", {{"metadata", {{"labels", labels(gateway)}}}, {"spec", pod_spec}}}}}};
}

json build_egress_gateway_service(const EgressGatewaySettings& gateway) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", metadata(gateway, gateway.name)},
          {"spec",
           {{"type", "ClusterIP"},
            {"selector", selector_labels(gateway)},
            {"ports", json::array({{{"name", "proxy"},
                                    {"port", gateway.port},
                                    {"targetPort", "proxy"},
                                    {"protocol", "TCP"}},
                                   {{"name", "metrics"},
                                    {"port", gateway.metrics_port},
                                    {"targetPort", "metrics"},
                                    {"protocol", "TCP"}}})}}}};
}

json build_egress_gateway_network_policy(const EgressGatewaySettings& gateway) {
  const json runner_pods = {{"namespaceSelector", json::object()},
                            {"podSelector",
                             {{"matchLabels",
                               {{std::string(kLabelManagedBy), "perimeter"},
                                {std::string(kLabelComponent), "runner"}}}}}};
  const json dns_peer = {
      {"namespaceSelector",
       {{"matchLabels", {{"kubernetes.io/metadata.name", gateway.cluster_dns.namespace_}}}}},
      {"podSelector", {{"matchLabels", gateway.cluster_dns.labels}}}};
  const json dns_ports =
      json::array({{{"protocol", "UDP"}, {"port", 53}}, {{"protocol", "TCP"}, {"port", 53}}});
  return {
      {"apiVersion", "networking.k8s.io/v1"},
      {"kind", "NetworkPolicy"},
      {"metadata", metadata(gateway, gateway.name)},
      {"spec",
       {{"podSelector", {{"matchLabels", selector_labels(gateway)}}},
        {"policyTypes", json::array({"Ingress", "Egress"})},
        {"ingress",
         json::array(
             {{{"from", json::array({runner_pods})},
               {"ports", json::array({{{"protocol", "TCP"}, {"port", gateway.port}}})}},
              {{"ports", json::array({{{"protocol", "TCP"}, {"port", gateway.metrics_port}}})}}})},
        {"egress",
         json::array(
             {{{"to", json::array({dns_peer})}, {"ports", dns_ports}},
              {{"to", json::array(
                          {{{"ipBlock",
                             {{"cidr", "0.0.0.0/0"}, {"except", json::array({"169.254.0.0/16"})}}}},
                           {{"ipBlock",
                             {{"cidr", "::/0"}, {"except", json::array({"fe80::/10"})}}}}})}}})}}}};
}

}  // namespace perimeter::agentenvironment
