#include "controllers/mcptunnel/gateway.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string_view>

#include "kube/pod_security.h"
#include "pki/hmac.h"

namespace perimeter::mcptunnel {
namespace {

using nlohmann::json;

// The "nonroot" uid of the distroless images both containers are built on; pinning it (and the
// fsGroup that makes the 0440 Secret files readable) lets restricted admission pass without
// relying on the images' USER.
constexpr int kNonRootId = 65532;
// cloudflared drains for --grace-period on SIGTERM; the kubelet must wait longer than that.
constexpr const char* kConnectorGracePeriod = "30s";
constexpr int kTerminationGracePeriodSeconds = 45;
constexpr int kSecretFileMode = 0440;

#ifdef PERIMETER_PROJECT_VERSION
// The default guard image's tag follows the project's version (the chart's appVersion, the tag
// build-image.sh gives the archive): bumping one without the other fails the build.
static_assert(std::string_view(kDefaultGuardImage).ends_with(":" PERIMETER_PROJECT_VERSION),
              "kDefaultGuardImage's tag must be the project version");
#endif

constexpr const char* kConfigKey = "config.yaml";
constexpr const char* kGuardConfigKey = "guard.yaml";
constexpr const char* kProxyContainer = "mcp-proxy";
constexpr const char* kConnectorContainer = "cloudflared";
constexpr const char* kGuardContainer = "mcp-guard";
constexpr const char* kConfigVolume = "config";
constexpr const char* kGuardConfigVolume = "guard-config";
constexpr const char* kTlsVolume = "tls";
constexpr const char* kUpstreamCaVolume = "upstream-ca";
constexpr const char* kTokenVolume = "connector-token";

json metadata(const McpTunnel& tunnel, const std::string& name) {
  return {{"name", name},
          {"namespace", tunnel.namespace_},
          {"labels", common_labels(tunnel)},
          {"ownerReferences", json::array({owner_reference(tunnel)})}};
}

json match_labels(const McpTunnel& tunnel) {
  return {{"matchLabels", gateway_selector(tunnel)}};
}

// By name, first one kept: the routes map cannot hold a name twice.
std::vector<ResolvedRoute> sorted_routes(const std::vector<ResolvedRoute>& routes) {
  std::vector<ResolvedRoute> sorted = routes;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const ResolvedRoute& a, const ResolvedRoute& b) { return a.name < b.name; });
  sorted.erase(
      std::unique(sorted.begin(), sorted.end(),
                  [](const ResolvedRoute& a, const ResolvedRoute& b) { return a.name == b.name; }),
      sorted.end());
  return sorted;
}

// A NetworkPolicy port is an int or an IANA port name; a targetPort is sent to us as text.
json policy_port(const std::string& port) {
  if (!port.empty() && port.size() <= 5 &&
      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::stoi(port);
  }
  return port;
}

json tcp_port(const json& port) {
  return {{"protocol", "TCP"}, {"port", port}};
}

// The spec's resources as given; by default small requests and a memory limit, so a leaking
// container cannot starve its node.
json resources_or(const json& configured, const char* cpu, const char* memory,
                  const char* memory_limit) {
  if (configured.is_object() && !configured.empty()) return configured;
  return {{"requests", {{"cpu", cpu}, {"memory", memory}}}, {"limits", {{"memory", memory_limit}}}};
}

// The guard's built-in redact_keys (docs/mcp-guard.md); spec.guard.audit.redactKeys adds to them,
// so a list written for one more key never drops the password.
const std::vector<std::string>& builtin_redact_keys() {
  static const std::vector<std::string> keys = {"password", "*token*", "*secret*", "authorization"};
  return keys;
}

std::string loopback_url(int port) {
  return "http://127.0.0.1:" + std::to_string(port);
}

