#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kube/resource.h"
#include "runtime/spec_fields.h"

namespace perimeter::mcptunnel {

inline constexpr const char* kGroup = "perimeter.dev";
inline constexpr const char* kVersion = "v1alpha1";
inline constexpr const char* kKind = "McpTunnel";

// mcptunnels.perimeter.dev/v1alpha1.
kube::ResourceType mcp_tunnels();

// A spec the schema let through but the operator cannot act on; reported in a condition.
using SpecError = runtime::SpecError;

enum class CredentialsMode { kWorkloadIdentity, kManual };
enum class DeletionPolicy { kRetain, kArchive };

struct ServiceUpstream {
  std::string name;
  std::optional<int> port;  // by number, or
  std::string port_name;    // by name
  std::string scheme = "http";
};

// JSON-RPC requests per second on a route (perimeter-mcp-guard's token bucket).
struct RateLimitSpec {
  int requests_per_second = 0;
  int burst = 0;  // the schema leaves it optional; parsing defaults it to requests_per_second
};

// What perimeter-mcp-guard lets through on a route (spec.routes[].policy). Its presence, even
// empty, turns the guard on.
struct RoutePolicy {
  std::vector<std::string> allow;  // tool globs; empty: every tool deny does not match
  std::vector<std::string> deny;   // tool globs; deny wins
  std::optional<RateLimitSpec> rate_limit;
};

struct RouteSpec {
  std::string name;  // a DNS label: served at <name>.<domain>
  std::optional<ServiceUpstream> service;
  std::string url;  // http(s)://host:port when not a Service
  std::optional<RoutePolicy> policy;
};

enum class AuditLevel { kMetadata, kFull };

// spec.guard: perimeter-mcp-guard as a third container of the gateway pod.
struct GuardSpec {
  std::optional<bool> enabled;  // unset: on when a route has a policy or audit is set
  std::string image;            // empty: the operator's default (kDefaultGuardImage)
  bool audit_set = false;       // spec.guard.audit is present
  AuditLevel audit_level = AuditLevel::kMetadata;
  // Keys whose values the full audit level redacts, added to the guard's built-in ones.
  std::vector<std::string> redact_keys;
  nlohmann::json resources = nlohmann::json::object();
};

struct WorkloadIdentitySpec {
  std::string federation_rule_id;
  std::string organization_id;
  std::string service_account_id;
  std::string workspace_id;  // empty: none
  std::string audience = "https://api.anthropic.com";
};

struct ManualSpec {
  std::string domain;
  std::string token_secret_name;
  std::string token_secret_key = "token";
  std::string tls_secret_name;
};

struct GatewaySpec {
  int replicas = 2;
  std::string proxy_image;      // empty: the operator's pinned default
  std::string connector_image;  // empty: the operator's pinned default
  nlohmann::json proxy_resources = nlohmann::json::object();
  nlohmann::json connector_resources = nlohmann::json::object();
  std::map<std::string, std::string> node_selector;
  nlohmann::json tolerations = nlohmann::json::array();
  std::map<std::string, std::string> pod_labels;
  std::map<std::string, std::string> pod_annotations;
};

struct CertificateSpec {
  std::chrono::seconds duration{std::chrono::hours(2160)};
  std::chrono::seconds renew_before{std::chrono::hours(720)};
  std::chrono::seconds ca_duration{std::chrono::hours(43800)};
  std::chrono::seconds ca_renew_before{std::chrono::hours(8760)};
};

// The McpTunnel as the operator uses it: the spec with the schema's defaults applied, so an object
// stored before a default existed behaves like a new one.
struct McpTunnel {
  std::string name;
  std::string namespace_;
  std::string uid;
  std::int64_t generation = 0;

  // The tunnel: adopt `tunnel_id`, or create one (`create`), named display_name_prefix + " [uid]".
  std::string tunnel_id;
  bool create = false;
  std::string display_name_prefix;  // empty: namespace/name

  CredentialsMode mode = CredentialsMode::kWorkloadIdentity;
  std::string api_base_url = "https://api.anthropic.com";
  WorkloadIdentitySpec workload_identity;
  ManualSpec manual;

  std::vector<RouteSpec> routes;
  std::vector<std::string> allowed_cidrs{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"};
  std::string upstream_ca_secret_name;  // empty: none
  std::string upstream_ca_secret_key = "ca.crt";
  bool include_system_cas = false;

  CertificateSpec certificate;
  std::int64_t token_version = 0;
  DeletionPolicy deletion_policy = DeletionPolicy::kRetain;
  GatewaySpec gateway;
  GuardSpec guard;

  // Whether the gateway runs perimeter-mcp-guard: spec.guard.enabled when set, else whether any
  // route has a policy or spec.guard.audit is set.
  bool guard_enabled() const;
  // Whether any route has a policy (which spec.guard.enabled: false leaves unenforced).
  bool has_policy() const;

  // The display name a created tunnel gets; the uid in it is how a tunnel created by an
  // interrupted reconcile is found again.
  std::string display_name() const;
  // Whether a tunnel with this display name is the one this resource created.
  bool owns_display_name(std::string_view display_name) const;
  kube::ObjectKey key() const { return {namespace_, name}; }
};

// Reads an McpTunnel object. Throws SpecError naming the field when the operator cannot act on it.
McpTunnel parse_mcp_tunnel(const nlohmann::json& object);

// A Go duration as the schema allows it ("2160h", "1h30m", "90s", "500ms"): whole seconds,
// rounded down. Throws SpecError for anything else.
std::chrono::seconds parse_duration(std::string_view text);

// The names of what the operator makes for an McpTunnel (all in its namespace, all owned by it).
struct ObjectNames {
  std::string deployment;    // <name>-gateway
  std::string config_map;    // <name>-gateway-config
  std::string network_policy;  // <name>-gateway
  std::string disruption_budget;  // <name>-gateway
  std::string ca_secret;     // <name>-ca: the CA and its key; never mounted into a pod
  std::string tls_secret;    // <name>-tls: the server certificate and key the proxy serves
  std::string token_secret;  // <name>-token: the connector token
};
ObjectNames object_names(const std::string& name);

// Labels on every object the operator makes for an McpTunnel, and the gateway pods' selector.
std::map<std::string, std::string> common_labels(const McpTunnel& tunnel);
std::map<std::string, std::string> gateway_selector(const McpTunnel& tunnel);

// The ownerReference (controller) that ties a child to its McpTunnel, so deleting the McpTunnel
// garbage-collects the gateway.
nlohmann::json owner_reference(const McpTunnel& tunnel);

// A Secret the operator owns for the McpTunnel (labels, owner reference), with empty data.
nlohmann::json owned_secret(const McpTunnel& tunnel, const std::string& name, const char* type);

}  // namespace perimeter::mcptunnel
