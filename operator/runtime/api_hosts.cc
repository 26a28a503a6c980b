#include "runtime/api_hosts.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "core/strings.h"

namespace perimeter::runtime {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && lower(text.substr(0, prefix.size())) == prefix;
}

// A DNS name of letters, digits and hyphens in non-empty dot-separated labels, or an IPv4 literal.
bool valid_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      if (label == 0 || label > 63) return false;
      label = 0;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(host[i]);
    if (!std::isalnum(c) && c != '-') return false;
    ++label;
  }
  return true;
}

std::optional<int> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  int port = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return std::nullopt;
  return port;
}

}  // namespace

std::string ApiOrigin::str() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = scheme + "://" + (v6 ? "[" + host + "]" : host);
  const int default_port = scheme == "https" ? 443 : 80;
  if (port != default_port) out += ":" + std::to_string(port);
  return out;
}

std::optional<ApiOrigin> parse_api_origin(std::string_view url, std::string* error) {
  const auto fail = [&](const std::string& why) -> std::optional<ApiOrigin> {
    if (error != nullptr) *error = why;
    return std::nullopt;
  };
  for (const char c : url) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte == 0x7f || c == '\\')
      return fail("it contains whitespace, a control character or a backslash");
  }
  ApiOrigin origin;
  std::string_view rest;
  if (starts_with_nocase(url, "https://")) {
    origin.scheme = "https";
    origin.port = 443;
    rest = url.substr(8);
  } else if (starts_with_nocase(url, "http://")) {
    origin.scheme = "http";
    origin.port = 80;
    rest = url.substr(7);
  } else {
    return fail("it is not an http:// or https:// URL");
  }
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos)
    return fail("it has user info before the host ('@')");
  if (authority.empty()) return fail("it has no host");
  std::string_view host = authority, port_text;
  bool has_port = false;
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("its IPv6 host has no closing ']'");
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("something other than a port follows its IPv6 host");
      port_text = after.substr(1);
      has_port = true;
    }
    unsigned char buffer[16];
    if (inet_pton(AF_INET6, std::string(host).c_str(), buffer) != 1)
      return fail("its IPv6 host does not parse");
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
    if (!valid_host_name(host))
      return fail("its host '" + std::string(host) +
                  "' is not a DNS name or an IPv4 address (letters, digits, '-' and '.', no "
                  "empty label, no trailing dot)");
  }
  if (has_port) {
    const auto port = parse_port(port_text);
    if (!port) return fail("its port '" + std::string(port_text) + "' is not 1 to 65535");
    origin.port = *port;
  }
  origin.host = lower(host);
  return origin;
}

ApiHostAllowList ApiHostAllowList::official() {
  return parse("https://api.anthropic.com");
}

ApiHostAllowList ApiHostAllowList::parse(std::string_view list) {
  ApiHostAllowList allowed;
  for (const auto& item : split_commas(list)) {
    std::string why;
    const auto origin = parse_api_origin(item, &why);
    if (!origin) throw std::invalid_argument("allowed API host '" + item + "': " + why);
    const auto scheme_end = item.find("://") + 3;
    const auto path = item.find_first_of("/?#", scheme_end);
    if (path != std::string::npos && item.substr(path) != "/")
      throw std::invalid_argument("allowed API host '" + item +
                                  "' has a path: name an origin, scheme://host[:port]");
    allowed.origins_.push_back(*origin);
  }
  return allowed;
}

bool ApiHostAllowList::allows(const ApiOrigin& origin) const {
  return std::find(origins_.begin(), origins_.end(), origin) != origins_.end();
}

std::string ApiHostAllowList::describe() const {
  if (origins_.empty()) return "none";
  std::string out;
  for (const auto& origin : origins_) out += (out.empty() ? "" : ", ") + origin.str();
  return out;
}

}  // namespace perimeter::runtime
