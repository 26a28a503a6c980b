#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/cidr.h"
#include "mcp/tool_policy.h"

namespace perimeter::mcpguard {

// perimeter-mcp-guard's configuration file (docs/mcp-guard.md, "Configuration"), typed once here
// so the proxy never looks a key up by name.

enum class AuditLevel { kMetadata, kFull };
const char* to_string(AuditLevel level);

struct AuditConfig {
  AuditLevel level = AuditLevel::kMetadata;
  // Globs (fnmatch) over argument keys, matched case-insensitively; level full only.
  std::vector<std::string> redact_keys = {"password", "*token*", "*secret*", "authorization"};
  bool operator==(const AuditConfig&) const = default;
};

struct LimitsConfig {
  std::size_t max_request_body_bytes = 4194304;
  std::size_t max_json_reply_bytes = 16777216;
  std::size_t max_sse_event_bytes = 16777216;
  std::chrono::seconds header_timeout{30};
  std::chrono::seconds upstream_connect_timeout{10};
  std::chrono::seconds upstream_reply_timeout{600};
  std::chrono::seconds stream_idle_timeout{0};  // 0: never
  std::chrono::seconds shutdown_grace{25};
  bool operator==(const LimitsConfig&) const = default;
};

// Where a route forwards to: `http://host:port` (https when `tls`).
struct UpstreamAddress {
  bool tls = false;
  std::string host;  // without brackets around an IPv6 literal
  std::string port;
  std::string authority;  // host:port as written, for the Host header
  bool operator==(const UpstreamAddress&) const = default;
};

enum class HostHeaderMode { kUpstream, kPreserve };

struct RateLimitConfig {
  double requests_per_second = 0;
  double burst = 0;
  bool operator==(const RateLimitConfig&) const = default;
};

struct RouteConfig {
  std::string name;
  std::string listen_host;
  std::string listen_port;
  std::string listen;  // as written, "host:port"
  UpstreamAddress upstream;
  std::string upstream_ca_file;     // https: the CAs its certificate must chain to
  bool upstream_system_cas = true;  // https: the system's CAs too (default: without a CA file)
  HostHeaderMode host_header = HostHeaderMode::kUpstream;
  std::vector<Cidr> allowed_cidrs;
  ToolPolicy tools;
  std::optional<RateLimitConfig> rate_limit;
};

struct GuardConfig {
  std::string metrics_listen = "127.0.0.1:9464";  // "" turns the metrics listener off
  AuditConfig audit;
  LimitsConfig limits;
  std::vector<RouteConfig> routes;
};

// The outcome of reading a file: the config, or an error that starts with the field's path
// (`routes[1].tools.deny[0]: ...`).
struct GuardConfigResult {
  std::optional<GuardConfig> config;
  std::string error;
};

GuardConfigResult parse_guard_config(std::string_view yaml_text);

// Why `next` cannot replace `current` while the process runs (a route's listener changed, a route
// was added or removed), or nullopt when it can.
std::optional<std::string> reload_refusal(const GuardConfig& current, const GuardConfig& next);

// "host:port" into its parts ("[::1]:80" too); false when it is not one.
bool split_host_port(std::string_view text, std::string* host, std::string* port);

}  // namespace perimeter::mcpguard
