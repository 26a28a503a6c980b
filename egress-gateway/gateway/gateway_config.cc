#include "gateway/gateway_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include "core/cidr.h"

namespace perimeter::egressgateway {
namespace {

struct ConfigError {
  std::string message;
};

[[noreturn]] void fail(std::string message) {
  throw ConfigError{std::move(message)};
}

void refuse_unknown_keys(const YAML::Node& node, const std::set<std::string>& known,
                         const std::string& where) {
  for (const auto& entry : node) {
    const auto key = entry.first.as<std::string>();
    if (!known.contains(key))
      fail(std::string(where).append(": unknown field \"").append(key) + "\"");
  }
}

std::string required_string(const YAML::Node& node, const std::string& key,
                            const std::string& where) {
  const auto value = node[key];
  if (!value) fail(where + ": " + key + " is required");
  if (!value.IsScalar() || value.as<std::string>().empty()) {
    fail(where + ": " + key + " must be a non-empty string");
  }
  return value.as<std::string>();
}

std::int64_t positive_integer(const YAML::Node& node, const std::string& key, std::int64_t fallback,
                              std::int64_t max) {
  const auto value = node[key];
  if (!value) return fallback;
  std::int64_t number = 0;
  const auto text = value.IsScalar() ? value.as<std::string>() : std::string();
  const auto parsed = std::from_chars(text.data(), text.data() + text.size(), number);
  if (text.empty() || parsed.ec != std::errc() || parsed.ptr != text.data() + text.size() ||
      number < 1 || number > max) {
    fail(key + " must be a whole number from 1 to " + std::to_string(max));
  }
  return number;
}

void check_listen_address(const std::string& key, const std::string& value) {
  std::string host;
  std::string port;
  int number = -1;
  if (!split_host_port(value, &host, &port) || host.empty() ||
      std::from_chars(port.data(), port.data() + port.size(), number).ec != std::errc() ||
      number < 0 || number > 65535) {
    fail(key + " must be host:port (\"0.0.0.0:3128\"), got \"" + value + "\"");
  }
}

}  // namespace

bool valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t label_start = 0;
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      const auto label = name.substr(label_start, i - label_start);
      if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
        return false;
      }
      // An all-digit last label ("10.1", "2130706433") is an address to the resolver, not a name.
      if (i == name.size() && label.find_first_not_of("0123456789") == std::string_view::npos) {
        return false;
      }
      label_start = i + 1;
      continue;
    }
    const char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  }
  return true;
}

namespace {

AllowRule parse_rule(const YAML::Node& node, const std::string& where) {
  if (!node.IsMap()) fail(where + " must be a map with host and ports");
  refuse_unknown_keys(node, {"host", "ports"}, where);
  AllowRule rule;
  const auto written = required_string(node, "host", where);
  rule.host = normalize_host(written);
  if (parse_ip_address(rule.host) || (rule.host.starts_with('[') && rule.host.ends_with(']'))) {
    fail(where + ": host \"" + written +
         "\" is an IP address; addresses are allowed by the NetworkPolicy's CIDRs, not here");
  }
  std::string_view name = rule.host;
  if (name.starts_with("*.")) {
    rule.wildcard = true;
    name.remove_prefix(2);
    rule.suffix = "." + std::string(name);
    if (name.find('.') == std::string_view::npos) {
      fail(where + ": host \"" + written +
           "\" is too wide; a wildcard needs at least two labels after \"*.\"");
    }
  }
  if (!valid_dns_name(name)) {
    fail(where + ": host \"" + written +
         "\" is not a DNS name (letters, digits, '-', one optional leading \"*.\")");
  }
  const auto ports = node["ports"];
  if (!ports) {
    rule.ports = {443};
  } else {
    if (!ports.IsSequence() || ports.size() == 0) {
      fail(where + ": ports must be a non-empty list of port numbers");
    }
    for (const auto& port : ports) {
      const auto text = port.IsScalar() ? port.as<std::string>() : std::string();
      int number = 0;
      const auto parsed = std::from_chars(text.data(), text.data() + text.size(), number);
      if (text.empty() || parsed.ec != std::errc() || parsed.ptr != text.data() + text.size() ||
          number < 1 || number > 65535) {
        fail(std::string(where).append(": port \"").append(text) +
             "\" is not a number from 1 to 65535");
      }
      rule.ports.push_back(static_cast<std::uint16_t>(number));
    }
  }
  return rule;
}

GatewayConfig parse(std::string_view yaml, bool testing_allowed) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& error) {
    fail(std::string("not YAML: ") + error.what());
  }
  if (!root.IsMap()) fail("the config must be a YAML map");
  refuse_unknown_keys(root,
                      {"listen", "metrics_listen", "credentials_key_file", "connect_timeout_ms",
                       "client_hello_timeout_ms", "idle_timeout_ms", "max_connections",
                       "environments", "testing_allow_loopback_upstreams"},
                      "config");
  GatewayConfig config;
  config.listen = required_string(root, "listen", "config");
  check_listen_address("listen", config.listen);
  if (root["metrics_listen"]) {
    config.metrics_listen = required_string(root, "metrics_listen", "config");
    check_listen_address("metrics_listen", config.metrics_listen);
  }
  config.credentials_key_file = required_string(root, "credentials_key_file", "config");
  constexpr std::int64_t kDay = 24LL * 3600 * 1000;
  config.connect_timeout =
      std::chrono::milliseconds(positive_integer(root, "connect_timeout_ms", 10000, kDay));
  config.client_hello_timeout =
      std::chrono::milliseconds(positive_integer(root, "client_hello_timeout_ms", 10000, kDay));
  config.idle_timeout =
      std::chrono::milliseconds(positive_integer(root, "idle_timeout_ms", 300000, kDay));
  config.max_connections =
      static_cast<int>(positive_integer(root, "max_connections", 4096, 1000000));
  if (const auto testing = root["testing_allow_loopback_upstreams"]) {
    bool value = false;
    if (!testing.IsScalar() || !YAML::convert<bool>::decode(testing, value)) {
      fail("testing_allow_loopback_upstreams must be true or false");
    }
    if (value && !testing_allowed) {
      fail(std::string("testing_allow_loopback_upstreams is for the loopback test suite only; "
                       "it is refused unless ") +
           kTestingEnvVar + "=1");
    }
    config.testing_allow_loopback_upstreams = value;
  }
  const auto environments = root["environments"];
  if (!environments) fail("environments is required");
  if (!environments.IsSequence()) fail("environments must be a list");
  std::set<std::string> names;
  for (std::size_t i = 0; i < environments.size(); ++i) {
    const auto node = environments[i];
    const std::string where = "environments[" + std::to_string(i) + "]";
    if (!node.IsMap()) fail(where + " must be a map with name and allow");
    refuse_unknown_keys(node, {"name", "allow"}, where);
    Environment environment;
    environment.name = required_string(node, "name", where);
    const auto slash = environment.name.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == environment.name.size() ||
        environment.name.find('/', slash + 1) != std::string::npos ||
        environment.name.find('~') != std::string::npos) {
      fail(where + ": name \"" + environment.name +
           "\" must be \"<namespace>/<AgentEnvironment name>\"");
    }
    if (!names.insert(environment.name).second) {
      fail(where + ": environment \"" + environment.name + "\" is listed twice");
    }
    const auto allow = node["allow"];
    if (!allow) fail(where + ": allow is required (an empty list allows nothing)");
    if (!allow.IsSequence()) fail(where + ": allow must be a list");
    for (std::size_t j = 0; j < allow.size(); ++j) {
      environment.allow.push_back(
          parse_rule(allow[j], where + ".allow[" + std::to_string(j) + "]"));
    }
    config.environments.push_back(std::move(environment));
  }
  return config;
}

}  // namespace

