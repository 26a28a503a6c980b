#include "proxy/guard_config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <charconv>
#include <set>
#include <stdexcept>

namespace perimeter::mcpguard {
namespace {

// A config error already prefixed with its field's path; caught once in parse_guard_config.
struct FieldError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw FieldError(path + ": " + message);
}

void reject_unknown_keys(const YAML::Node& node, const std::string& path,
                         std::initializer_list<std::string_view> known) {
  for (const auto& entry : node) {
    const std::string key = entry.first.Scalar();
    bool found = false;
    for (const auto name : known) found = found || key == name;
    if (!found) fail(path.empty() ? key : path + "." + key, "unknown field");
  }
}

const YAML::Node& expect_map(const YAML::Node& node, const std::string& path) {
  if (!node.IsMap()) fail(path, "must be a mapping");
  return node;
}

std::string read_string(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) fail(path, "must be a string");
  return node.Scalar();
}

bool read_bool(const YAML::Node& node, const std::string& path) {
  if (node.IsScalar() && node.Scalar() == "true") return true;
  if (node.IsScalar() && node.Scalar() == "false") return false;
  fail(path, "must be true or false");
}

std::int64_t read_integer(const YAML::Node& node, const std::string& path, std::int64_t min,
                          std::int64_t max) {
  if (!node.IsScalar()) fail(path, "must be an integer");
  const std::string& text = node.Scalar();
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) fail(path, "must be an integer");
  if (value < min || value > max) {
    fail(path, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return value;
}

double read_positive_number(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) fail(path, "must be a number");
  double value = 0;
  try {
    value = node.as<double>();
  } catch (const YAML::Exception&) {
    fail(path, "must be a number");
  }
  if (!(value > 0)) fail(path, "must be greater than 0");
  return value;
}

std::vector<std::string> read_string_list(const YAML::Node& node, const std::string& path) {
  if (node.IsNull()) return {};
  if (!node.IsSequence()) fail(path, "must be a list of strings");
  std::vector<std::string> items;
  for (std::size_t i = 0; i < node.size(); ++i) {
    const std::string item_path = path + "[" + std::to_string(i) + "]";
    std::string item = read_string(node[i], item_path);
    if (item.empty()) fail(item_path, "must not be empty");
    items.push_back(std::move(item));
  }
  return items;
}

bool is_dns_label(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (const char c : name) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return false;
    }
  }
  return name.front() != '-' && name.back() != '-';
}

bool is_port(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  int value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  return ec == std::errc() && end == port.data() + port.size() && value >= 0 && value <= 65535;
}

UpstreamAddress read_upstream(const std::string& text, const std::string& path) {
  UpstreamAddress upstream;
  std::string_view rest = text;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
    upstream.tls = true;
  } else {
    fail(path, "must be http(s)://host:port");
  }
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.find_first_of("/?#@") != std::string_view::npos) {
    fail(path, "must be http(s)://host:port, without a path, query or user");
  }
  if (!split_host_port(rest, &upstream.host, &upstream.port) || upstream.host.empty() ||
      upstream.port == "0") {
    fail(path, "must be http(s)://host:port with an explicit port");
  }
  upstream.authority = std::string(rest);
  return upstream;
}

AuditConfig read_audit(const YAML::Node& node, const std::string& path) {
  AuditConfig audit;
  if (!node || node.IsNull()) return audit;
  expect_map(node, path);
  reject_unknown_keys(node, path, {"level", "redact_keys"});
  if (const auto level = node["level"]) {
    const std::string text = read_string(level, path + ".level");
    if (text == "metadata") {
      audit.level = AuditLevel::kMetadata;
    } else if (text == "full") {
      audit.level = AuditLevel::kFull;
    } else {
      fail(path + ".level", "must be metadata or full, not \"" + text + "\"");
    }
  }
  if (const auto keys = node["redact_keys"]) {
    audit.redact_keys = read_string_list(keys, path + ".redact_keys");
  }
  return audit;
}

