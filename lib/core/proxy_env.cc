#include "core/proxy_env.h"

#include <algorithm>
#include <cctype>

#include "core/base64.h"
#include "core/strings.h"

namespace perimeter {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool all_digits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 percent-decoding; nullopt on a '%' not followed by two hex digits.
std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int high = hex_value(text[i + 1]);
    const int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return out;
}

// "host", "host:port", "[v6]" or "[v6]:port" split; false when brackets do not close or the
// port is not a number.
bool split_host_port(std::string_view authority, std::string* host, std::string* port) {
  std::string_view rest;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    *host = std::string(authority.substr(1, close - 1));
    rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
  } else if (std::count(authority.begin(), authority.end(), ':') > 1) {
    *host = std::string(authority);  // a bare IPv6 address: no port possible
  } else {
    const std::size_t colon = authority.find(':');
    *host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) rest = authority.substr(colon);
  }
  port->clear();
  if (!rest.empty()) {
    *port = std::string(rest.substr(1));
    if (!all_digits(*port)) return false;
  }
  return true;
}

std::string bracketed(const std::string& host) {
  return host.find(':') == std::string::npos ? host : "[" + host + "]";
}

// `text` with its userinfo, which may hold the password, replaced: for error messages.
std::string without_userinfo(std::string_view text, std::size_t scheme_end) {
  const std::size_t at = text.rfind('@');
  if (at == std::string_view::npos) return std::string(text);
  const std::size_t userinfo_start =
      scheme_end == std::string_view::npos || scheme_end > at ? 0 : scheme_end + 3;
  return std::string(text.substr(0, userinfo_start)) + "<redacted>" + std::string(text.substr(at));
}

}  // namespace

std::string ProxyUrl::authority() const {
  return bracketed(host) + ":" + port;
}

std::optional<std::string> ProxyUrl::authorization() const {
  if (!username) return std::nullopt;
  return "Basic " + base64_encode(*username + ":" + password);
}

std::string ProxyUrl::redacted() const {
  return "http://" + (username ? "<redacted>@" : std::string()) + authority();
}

ProxyUrl parse_proxy_url(std::string_view text) {
  std::string_view rest = text;
  const std::size_t scheme_end = text.find("://");
  const std::string shown = without_userinfo(text, scheme_end);
  auto refuse = [&shown](const std::string& why) {
    return ProxyConfigError("proxy URL '" + shown + "' " + why);
  };
  if (scheme_end != std::string_view::npos) {
    const std::string scheme = lower(text.substr(0, scheme_end));
    if (scheme != "http") {
      throw refuse("has scheme '" + scheme + "': only http:// proxies are supported");
    }
    rest = text.substr(scheme_end + 3);
  }
  // The path, query and fragment say nothing to a proxy; httpx ignores them too.
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  ProxyUrl url;
  if (const std::size_t userinfo_end = authority.rfind('@');
      userinfo_end != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, userinfo_end);
    const std::size_t colon = userinfo.find(':');
    auto username = percent_decode(userinfo.substr(0, colon));
    auto password = colon == std::string_view::npos ? std::optional<std::string>("")
                                                    : percent_decode(userinfo.substr(colon + 1));
    if (!username || !password) throw refuse("has a malformed %-escape in its user information");
    url.username = std::move(*username);
    url.password = std::move(*password);
    authority = authority.substr(userinfo_end + 1);
  }
  if (!split_host_port(authority, &url.host, &url.port)) {
    throw refuse("has a malformed host or port");
  }
  if (url.host.empty()) throw refuse("has no host");
  if (url.host.find_first_of(" \t%") != std::string::npos) {
    throw refuse("has a malformed host");
  }
  if (url.port.empty()) url.port = "80";
  if (url.port.size() > 5 || std::stoi(url.port) < 1 || std::stoi(url.port) > 65535) {
    throw refuse("has a port out of range");
  }
  return url;
}

NoProxy::NoProxy(std::string_view list) {
  for (const std::string& item : split_commas(list)) {
    if (item == "*") {
      all_ = true;
      continue;
    }
    Entry entry;
    std::string text = lower(item);
    // A range ("10.0.0.0/8", "fd00::/8") carries no port.
    if (text.find('/') != std::string::npos) {
      entry.cidr = Cidr::parse(text);
      if (entry.cidr) entries_.push_back(std::move(entry));
      continue;
    }
    std::string host;
    if (!split_host_port(text, &host, &entry.port)) continue;
    if (parse_ip_address(host)) {
      entry.cidr = Cidr::parse(host);
    } else {
      if (host.rfind("*.", 0) == 0) host.erase(0, 1);
      while (!host.empty() && host.front() == '.') host.erase(0, 1);
      while (!host.empty() && host.back() == '.') host.pop_back();
      if (host.empty()) continue;
      entry.domain = std::move(host);
    }
    entries_.push_back(std::move(entry));
  }
}

bool NoProxy::excludes(std::string_view host, std::string_view port) const {
  if (all_) return true;
  std::string name = lower(host);
  while (!name.empty() && name.back() == '.') name.pop_back();
  const bool is_address = parse_ip_address(name).has_value();
  for (const Entry& entry : entries_) {
    if (!entry.port.empty() && entry.port != port) continue;
    if (entry.cidr) {
      if (is_address && entry.cidr->contains(name)) return true;
      continue;
    }
    if (is_address) continue;
    if (name == entry.domain) return true;
    if (name.size() > entry.domain.size() && name.ends_with(entry.domain) &&
        name[name.size() - entry.domain.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

const ProxyUrl* ProxyEnvironment::proxy_for(bool tls, std::string_view host,
                                            std::string_view port) const {
  const std::optional<ProxyUrl>& proxy = tls ? https : http;
  if (!proxy || no_proxy.excludes(host, port)) return nullptr;
  return &*proxy;
}

ProxyEnvironment load_proxy_environment(
    const std::function<std::optional<std::string>(const char* name)>& env) {
  struct Setting {
    std::string name;  // the variable the value came from
    std::string value;
  };
  // The lower-case name wins; set to "" it unsets the variable, as in Python's urllib.
  auto read = [&env](const std::string& lower_name) -> std::optional<Setting> {
    std::string upper_name = lower_name;
    std::transform(upper_name.begin(), upper_name.end(), upper_name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    std::optional<std::string> value = env(lower_name.c_str());
    std::string name = lower_name;
    if (!value) {
      value = env(upper_name.c_str());
      name = upper_name;
    }
    if (!value || value->empty()) return std::nullopt;
    return Setting{name, *value};
  };
  auto proxy = [&read](const std::string& lower_name) -> std::optional<ProxyUrl> {
    const std::optional<Setting> setting = read(lower_name);
    if (!setting) return std::nullopt;
    try {
      return parse_proxy_url(setting->value);
    } catch (const ProxyConfigError& error) {
      throw ProxyConfigError(setting->name + ": " + error.what());
    }
  };
  ProxyEnvironment out;
  const std::optional<ProxyUrl> all = proxy("all_proxy");
  out.https = proxy("https_proxy");
  if (!out.https) out.https = all;
  out.http = proxy("http_proxy");
  if (!out.http) out.http = all;
  const std::optional<Setting> no_proxy = read("no_proxy");
  if (no_proxy) out.no_proxy = NoProxy(no_proxy->value);
  return out;
}

}  // namespace perimeter
