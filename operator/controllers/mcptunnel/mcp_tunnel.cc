#include "controllers/mcptunnel/mcp_tunnel.h"

#include <algorithm>
#include <cctype>

namespace perimeter::mcptunnel {

using runtime::child;
using runtime::read_optional;
using runtime::required_string;

namespace {

std::chrono::seconds read_duration(const nlohmann::json& object, const char* key,
                                   const std::string& path, std::chrono::seconds fallback) {
  std::string text;
  read_optional(object, key, path, &text);
  if (text.empty()) return fallback;
  try {
    return parse_duration(text);
  } catch (const SpecError& e) {
    throw SpecError(path + "." + key + ": " + e.what());
  }
}

// Why `glob` is not a tool glob the guard can use, or "" when it is. The same rules as the
// schema's: not empty, no surrounding whitespace, every `[` closed (fnmatch would otherwise read
// it as a literal, which is never what a policy author meant).
std::string glob_problem(const std::string& glob) {
  if (glob.empty()) return "must not be empty";
  if (std::isspace(static_cast<unsigned char>(glob.front())) ||
      std::isspace(static_cast<unsigned char>(glob.back()))) {
    return "must not start or end with whitespace";
  }
  for (size_t i = 0; i < glob.size(); ++i) {
    if (glob[i] != '[') continue;
    size_t j = i + 1;
    if (j < glob.size() && (glob[j] == '!' || glob[j] == '^')) ++j;
    if (j < glob.size() && glob[j] == ']') ++j;  // a leading ] is part of the set
    const auto close = glob.find(']', j);
    if (close == std::string::npos) return "'" + glob + "' has a [ that no ] closes";
    i = close;
  }
  return "";
}

std::vector<std::string> read_globs(const nlohmann::json& object, const char* key,
                                    const std::string& path) {
  std::vector<std::string> globs;
  read_optional(object, key, path, &globs);
  for (size_t i = 0; i < globs.size(); ++i) {
    const std::string problem = glob_problem(globs[i]);
    if (!problem.empty()) {
      throw SpecError(path + "." + key + "[" + std::to_string(i) + "] " + problem);
    }
  }
  return globs;
}

RoutePolicy read_policy(const nlohmann::json& policy, const std::string& path) {
  RoutePolicy result;
  const auto& tools = child(policy, "tools");
  result.allow = read_globs(tools, "allow", path + ".tools");
  result.deny = read_globs(tools, "deny", path + ".tools");
  const auto it = policy.find("rateLimit");
  if (it != policy.end() && !it->is_null()) {
    const std::string rate_path = path + ".rateLimit";
    if (!it->is_object()) throw SpecError(rate_path + " has the wrong type: " + it->dump());
    RateLimitSpec rate;
    read_optional(*it, "requestsPerSecond", rate_path, &rate.requests_per_second);
    if (rate.requests_per_second < 1) {
      throw SpecError(rate_path + ".requestsPerSecond must be at least 1");
    }
    rate.burst = rate.requests_per_second;
    read_optional(*it, "burst", rate_path, &rate.burst);
    if (rate.burst < 1) throw SpecError(rate_path + ".burst must be at least 1");
    result.rate_limit = rate;
  }
  return result;
}

GuardSpec read_guard(const nlohmann::json& spec) {
  GuardSpec guard;
  const std::string path = "spec.guard";
  const auto& block = child(spec, "guard");
  if (block.contains("enabled") && !block["enabled"].is_null()) {
    bool enabled = false;
    read_optional(block, "enabled", path, &enabled);
    guard.enabled = enabled;
  }
  read_optional(block, "image", path, &guard.image);
  if (block.contains("image") && guard.image.empty()) {
    throw SpecError(path + ".image must not be empty");
  }
  const auto audit = block.find("audit");
  if (audit != block.end() && !audit->is_null()) {
    if (!audit->is_object()) throw SpecError(path + ".audit has the wrong type: " + audit->dump());
    guard.audit_set = true;
    std::string level = "metadata";
    read_optional(*audit, "level", path + ".audit", &level);
    if (level == "metadata") {
      guard.audit_level = AuditLevel::kMetadata;
    } else if (level == "full") {
      guard.audit_level = AuditLevel::kFull;
    } else {
      throw SpecError(path + ".audit.level must be metadata or full, not '" + level + "'");
    }
    read_optional(*audit, "redactKeys", path + ".audit", &guard.redact_keys);
    for (size_t i = 0; i < guard.redact_keys.size(); ++i) {
      if (guard.redact_keys[i].empty()) {
        throw SpecError(path + ".audit.redactKeys[" + std::to_string(i) + "] must not be empty");
      }
    }
  }
  if (block.contains("resources") && block["resources"].is_object()) {
    guard.resources = block["resources"];
  }
  return guard;
}

std::vector<RouteSpec> read_routes(const nlohmann::json& spec) {
  std::vector<RouteSpec> routes;
  const auto it = spec.find("routes");
  if (it == spec.end() || !it->is_array() || it->empty()) {
    throw SpecError("spec.routes must list at least one route");
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& item = (*it)[i];
    const std::string path = "spec.routes[" + std::to_string(i) + "]";
    RouteSpec route;
    route.name = required_string(item, "name", path);
    for (const auto& other : routes) {
      if (other.name == route.name) throw SpecError(path + ".name '" + route.name + "' repeats");
    }
    const auto& service = child(item, "service");
    read_optional(item, "url", path, &route.url);
    if (!service.empty()) {
      ServiceUpstream upstream;
      upstream.name = required_string(service, "name", path + ".service");
      int port = 0;
      read_optional(service, "port", path + ".service", &port);
      if (port != 0) upstream.port = port;
      read_optional(service, "portName", path + ".service", &upstream.port_name);
      read_optional(service, "scheme", path + ".service", &upstream.scheme);
      if (upstream.port.has_value() == !upstream.port_name.empty()) {
        throw SpecError(path + ".service: set exactly one of port and portName");
      }
      route.service = std::move(upstream);
    }
    if (route.service.has_value() == !route.url.empty()) {
      throw SpecError(path + ": set exactly one of service and url");
    }
    const auto policy = item.find("policy");
    if (policy != item.end() && !policy->is_null()) {
      if (!policy->is_object())
        throw SpecError(path + ".policy has the wrong type: " + policy->dump());
      route.policy = read_policy(*policy, path + ".policy");
    }
    routes.push_back(std::move(route));
  }
  return routes;
}

}  // namespace

kube::ResourceType mcp_tunnels() { return {kGroup, kVersion, "mcptunnels", kKind, true}; }

std::chrono::seconds parse_duration(std::string_view text) {
  if (text.empty()) throw SpecError("empty duration");
  long double total_ms = 0;
  size_t i = 0;
  while (i < text.size()) {
    const size_t digits_start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == digits_start) throw SpecError("'" + std::string(text) + "' is not a duration such as 2160h");
    const long double value = std::stold(std::string(text.substr(digits_start, i - digits_start)));
    const size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    const std::string_view unit = text.substr(unit_start, i - unit_start);
    if (unit == "h") total_ms += value * 3600000;
    else if (unit == "m") total_ms += value * 60000;
    else if (unit == "s") total_ms += value * 1000;
    else if (unit == "ms") total_ms += value;
    else throw SpecError("'" + std::string(text) + "' has an unknown unit (use h, m, s or ms)");
  }
  if (total_ms > 1e15L) throw SpecError("'" + std::string(text) + "' is too long");
  return std::chrono::seconds(static_cast<long long>(total_ms / 1000));
}