LimitsConfig read_limits(const YAML::Node& node, const std::string& path) {
  LimitsConfig limits;
  if (!node || node.IsNull()) return limits;
  expect_map(node, path);
  reject_unknown_keys(
      node, path,
      {"max_request_body_bytes", "max_json_reply_bytes", "max_sse_event_bytes",
       "header_timeout_seconds", "upstream_connect_timeout_seconds",
       "upstream_reply_timeout_seconds", "stream_idle_timeout_seconds", "shutdown_grace_seconds"});
  constexpr std::int64_t kMaxBytes = std::int64_t{1} << 40;
  constexpr std::int64_t kMaxSeconds = 365LL * 24 * 3600;
  auto bytes = [&](const char* key, std::size_t* out) {
    if (const auto value = node[key]) {
      *out = static_cast<std::size_t>(read_integer(value, path + "." + key, 1, kMaxBytes));
    }
  };
  auto seconds = [&](const char* key, std::chrono::seconds* out, std::int64_t min) {
    if (const auto value = node[key]) {
      *out = std::chrono::seconds(read_integer(value, path + "." + key, min, kMaxSeconds));
    }
  };
  bytes("max_request_body_bytes", &limits.max_request_body_bytes);
  bytes("max_json_reply_bytes", &limits.max_json_reply_bytes);
  bytes("max_sse_event_bytes", &limits.max_sse_event_bytes);
  seconds("header_timeout_seconds", &limits.header_timeout, 1);
  seconds("upstream_connect_timeout_seconds", &limits.upstream_connect_timeout, 1);
  seconds("upstream_reply_timeout_seconds", &limits.upstream_reply_timeout, 1);
  seconds("stream_idle_timeout_seconds", &limits.stream_idle_timeout, 0);
  seconds("shutdown_grace_seconds", &limits.shutdown_grace, 0);
  return limits;
}

RouteConfig read_route(const YAML::Node& node, const std::string& path) {
  expect_map(node, path);
  reject_unknown_keys(node, path,
                      {"name", "listen", "upstream", "upstream_ca_file", "upstream_system_cas",
                       "host_header", "allowed_cidrs", "tools", "rate_limit"});
  RouteConfig route;
  if (!node["name"]) fail(path + ".name", "required");
  route.name = read_string(node["name"], path + ".name");
  if (!is_dns_label(route.name)) {
    fail(path + ".name", "must be a DNS label (a-z, 0-9, '-'), not \"" + route.name + "\"");
  }
  if (!node["listen"]) fail(path + ".listen", "required");
  route.listen = read_string(node["listen"], path + ".listen");
  if (!split_host_port(route.listen, &route.listen_host, &route.listen_port) ||
      route.listen_host.empty()) {
    fail(path + ".listen", "must be host:port, not \"" + route.listen + "\"");
  }
  if (!node["upstream"]) fail(path + ".upstream", "required");
  route.upstream =
      read_upstream(read_string(node["upstream"], path + ".upstream"), path + ".upstream");
  if (const auto ca = node["upstream_ca_file"]) {
    route.upstream_ca_file = read_string(ca, path + ".upstream_ca_file");
    if (!route.upstream_ca_file.empty() && !route.upstream.tls) {
      fail(path + ".upstream_ca_file", "only for an https upstream");
    }
  }
  // The system's CAs are trusted when no CA file is named, unless said otherwise.
  route.upstream_system_cas = route.upstream_ca_file.empty();
  if (const auto system = node["upstream_system_cas"]) {
    route.upstream_system_cas = read_bool(system, path + ".upstream_system_cas");
    if (!route.upstream.tls) fail(path + ".upstream_system_cas", "only for an https upstream");
  }
  if (route.upstream.tls && route.upstream_ca_file.empty() && !route.upstream_system_cas) {
    fail(path + ".upstream_system_cas",
         "an https upstream must trust some CA: name upstream_ca_file or leave this true");
  }
  if (const auto mode = node["host_header"]) {
    const std::string text = read_string(mode, path + ".host_header");
    if (text == "upstream") {
      route.host_header = HostHeaderMode::kUpstream;
    } else if (text == "preserve") {
      route.host_header = HostHeaderMode::kPreserve;
    } else {
      fail(path + ".host_header", "must be upstream or preserve, not \"" + text + "\"");
    }
  }
  std::vector<std::string> cidrs = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"};
  if (const auto list = node["allowed_cidrs"]) {
    cidrs = read_string_list(list, path + ".allowed_cidrs");
  }
  for (std::size_t i = 0; i < cidrs.size(); ++i) {
    auto cidr = Cidr::parse(cidrs[i]);
    if (!cidr) {
      fail(path + ".allowed_cidrs[" + std::to_string(i) + "]",
           "not an IPv4 or IPv6 prefix: \"" + cidrs[i] + "\"");
    }
    route.allowed_cidrs.push_back(*cidr);
  }
  if (const auto tools = node["tools"]; tools && !tools.IsNull()) {
    expect_map(tools, path + ".tools");
    reject_unknown_keys(tools, path + ".tools", {"allow", "deny"});
    route.tools.allow = {"*"};
    if (const auto allow = tools["allow"]) {
      route.tools.allow = read_string_list(allow, path + ".tools.allow");
    }
    if (const auto deny = tools["deny"]) {
      route.tools.deny = read_string_list(deny, path + ".tools.deny");
    }
  } else {
    route.tools.allow = {"*"};
  }
  if (const auto limit = node["rate_limit"]; limit && !limit.IsNull()) {
    expect_map(limit, path + ".rate_limit");
    reject_unknown_keys(limit, path + ".rate_limit", {"requests_per_second", "burst"});
    RateLimitConfig rate{20, 40};
    if (const auto rps = limit["requests_per_second"]) {
      rate.requests_per_second =
          read_positive_number(rps, path + ".rate_limit.requests_per_second");
    }
    if (const auto burst = limit["burst"]) {
      rate.burst = read_positive_number(burst, path + ".rate_limit.burst");
      if (rate.burst < 1) fail(path + ".rate_limit.burst", "must be at least 1");
    }
    route.rate_limit = rate;
  }
  return route;
}

}  // namespace