// The guard's routes: the resolved ones, in spec order (so in port order; the guard refuses a
// reload that reorders or renames its routes, and such a change restarts the pods anyway).
std::vector<ResolvedRoute> guard_routes(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  std::vector<ResolvedRoute> routes = sorted_routes(inputs.routes);
  std::stable_sort(routes.begin(), routes.end(),
                   [&tunnel](const ResolvedRoute& a, const ResolvedRoute& b) {
                     return guard_route_port(tunnel, a.name) < guard_route_port(tunnel, b.name);
                   });
  return routes;
}

const RouteSpec& route_spec(const McpTunnel& tunnel, const std::string& name) {
  for (const auto& route : tunnel.routes) {
    if (route.name == name) return route;
  }
  throw std::logic_error("route " + name + " is not in the spec");
}

void emit_strings(YAML::Emitter& out, const std::vector<std::string>& items) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const auto& item : items) out << YAML::DoubleQuoted << item;
  out << YAML::EndSeq;
}

// The guard's config. `reloadable` false leaves out what the guard re-reads live (policies, rate
// limits, audit): what remains is what only a restart changes, for the gateway hash.
std::string guard_config(const McpTunnel& tunnel, const GatewayInputs& inputs, bool reloadable) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "metrics_listen" << YAML::Value
      << "0.0.0.0:" + std::to_string(kGuardMetricsPort);
  if (reloadable) {
    out << YAML::Key << "audit" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "level" << YAML::Value
        << (tunnel.guard.audit_level == AuditLevel::kFull ? "full" : "metadata");
    std::vector<std::string> redact = builtin_redact_keys();
    for (const auto& key : tunnel.guard.redact_keys) {
      if (std::find(redact.begin(), redact.end(), key) == redact.end()) redact.push_back(key);
    }
    out << YAML::Key << "redact_keys" << YAML::Value;
    emit_strings(out, redact);
    out << YAML::EndMap;
  }
  out << YAML::Key << "routes" << YAML::Value << YAML::BeginSeq;
  for (const auto& route : guard_routes(tunnel, inputs)) {
    const RouteSpec& spec = route_spec(tunnel, route.name);
    out << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << route.name;
    out << YAML::Key << "listen" << YAML::Value
        << "127.0.0.1:" + std::to_string(guard_route_port(tunnel, route.name));
    out << YAML::Key << "upstream" << YAML::Value << route.upstream;
    if (route.upstream.rfind("https://", 0) == 0) {
      // What spec.upstream trusts, as mcp-proxy would: the CA Secret and/or the system's CAs.
      if (!tunnel.upstream_ca_secret_name.empty()) {
        out << YAML::Key << "upstream_ca_file" << YAML::Value
            << std::string(kGuardUpstreamCaDir) + "/ca.crt";
      }
      out << YAML::Key << "upstream_system_cas" << YAML::Value << tunnel.include_system_cas;
    }
    out << YAML::Key << "allowed_cidrs" << YAML::Value;
    emit_strings(out, tunnel.allowed_cidrs);
    if (reloadable && spec.policy) {
      const RoutePolicy& policy = *spec.policy;
      if (!policy.allow.empty() || !policy.deny.empty()) {
        out << YAML::Key << "tools" << YAML::Value << YAML::BeginMap;
        if (!policy.allow.empty()) {
          out << YAML::Key << "allow" << YAML::Value;
          emit_strings(out, policy.allow);
        }
        if (!policy.deny.empty()) {
          out << YAML::Key << "deny" << YAML::Value;
          emit_strings(out, policy.deny);
        }
        out << YAML::EndMap;
      }
      if (policy.rate_limit) {
        out << YAML::Key << "rate_limit" << YAML::Value << YAML::BeginMap;
        out << YAML::Key << "requests_per_second" << YAML::Value
            << policy.rate_limit->requests_per_second;
        out << YAML::Key << "burst" << YAML::Value << policy.rate_limit->burst;
        out << YAML::EndMap;
      }
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::EndMap;
  if (!out.good()) throw std::logic_error("guard config: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

json secret_volume(const std::string& name, const std::string& secret, const json& items) {
  return {{"name", name},
          {"secret", {{"secretName", secret}, {"items", items}, {"defaultMode", kSecretFileMode}}}};
}

json proxy_container(const McpTunnel& tunnel) {
  json mounts = json::array({
      {{"name", kConfigVolume}, {"mountPath", kProxyConfigDir}, {"readOnly", true}},
      {{"name", kTlsVolume}, {"mountPath", kProxyTlsDir}, {"readOnly", true}},
  });
  // With the guard, the proxy speaks plain HTTP to loopback and the guard to the upstreams.
  if (!tunnel.upstream_ca_secret_name.empty() && !tunnel.guard_enabled()) {
    mounts.push_back(
        {{"name", kUpstreamCaVolume}, {"mountPath", kProxyUpstreamCaDir}, {"readOnly", true}});
  }
  return {
      {"name", kProxyContainer},
      {"image",
       tunnel.gateway.proxy_image.empty() ? kDefaultProxyImage : tunnel.gateway.proxy_image},
      {"imagePullPolicy", "IfNotPresent"},
      // The image's default config path is the legacy /etc/mcp-gateway/config.yaml; ours lives
      // in a directory of its own so the Secret mounts beside it need no subPath.
      {"args", json::array({"-config", kProxyConfigFile})},
      {"ports",
       json::array({{{"name", "proxy"}, {"containerPort", kProxyPort}, {"protocol", "TCP"}}})},
      {"readinessProbe",
       {{"tcpSocket", {{"port", kProxyPort}}}, {"periodSeconds", 5}, {"failureThreshold", 3}}},
      {"resources", resources_or(tunnel.gateway.proxy_resources, "50m", "64Mi", "256Mi")},
      {"securityContext", kube::restricted_container_security_context()},
      {"volumeMounts", mounts},
      {"terminationMessagePolicy", "FallbackToLogsOnError"},
  };
}

json connector_container(const McpTunnel& tunnel) {
  const std::string metrics = "0.0.0.0:" + std::to_string(kConnectorMetricsPort);
  const std::string origin = "http://localhost:" + std::to_string(kProxyPort);
  return {
      {"name", kConnectorContainer},
      {"image", tunnel.gateway.connector_image.empty() ? kDefaultConnectorImage
                                                       : tunnel.gateway.connector_image},
      {"imagePullPolicy", "IfNotPresent"},
      {"command", json::array({"cloudflared"})},
      // --no-autoupdate, --metrics and --grace-period belong to `tunnel`; --token-file and --url
      // to `run`. The token comes from a file: an env var shows in /proc and kubectl describe.
      {"args", json::array({"tunnel", "--no-autoupdate", "--metrics", metrics, "--grace-period",
                            kConnectorGracePeriod, "run", "--token-file", kConnectorTokenFile,
                            "--url", origin})},
      {"ports",
       json::array(
           {{{"name", "metrics"}, {"containerPort", kConnectorMetricsPort}, {"protocol", "TCP"}}})},
      // /ready is 200 only with an edge connection: rollouts wait for a connected replica.
      {"readinessProbe",
       {{"httpGet", {{"path", "/ready"}, {"port", "metrics"}}},
        {"periodSeconds", 5},
        {"failureThreshold", 3}}},
      // Liveness on /healthcheck, never /ready: an edge outage must not restart-loop the pods.
      {"livenessProbe",
       {{"httpGet", {{"path", "/healthcheck"}, {"port", "metrics"}}},
        {"initialDelaySeconds", 10},
        {"periodSeconds", 10},
        {"timeoutSeconds", 5},
        {"failureThreshold", 3}}},
      {"resources", resources_or(tunnel.gateway.connector_resources, "50m", "64Mi", "256Mi")},
      {"securityContext", kube::restricted_container_security_context()},
      {"volumeMounts",
       json::array(
           {{{"name", kTokenVolume}, {"mountPath", kConnectorTokenDir}, {"readOnly", true}}})},
      {"terminationMessagePolicy", "FallbackToLogsOnError"},
  };
}

json guard_container(const McpTunnel& tunnel) {
  json mounts = json::array(
      {{{"name", kGuardConfigVolume}, {"mountPath", kGuardConfigDir}, {"readOnly", true}}});
  if (!tunnel.upstream_ca_secret_name.empty()) {
    mounts.push_back(
        {{"name", kUpstreamCaVolume}, {"mountPath", kGuardUpstreamCaDir}, {"readOnly", true}});
  }
  return {
      {"name", kGuardContainer},
      {"image", tunnel.guard.image.empty() ? kDefaultGuardImage : tunnel.guard.image},
      {"imagePullPolicy", "IfNotPresent"},
      {"args", json::array({"--config", kGuardConfigFile})},
      {"ports", json::array({{{"name", "guard-metrics"},
                              {"containerPort", kGuardMetricsPort},
                              {"protocol", "TCP"}}})},
      // The metrics listener answers once the config is read and every route listens.
      {"readinessProbe",
       {{"httpGet", {{"path", "/metrics"}, {"port", "guard-metrics"}}},
        {"periodSeconds", 5},
        {"failureThreshold", 3}}},
      {"livenessProbe",
       {{"httpGet", {{"path", "/metrics"}, {"port", "guard-metrics"}}},
        {"initialDelaySeconds", 10},
        {"periodSeconds", 10},
        {"timeoutSeconds", 5},
        {"failureThreshold", 3}}},
      {"resources", resources_or(tunnel.guard.resources, "50m", "64Mi", "256Mi")},
      {"securityContext", kube::restricted_container_security_context()},
      {"volumeMounts", mounts},
      {"terminationMessagePolicy", "FallbackToLogsOnError"},
  };
}

json volumes(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  // No /tmp emptyDir: neither the proxy nor cloudflared (with --no-autoupdate) writes files.
  json result = json::array({
      {{"name", kConfigVolume},
       {"configMap",
        {{"name", object_names(tunnel.name).config_map},
         {"items", json::array({{{"key", kConfigKey}, {"path", kConfigKey}}})}}}},
      secret_volume(kTlsVolume, inputs.tls_secret_name,
                    json::array({{{"key", "tls.crt"}, {"path", "tls.crt"}},
                                 {{"key", "tls.key"}, {"path", "tls.key"}}})),
  });
  if (tunnel.guard_enabled()) {
    // json{...}: a braced list alone would insert its elements, not one object.
    result.insert(
        result.begin() + 1,
        json{{"name", kGuardConfigVolume},
             {"configMap",
              {{"name", object_names(tunnel.name).config_map},
               {"items", json::array({{{"key", kGuardConfigKey}, {"path", kGuardConfigKey}}})}}}});
  }
  if (!tunnel.upstream_ca_secret_name.empty()) {
    result.push_back(
        secret_volume(kUpstreamCaVolume, tunnel.upstream_ca_secret_name,
                      json::array({{{"key", tunnel.upstream_ca_secret_key}, {"path", "ca.crt"}}})));
  }
  result.push_back(
      secret_volume(kTokenVolume, inputs.token_secret_name,
                    json::array({{{"key", inputs.token_secret_key}, {"path", "token"}}})));
  return result;
}

}  // namespace

std::string render_proxy_config(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "listen_addr" << YAML::Value << YAML::DoubleQuoted
      << ":" + std::to_string(kProxyPort);
  out << YAML::Key << "log_level" << YAML::Value << "info";
  out << YAML::Key << "shutdown_timeout" << YAML::Value << "30s";
  out << YAML::Key << "tunnel_domain" << YAML::Value << inputs.domain;

  out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "cert_file" << YAML::Value << std::string(kProxyTlsDir) + "/tls.crt";
  out << YAML::Key << "key_file" << YAML::Value << std::string(kProxyTlsDir) + "/tls.key";
  out << YAML::EndMap;

  // A map: the proxy rejects a list. With the guard, every route goes to its guard listener,
  // and the proxy may reach nothing but loopback.
  const bool guard = tunnel.guard_enabled();
  out << YAML::Key << "routes" << YAML::Value << YAML::BeginMap;
  for (const auto& route : sorted_routes(inputs.routes)) {
    out << YAML::Key << route.name << YAML::Value
        << (guard ? loopback_url(guard_route_port(tunnel, route.name)) : route.upstream);
  }
  out << YAML::EndMap;

  out << YAML::Key << "upstream" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "allowed_ips" << YAML::Value << YAML::BeginSeq;
  if (guard) {
    out << "127.0.0.1/32";
  } else {
    for (const auto& cidr : tunnel.allowed_cidrs) out << cidr;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "include_system_cas" << YAML::Value << (tunnel.include_system_cas && !guard);
  if (!tunnel.upstream_ca_secret_name.empty() && !guard) {
    out << YAML::Key << "ca_file" << YAML::Value << std::string(kProxyUpstreamCaDir) + "/ca.crt";
  }
  out << YAML::EndMap;
  out << YAML::EndMap;

  out << YAML::EndMap;
  if (!out.good()) throw std::logic_error("proxy config: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

int guard_route_port(const McpTunnel& tunnel, const std::string& route_name) {
  for (size_t i = 0; i < tunnel.routes.size(); ++i) {
    if (tunnel.routes[i].name == route_name) return kGuardFirstRoutePort + static_cast<int>(i);
  }
  throw std::logic_error("route " + route_name + " is not in the spec");
}

std::string render_guard_config(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  return guard_config(tunnel, inputs, /*reloadable=*/true);
}

json build_config_map(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  json data = {{kConfigKey, render_proxy_config(tunnel, inputs)}};
  if (tunnel.guard_enabled()) data[kGuardConfigKey] = render_guard_config(tunnel, inputs);
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", metadata(tunnel, object_names(tunnel.name).config_map)},
          {"data", data}};
}

std::string gateway_hash(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  // Length-prefixed so no two different inputs concatenate to the same text.
  std::vector<std::string> parts = {render_proxy_config(tunnel, inputs), inputs.token_id,
                                    inputs.upstream_ca_version};
  // Only what the guard cannot reload; absent without the guard, so the hash (and every
  // gateway's pod template) is what it was before the guard existed.
  if (tunnel.guard_enabled()) parts.push_back(guard_config(tunnel, inputs, /*reloadable=*/false));
  std::string material;
  for (const std::string& part : parts) {
    material += std::to_string(part.size()) + ":" + part + ";";
  }
  return pki::sha256_hex(material);
}

json build_deployment(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  const auto selector = gateway_selector(tunnel);

  // The user's labels first; the operator's keys win, so the selector always matches.
  json labels = tunnel.gateway.pod_labels;
  labels.update(json(common_labels(tunnel)));
  labels.update(json(selector));
  json annotations = tunnel.gateway.pod_annotations;
  annotations[kGatewayHashAnnotation] = gateway_hash(tunnel, inputs);

  json containers = json::array({proxy_container(tunnel), connector_container(tunnel)});
  if (tunnel.guard_enabled()) containers.push_back(guard_container(tunnel));
  json pod_spec = {
      {"automountServiceAccountToken", false},
      {"enableServiceLinks", false},
      {"terminationGracePeriodSeconds", kTerminationGracePeriodSeconds},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", kNonRootId},
        {"runAsGroup", kNonRootId},
        {"fsGroup", kNonRootId},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
      {"containers", containers},
      {"volumes", volumes(tunnel, inputs)},
  };
  if (!tunnel.gateway.node_selector.empty())
    pod_spec["nodeSelector"] = tunnel.gateway.node_selector;
  if (tunnel.gateway.tolerations.is_array() && !tunnel.gateway.tolerations.empty()) {
    pod_spec["tolerations"] = tunnel.gateway.tolerations;
  }
  if (tunnel.gateway.replicas > 1) {
    // ScheduleAnyway: a small cluster should still run every replica, just not spread.
    json constraints = json::array();
    for (const char* key : {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}) {
      constraints.push_back({{"maxSkew", 1},
                             {"topologyKey", key},
                             {"whenUnsatisfiable", "ScheduleAnyway"},
                             {"labelSelector", match_labels(tunnel)}});
    }
    pod_spec["topologySpreadConstraints"] = constraints;
  }

  return {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", metadata(tunnel, object_names(tunnel.name).deployment)},
      {"spec",
       {{"replicas", tunnel.gateway.replicas},
        {"selector", match_labels(tunnel)},
        // Surge before removing: a rotated token must not leave the tunnel without a
        // connected replica.
        {"strategy",
         {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxUnavailable", 0}, {"maxSurge", 1}}}}},
        {"template",
         {{"metadata", {{"labels", labels}, {"annotations", annotations}}}, {"spec", pod_spec}}}}}};
}

json build_network_policy(const McpTunnel& tunnel, const GatewayInputs& inputs) {
  json egress = json::array();
  const auto add = [&egress](const json& rule) {
    if (std::find(egress.begin(), egress.end(), rule) == egress.end()) egress.push_back(rule);
  };

  // DNS anywhere: the resolver's address differs per distribution.
  add({{"ports",
        json::array({{{"protocol", "UDP"}, {"port", 53}}, {{"protocol", "TCP"}, {"port", 53}}})}});
  add({{"to",
        json::array({{{"ipBlock", {{"cidr", kEdgeIPv4}}}}, {{"ipBlock", {{"cidr", kEdgeIPv6}}}}})},
       {"ports", json::array({{{"protocol", "TCP"}, {"port", kEdgePort}},
                              {{"protocol", "UDP"}, {"port", kEdgePort}}})}});

  for (const auto& route : sorted_routes(inputs.routes)) {
    if (!route.target_port.empty()) {
      // A Service route. Without a selector its endpoints are not pods we can name; no rule.
      if (route.pod_selector.empty()) continue;
      add({{"to", json::array({{{"podSelector", {{"matchLabels", route.pod_selector}}}}})},
           {"ports", json::array({tcp_port(policy_port(route.target_port))})}});
    } else if (!route.ip.empty()) {
      add({{"to", json::array({{{"ipBlock", {{"cidr", route.ip + "/32"}}}}})},
           {"ports", json::array({tcp_port(route.port)})}});
    } else if (route.port > 0 && !tunnel.allowed_cidrs.empty()) {
      // A hostname cannot be expressed in a NetworkPolicy: allow the port to the allowed CIDRs;
      // the proxy's upstream.allowed_ips checks the resolved address against the same list.
      json to = json::array();
      for (const auto& cidr : tunnel.allowed_cidrs) to.push_back({{"ipBlock", {{"cidr", cidr}}}});
      add({{"to", to}, {"ports", json::array({tcp_port(route.port)})}});
    }
  }

  return {{"apiVersion", "networking.k8s.io/v1"},
          {"kind", "NetworkPolicy"},
          {"metadata", metadata(tunnel, object_names(tunnel.name).network_policy)},
          {"spec",
           {{"podSelector", match_labels(tunnel)},
            {"policyTypes", json::array({"Ingress", "Egress"})},
            {"ingress", json::array()},
            {"egress", egress}}}};
}

std::optional<json> build_disruption_budget(const McpTunnel& tunnel) {
  if (tunnel.gateway.replicas <= 1) return std::nullopt;
  return json{{"apiVersion", "policy/v1"},
              {"kind", "PodDisruptionBudget"},
              {"metadata", metadata(tunnel, object_names(tunnel.name).disruption_budget)},
              {"spec", {{"maxUnavailable", 1}, {"selector", match_labels(tunnel)}}}};
}

}  // namespace perimeter::mcptunnel