std::string McpTunnel::display_name() const {
  const std::string prefix =
      display_name_prefix.empty() ? namespace_ + "/" + name : display_name_prefix;
  return prefix + " [" + uid + "]";
}

bool McpTunnel::owns_display_name(std::string_view display) const {
  const std::string suffix = " [" + uid + "]";
  return !uid.empty() && display.size() >= suffix.size() &&
         display.substr(display.size() - suffix.size()) == suffix;
}

McpTunnel parse_mcp_tunnel(const nlohmann::json& object) {
  if (!object.is_object()) throw SpecError("the object is not a JSON object");
  McpTunnel tunnel;
  const auto& metadata = child(object, "metadata");
  read_optional(metadata, "name", "metadata", &tunnel.name);
  read_optional(metadata, "namespace", "metadata", &tunnel.namespace_);
  read_optional(metadata, "uid", "metadata", &tunnel.uid);
  read_optional(metadata, "generation", "metadata", &tunnel.generation);
  if (tunnel.name.empty()) throw SpecError("metadata.name is required");

  const auto spec_it = object.find("spec");
  if (spec_it == object.end() || !spec_it->is_object()) throw SpecError("spec is required");
  const auto& spec = *spec_it;

  const auto& credentials = child(spec, "credentials");
  const std::string mode = required_string(credentials, "mode", "spec.credentials");
  read_optional(credentials, "apiBaseUrl", "spec.credentials", &tunnel.api_base_url);
  if (mode == "WorkloadIdentity") {
    tunnel.mode = CredentialsMode::kWorkloadIdentity;
    const auto& wif = child(credentials, "workloadIdentity");
    const std::string path = "spec.credentials.workloadIdentity";
    auto& w = tunnel.workload_identity;
    w.federation_rule_id = required_string(wif, "federationRuleId", path);
    w.organization_id = required_string(wif, "organizationId", path);
    w.service_account_id = required_string(wif, "serviceAccountId", path);
    read_optional(wif, "workspaceId", path, &w.workspace_id);
    read_optional(wif, "audience", path, &w.audience);
    if (w.audience.empty()) throw SpecError(path + ".audience must not be empty");

    const auto& which = child(spec, "tunnel");
    read_optional(which, "id", "spec.tunnel", &tunnel.tunnel_id);
    const bool create = which.contains("create") && which["create"].is_object();
    if (create == !tunnel.tunnel_id.empty()) {
      throw SpecError("spec.tunnel: set exactly one of id and create");
    }
    tunnel.create = create;
    if (create) {
      read_optional(which["create"], "displayName", "spec.tunnel.create",
                    &tunnel.display_name_prefix);
    }
  } else if (mode == "Manual") {
    tunnel.mode = CredentialsMode::kManual;
    const auto& manual = child(credentials, "manual");
    const std::string path = "spec.credentials.manual";
    auto& m = tunnel.manual;
    m.domain = required_string(manual, "domain", path);
    const auto& token_ref = child(manual, "tokenSecretRef");
    m.token_secret_name = required_string(token_ref, "name", path + ".tokenSecretRef");
    read_optional(token_ref, "key", path + ".tokenSecretRef", &m.token_secret_key);
    m.tls_secret_name = required_string(child(manual, "tlsSecretRef"), "name", path + ".tlsSecretRef");
  } else {
    throw SpecError("spec.credentials.mode must be WorkloadIdentity or Manual, not '" + mode + "'");
  }

  tunnel.routes = read_routes(spec);

  const auto& upstream = child(spec, "upstream");
  if (upstream.contains("allowedCIDRs")) {
    tunnel.allowed_cidrs.clear();
    read_optional(upstream, "allowedCIDRs", "spec.upstream", &tunnel.allowed_cidrs);
  }
  const auto& ca_ref = child(upstream, "caSecretRef");
  if (!ca_ref.empty()) {
    tunnel.upstream_ca_secret_name = required_string(ca_ref, "name", "spec.upstream.caSecretRef");
    read_optional(ca_ref, "key", "spec.upstream.caSecretRef", &tunnel.upstream_ca_secret_key);
  }
  read_optional(upstream, "includeSystemCAs", "spec.upstream", &tunnel.include_system_cas);

  const auto& certificate = child(spec, "certificate");
  auto& c = tunnel.certificate;
  const std::string cpath = "spec.certificate";
  c.duration = read_duration(certificate, "duration", cpath, c.duration);
  c.renew_before = read_duration(certificate, "renewBefore", cpath, c.renew_before);
  c.ca_duration = read_duration(certificate, "caDuration", cpath, c.ca_duration);
  c.ca_renew_before = read_duration(certificate, "caRenewBefore", cpath, c.ca_renew_before);
  if (c.duration < std::chrono::minutes(1)) throw SpecError(cpath + ".duration must be at least 1m");
  if (c.renew_before >= c.duration) {
    throw SpecError(cpath + ".renewBefore must be shorter than duration");
  }
  if (c.ca_renew_before >= c.ca_duration) {
    throw SpecError(cpath + ".caRenewBefore must be shorter than caDuration");
  }
  if (c.duration > c.ca_duration) throw SpecError(cpath + ".duration cannot exceed caDuration");

  read_optional(spec, "tokenVersion", "spec", &tunnel.token_version);
  if (tunnel.token_version < 0) throw SpecError("spec.tokenVersion must be >= 0");
  std::string deletion = "Retain";
  read_optional(spec, "deletionPolicy", "spec", &deletion);
  if (deletion == "Retain") {
    tunnel.deletion_policy = DeletionPolicy::kRetain;
  } else if (deletion == "Archive") {
    tunnel.deletion_policy = DeletionPolicy::kArchive;
  } else {
    throw SpecError("spec.deletionPolicy must be Retain or Archive, not '" + deletion + "'");
  }

  const auto& gateway = child(spec, "gateway");
  auto& g = tunnel.gateway;
  read_optional(gateway, "replicas", "spec.gateway", &g.replicas);
  if (g.replicas < 1) throw SpecError("spec.gateway.replicas must be >= 1");
  read_optional(gateway, "proxyImage", "spec.gateway", &g.proxy_image);
  read_optional(gateway, "connectorImage", "spec.gateway", &g.connector_image);
  if (gateway.contains("proxyResources") && gateway["proxyResources"].is_object()) {
    g.proxy_resources = gateway["proxyResources"];
  }
  if (gateway.contains("connectorResources") && gateway["connectorResources"].is_object()) {
    g.connector_resources = gateway["connectorResources"];
  }
  read_optional(gateway, "nodeSelector", "spec.gateway", &g.node_selector);
  if (gateway.contains("tolerations") && gateway["tolerations"].is_array()) {
    g.tolerations = gateway["tolerations"];
  }
  read_optional(gateway, "podLabels", "spec.gateway", &g.pod_labels);
  read_optional(gateway, "podAnnotations", "spec.gateway", &g.pod_annotations);
  tunnel.guard = read_guard(spec);
  if (tunnel.guard_enabled() && tunnel.upstream_ca_secret_name.empty() &&
      !tunnel.include_system_cas) {
    // The guard verifies an https upstream's certificate (docs/mcp-guard.md): with neither a CA
    // Secret nor the system's CAs it could trust nothing, and its pods would never start.
    for (std::size_t i = 0; i < tunnel.routes.size(); ++i) {
      const RouteSpec& route = tunnel.routes[i];
      const bool https =
          route.service ? route.service->scheme == "https" : route.url.rfind("https://", 0) == 0;
      if (https) {
        throw SpecError("spec.routes[" + std::to_string(i) + "]: an https upstream behind " +
                        "perimeter-mcp-guard needs a CA to verify it: set " +
                        "spec.upstream.caSecretRef or spec.upstream.includeSystemCAs: true");
      }
    }
  }
  return tunnel;
}

