#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "controllers/mcptunnel/mcp_tunnel.h"

// The gateway's Kubernetes objects for an McpTunnel: pure functions of the resource and what the
// reconciler resolved, so the same inputs always render the same objects (server-side apply with
// one field manager sees no change when nothing changed).
namespace perimeter::mcptunnel {

// Default images, pinned by digest (Anthropic's docs, mcp-tunnels deploy-compose, 2026-09):
inline constexpr const char* kDefaultProxyImage =
    "us-docker.pkg.dev/anthropic-public-registry/images/"
    "mcp-proxy@sha256:efb27b299d627e4134815663cb8896641eeaee025d734c0f695582b4df38f013";
inline constexpr const char* kDefaultConnectorImage =
    "docker.io/cloudflare/"
    "cloudflared@sha256:6b599ca3e974349ead3286d178da61d291961182ec3fe9c505e1dd02c8ac31b0";

// perimeter-mcp-guard's default image (spec.guard.image): the name under which the local real
// node imports <build>/images/perimeter-mcp-guard.tar (mcp-guard/image/build-image.sh), tagged
// with the project's version like the chart's appVersion (gateway.cc checks the tag). It is not
// published: a real cluster pushes the image to its registry and sets spec.guard.image.
inline constexpr const char* kDefaultGuardImage = "localhost/perimeter/perimeter-mcp-guard:0.1.0";

// The pod-template annotation whose change rolls the gateway pods.
inline constexpr const char* kGatewayHashAnnotation = "perimeter.dev/gateway-hash";

// Where the proxy finds its files. Each is a directory mount (never subPath), so the kubelet
// updates Secret contents in place and the proxy hot-reloads a renewed certificate.
inline constexpr const char* kProxyConfigDir = "/etc/mcp-gateway/config";
inline constexpr const char* kProxyConfigFile = "/etc/mcp-gateway/config/config.yaml";
inline constexpr const char* kProxyTlsDir = "/etc/mcp-gateway/tls";
inline constexpr const char* kProxyUpstreamCaDir = "/etc/mcp-gateway/upstream-ca";
inline constexpr const char* kConnectorTokenDir = "/etc/cloudflared/token";
inline constexpr const char* kConnectorTokenFile = "/etc/cloudflared/token/token";

inline constexpr int kProxyPort = 8080;
inline constexpr int kConnectorMetricsPort = 2000;

// Where the guard finds its files: directory mounts side by side, as for the proxy. The guard
// re-reads its config when the kubelet swaps the ConfigMap's directory.
inline constexpr const char* kGuardConfigDir = "/etc/perimeter-mcp-guard/config";
inline constexpr const char* kGuardConfigFile = "/etc/perimeter-mcp-guard/config/guard.yaml";
inline constexpr const char* kGuardUpstreamCaDir = "/etc/perimeter-mcp-guard/upstream-ca";
// Its Prometheus listener (GET /metrics), also what the kubelet probes.
inline constexpr int kGuardMetricsPort = 9464;
// spec.routes[i] listens on 127.0.0.1:(kGuardFirstRoutePort + i) in the guard; mcp-proxy's route
// points there. Loopback only: nothing outside the pod reaches a guard listener.
inline constexpr int kGuardFirstRoutePort = 9100;

// The tunnel edge cloudflared dials on 7844 TCP (HTTP/2) and UDP (QUIC).
inline constexpr const char* kEdgeIPv4 = "198.41.192.0/19";
inline constexpr const char* kEdgeIPv6 = "2606:4700:a0::/44";
inline constexpr int kEdgePort = 7844;

struct ResolvedRoute {
  std::string name;      // the route's DNS label
  std::string upstream;  // scheme://host:port, as the proxy config's routes map wants it
  // For the NetworkPolicy's egress to this upstream:
  // Service routes: the Service's spec.selector (empty: no pod rule, e.g. a Service without
  // selector), and the Service port's targetPort (a number as decimal text, or a port name).
  std::map<std::string, std::string> pod_selector;
  std::string target_port;
  // URL routes: the host when it is an IPv4 literal ("10.0.0.5", empty for hostnames), and the
  // URL's port.
  std::string ip;
  int port = 0;
};

struct GatewayInputs {
  std::string domain;                 // the tunnel's domain
  std::vector<ResolvedRoute> routes;  // the routes that resolved (only those are served)
  std::string tls_secret_name;        // kubernetes.io/tls Secret (tls.crt, tls.key) for the proxy
  std::string token_secret_name;      // Secret holding the connector token
  std::string token_secret_key;       // its key
  // Identity of the token in effect; a change must roll the pods.
  std::string token_id;
  // resourceVersion of the upstream CA Secret ("" if none); a change rolls the pods.
  std::string upstream_ca_version;
};

// The proxy's config.yaml (YAML text), routes sorted by name. With the guard, each route points at
// its guard listener (http://127.0.0.1:<port>) and allowed_ips is 127.0.0.1/32 alone.
std::string render_proxy_config(const McpTunnel& tunnel, const GatewayInputs& inputs);

// The port spec route `route_name` listens on in the guard: kGuardFirstRoutePort + its index in
// spec.routes. Throws std::logic_error for a name the spec does not have.
int guard_route_port(const McpTunnel& tunnel, const std::string& route_name);

// perimeter-mcp-guard's config (docs/mcp-guard.md) as YAML text: the metrics listener, the audit
// settings, and one route per resolved route in spec order, listening on its port and forwarding
// to the real upstream with the route's policy and the tunnel's allowedCIDRs.
std::string render_guard_config(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway-config, holding config.yaml, and guard.yaml when the guard is enabled.
nlohmann::json build_config_map(const McpTunnel& tunnel, const GatewayInputs& inputs);

// The hash on the pod template (annotation perimeter.dev/gateway-hash): of the proxy config, the
// token id and the upstream CA version; NOT of the TLS certificate (the proxy hot-reloads it,
// renewals must not restart pods). With the guard, also of the part of its config the guard
// cannot reload (listeners, route names, upstreams, allowed CIDRs, CA files), but NOT of the
// policies, rate limits and audit settings: the guard re-reads those from the mounted file, so
// editing a policy restarts no pod. Without the guard, the same hash as before the guard existed.
// Lowercase hex SHA-256.
std::string gateway_hash(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway: the proxy and cloudflared (and the guard, when enabled) in one pod, admitted
// under PodSecurity `restricted`.
nlohmann::json build_deployment(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway: no ingress; egress to DNS, the tunnel edge and each route's upstream.
nlohmann::json build_network_policy(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway (policy/v1): at most one gateway pod evicted at a time; nullopt below two
// replicas (one pod has no availability to keep).
std::optional<nlohmann::json> build_disruption_budget(const McpTunnel& tunnel);

}  // namespace perimeter::mcptunnel