const Environment* GatewayConfig::find_environment(std::string_view name) const {
  for (const auto& environment : environments) {
    if (environment.name == name) return &environment;
  }
  return nullptr;
}

ConfigParse parse_gateway_config(std::string_view yaml, bool testing_allowed) {
  try {
    return {parse(yaml, testing_allowed), ""};
  } catch (const ConfigError& error) {
    return {std::nullopt, error.message};
  } catch (const YAML::Exception& error) {
    return {std::nullopt, std::string("bad value: ") + error.what()};
  }
}

std::optional<std::string> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

SnapshotLoad load_gateway_snapshot(std::string_view yaml, bool testing_allowed) {
  auto parsed = parse_gateway_config(yaml, testing_allowed);
  if (!parsed.config) return {nullptr, parsed.error};
  auto key = read_whole_file(parsed.config->credentials_key_file);
  if (!key)
    return {nullptr,
            "credentials_key_file " + parsed.config->credentials_key_file + ": cannot read"};
  if (key->size() < kMinCredentialsKeyBytes) {
    return {nullptr, "credentials_key_file " + parsed.config->credentials_key_file + ": " +
                         std::to_string(key->size()) + " bytes, at least " +
                         std::to_string(kMinCredentialsKeyBytes) + " are needed"};
  }
  auto snapshot = std::make_shared<GatewaySnapshot>();
  snapshot->config = std::move(*parsed.config);
  snapshot->credentials_key = std::move(*key);
  return {std::move(snapshot), ""};
}

std::string normalize_host(std::string_view host) {
  std::string normalized(host);
  std::transform(normalized.begin(), normalized.end(), normalized.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (normalized.size() > 1 && normalized.back() == '.') normalized.pop_back();
  return normalized;
}

bool host_matches(const AllowRule& rule, std::string_view host) {
  if (!rule.wildcard) return host == rule.host;
  // At least one whole label before the suffix: "a.example.com", never ".example.com".
  return host.size() > rule.suffix.size() && host.ends_with(rule.suffix);
}

bool environment_allows(const Environment& environment, std::string_view host, std::uint16_t port) {
  for (const auto& rule : environment.allow) {
    if (host_matches(rule, host) &&
        std::find(rule.ports.begin(), rule.ports.end(), port) != rule.ports.end()) {
      return true;
    }
  }
  return false;
}

bool split_host_port(std::string_view text, std::string* host, std::string* port) {
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    *host = std::string(text.substr(0, close + 1));
    *port = std::string(text.substr(close + 2));
    return !port->empty();
  }
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || text.find(':') != colon) return false;
  *host = std::string(text.substr(0, colon));
  *port = std::string(text.substr(colon + 1));
  return !port->empty();
}

}  // namespace perimeter::egressgateway
