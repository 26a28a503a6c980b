#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/cidr.h"

namespace perimeter {

// The proxy variables of a process environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY and
// their lower-case forms), read the way the official SDKs' HTTP clients and curl read them
// (docs/runner.md, "Egress through a proxy"). Parsing only: the transports connect.

class ProxyConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An `http://[user[:password]@]host[:port][/]` proxy. A URL without a scheme is read as http://,
// as httpx does. Only plain-HTTP proxies are supported: `https://` (TLS to the proxy) and
// `socks5://` are refused.
struct ProxyUrl {
  std::string host;  // no brackets around an IPv6 literal
  std::string port;  // explicit or 80
  // Percent-decoded. Set when the URL has userinfo, even an empty one.
  std::optional<std::string> username;
  std::string password;

  // "host:port", an IPv6 literal in brackets: what a CONNECT names and a socket dials.
  std::string authority() const;
  // The Proxy-Authorization value ("Basic base64(user:password)"); nullopt without userinfo.
  std::optional<std::string> authorization() const;
  // The URL with any password replaced: safe to log.
  std::string redacted() const;
};

// Throws ProxyConfigError with a message that never holds the URL's userinfo.
ProxyUrl parse_proxy_url(std::string_view text);

// A NO_PROXY list as curl reads it: comma-separated (spaces around items ignored), case
// insensitive. `*` alone excludes every host. A name matches itself and its subdomains, a leading
// dot (or `*.`) optional; an IPv4 or IPv6 address matches that address, a CIDR every address in
// it; `name:port` / `[v6]:port` match that port only.
class NoProxy {
 public:
  NoProxy() = default;
  explicit NoProxy(std::string_view list);

  // `host` as in a URL but without brackets; `port` the URL's explicit or default port.
  bool excludes(std::string_view host, std::string_view port) const;
  bool empty() const { return !all_ && entries_.empty(); }

 private:
  struct Entry {
    std::string domain;        // lower case, no leading or trailing dot; empty for an address
    std::optional<Cidr> cidr;  // an address (a /32 or /128) or a range
    std::string port;          // empty: any port
  };
  bool all_ = false;
  std::vector<Entry> entries_;
};

// The proxy to use for each URL scheme, and the hosts that go direct.
struct ProxyEnvironment {
  std::optional<ProxyUrl> https;  // for https:// URLs: HTTPS_PROXY, else ALL_PROXY
  std::optional<ProxyUrl> http;   // for http:// URLs: HTTP_PROXY, else ALL_PROXY
  NoProxy no_proxy;

  // nullptr: connect directly. `tls` is the URL's scheme (https).
  const ProxyUrl* proxy_for(bool tls, std::string_view host, std::string_view port) const;
};

// Reads the variables through `env` (nullopt: unset). For each one the lower-case name wins over
// the upper-case one, and a lower-case name set to "" unsets it (Python's urllib, which httpx
// uses); otherwise an empty value reads as unset. Throws ProxyConfigError naming the variable
// when a proxy URL does not parse.
ProxyEnvironment load_proxy_environment(
    const std::function<std::optional<std::string>(const char* name)>& env);

}  // namespace perimeter
