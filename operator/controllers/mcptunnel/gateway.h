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

// The proxy's config.yaml (YAML text), routes sorted by name.
std::string render_proxy_config(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway-config, holding config.yaml.
nlohmann::json build_config_map(const McpTunnel& tunnel, const GatewayInputs& inputs);

// The hash on the pod template (annotation perimeter.dev/gateway-hash): of the proxy config, the
// token id and the upstream CA version; NOT of the TLS certificate (the proxy hot-reloads it,
// renewals must not restart pods). Lowercase hex SHA-256.
std::string gateway_hash(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway: the proxy and cloudflared in one pod, admitted under PodSecurity `restricted`.
nlohmann::json build_deployment(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway: no ingress; egress to DNS, the tunnel edge and each route's upstream.
nlohmann::json build_network_policy(const McpTunnel& tunnel, const GatewayInputs& inputs);

// <name>-gateway (policy/v1): at most one gateway pod evicted at a time; nullopt below two
// replicas (one pod has no availability to keep).
std::optional<nlohmann::json> build_disruption_budget(const McpTunnel& tunnel);

}  // namespace perimeter::mcptunnel