const char* to_string(AuditLevel level) {
  return level == AuditLevel::kFull ? "full" : "metadata";
}

bool split_host_port(std::string_view text, std::string* host, std::string* port) {
  std::string_view host_part;
  std::string_view port_part;
  if (text.starts_with("[")) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host_part = text.substr(1, close - 1);
    port_part = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    host_part = text.substr(0, colon);
    if (host_part.find(':') != std::string_view::npos) return false;  // IPv6 needs brackets
    port_part = text.substr(colon + 1);
  }
  if (!is_port(port_part)) return false;
  *host = std::string(host_part);
  *port = std::string(port_part);
  return true;
}

GuardConfigResult parse_guard_config(std::string_view yaml_text) {
  GuardConfigResult result;
  try {
    const YAML::Node root = YAML::Load(std::string(yaml_text));
    if (!root.IsMap()) fail("(document)", "must be a mapping with routes");
    reject_unknown_keys(root, "", {"metrics_listen", "audit", "limits", "routes"});
    GuardConfig config;
    if (const auto metrics = root["metrics_listen"]) {
      config.metrics_listen = metrics.IsNull() ? "" : read_string(metrics, "metrics_listen");
      std::string host;
      std::string port;
      if (!config.metrics_listen.empty() && !split_host_port(config.metrics_listen, &host, &port)) {
        fail("metrics_listen", "must be host:port or \"\"");
      }
    }
    config.audit = read_audit(root["audit"], "audit");
    config.limits = read_limits(root["limits"], "limits");
    const auto routes = root["routes"];
    if (!routes || !routes.IsSequence() || routes.size() == 0) {
      fail("routes", "at least one route is required");
    }
    std::set<std::string> names;
    std::set<std::string> listens;
    for (std::size_t i = 0; i < routes.size(); ++i) {
      const std::string path = "routes[" + std::to_string(i) + "]";
      RouteConfig route = read_route(routes[i], path);
      if (!names.insert(route.name).second) {
        fail(path + ".name", "\"" + route.name + "\" is used by an earlier route");
      }
      if (route.listen_port != "0" && !listens.insert(route.listen).second) {
        fail(path + ".listen", "\"" + route.listen + "\" is used by an earlier route");
      }
      config.routes.push_back(std::move(route));
    }
    result.config = std::move(config);
  } catch (const FieldError& error) {
    result.error = error.what();
  } catch (const YAML::Exception& error) {
    result.error = "(document): not YAML: " + std::string(error.what());
  }
  return result;
}

std::optional<std::string> reload_refusal(const GuardConfig& current, const GuardConfig& next) {
  if (current.routes.size() != next.routes.size()) {
    return "the new config has " + std::to_string(next.routes.size()) + " routes, not " +
           std::to_string(current.routes.size()) + ": routes are fixed for the life of the process";
  }
  for (std::size_t i = 0; i < current.routes.size(); ++i) {
    const auto& before = current.routes[i];
    const auto& after = next.routes[i];
    if (before.name != after.name) {
      return "routes[" + std::to_string(i) + "].name changed from \"" + before.name + "\" to \"" +
             after.name + "\": routes are fixed for the life of the process";
    }
    if (before.listen != after.listen) {
      return "routes[" + std::to_string(i) + "].listen changed from \"" + before.listen +
             "\" to \"" + after.listen + "\": listeners are fixed for the life of the process";
    }
  }
  if (current.metrics_listen != next.metrics_listen) {
    return "metrics_listen changed: listeners are fixed for the life of the process";
  }
  return std::nullopt;
}

}  // namespace perimeter::mcpguard