bool McpTunnel::has_policy() const {
  return std::any_of(routes.begin(), routes.end(),
                     [](const RouteSpec& route) { return route.policy.has_value(); });
}

bool McpTunnel::guard_enabled() const {
  if (guard.enabled.has_value()) return *guard.enabled;
  return has_policy() || guard.audit_set;
}

ObjectNames object_names(const std::string& name) {
  return {name + "-gateway", name + "-gateway-config", name + "-gateway", name + "-gateway",
          name + "-ca",      name + "-tls",            name + "-token"};
}

std::map<std::string, std::string> common_labels(const McpTunnel& tunnel) {
  return {{"app.kubernetes.io/name", "mcp-tunnel-gateway"},
          {"app.kubernetes.io/instance", tunnel.name},
          {"app.kubernetes.io/managed-by", "perimeter"},
          {"app.kubernetes.io/part-of", "perimeter"},
          {"perimeter.dev/mcptunnel", tunnel.name}};
}

std::map<std::string, std::string> gateway_selector(const McpTunnel& tunnel) {
  return {{"perimeter.dev/mcptunnel", tunnel.name},
          {"app.kubernetes.io/component", "mcp-tunnel-gateway"}};
}

nlohmann::json owner_reference(const McpTunnel& tunnel) {
  return {{"apiVersion", std::string(kGroup) + "/" + kVersion},
          {"kind", kKind},
          {"name", tunnel.name},
          {"uid", tunnel.uid},
          {"controller", true},
          {"blockOwnerDeletion", true}};
}

nlohmann::json owned_secret(const McpTunnel& tunnel, const std::string& name, const char* type) {
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [key, value] : common_labels(tunnel)) labels[key] = value;
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"type", type},
          {"metadata",
           {{"name", name},
            {"namespace", tunnel.namespace_},
            {"labels", labels},
            {"ownerReferences", nlohmann::json::array({owner_reference(tunnel)})}}},
          {"data", nlohmann::json::object()}};
}

}  // namespace perimeter::mcptunnel
