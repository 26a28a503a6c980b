#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::egressgateway {

// One allow-list entry: an exact host name, or "*.example.com" (one or more labels before
// ".example.com", never example.com itself), with the ports it may be reached on.
struct AllowRule {
  std::string host;  // as written, normalized (lowercase, no trailing dot)
  bool wildcard = false;
  std::string suffix;  // for a wildcard: ".example.com"
  std::vector<std::uint16_t> ports;
};

// An AgentEnvironment's allow-list, keyed "<namespace>/<name>".
struct Environment {
  std::string name;
  std::vector<AllowRule> allow;
};

// The config file (docs/egress-gateway.md, "Config"), parsed and validated.
struct GatewayConfig {
  std::string listen;
  std::string metrics_listen;  // empty: no metrics listener
  std::string credentials_key_file;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds client_hello_timeout{10000};
  std::chrono::milliseconds idle_timeout{300000};
  int max_connections = 4096;
  // Lets upstreams resolve to loopback: the loopback attack suite's stand-ins live there. Refused
  // unless the process runs with PERIMETER_EGRESS_TESTING=1 (see kTestingEnvVar).
  bool testing_allow_loopback_upstreams = false;
  std::vector<Environment> environments;

  const Environment* find_environment(std::string_view name) const;
};

inline constexpr const char* kTestingEnvVar = "PERIMETER_EGRESS_TESTING";

struct ConfigParse {
  std::optional<GatewayConfig> config;
  std::string error;  // one sentence naming the field, when config is empty
};

// Parses and validates the YAML text. `testing_allowed`: whether testing_* fields are accepted.
ConfigParse parse_gateway_config(std::string_view yaml, bool testing_allowed);

// What a connection is judged by: a config and the credentials key it names, loaded together so
// a reload swaps both at once or neither.
struct GatewaySnapshot {
  GatewayConfig config;
  std::string credentials_key;  // the key file's raw bytes
};

inline constexpr std::size_t kMinCredentialsKeyBytes = 32;

struct SnapshotLoad {
  std::shared_ptr<const GatewaySnapshot> snapshot;
  std::string error;  // when snapshot is null
};

// Parses `yaml` and reads the key file it names (at least kMinCredentialsKeyBytes bytes).
SnapshotLoad load_gateway_snapshot(std::string_view yaml, bool testing_allowed);
// The whole file, or nullopt when it cannot be read.
std::optional<std::string> read_whole_file(const std::string& path);

// Host names are compared lowercase and without a trailing dot.
std::string normalize_host(std::string_view host);
// Whether `host` (normalized) is matched by the rule's name (ports aside).
bool host_matches(const AllowRule& rule, std::string_view host);
// Whether the environment allows `host` (normalized) on `port`.
bool environment_allows(const Environment& environment, std::string_view host, std::uint16_t port);
// Letters, digits, '-' and '_' in dot-separated labels of 1 to 63, at most 253 in all (lowercase).
bool valid_dns_name(std::string_view name);
// Splits "host:port" / "[v6]:port"; false when there is no port.
bool split_host_port(std::string_view text, std::string* host, std::string* port);

}  // namespace perimeter::egressgateway
