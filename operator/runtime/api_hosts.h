#pragma once

// Where a controller may send a credential: the API origins the operator's installer allowed
// (--allowed-api-hosts). Whoever may create a resource chooses its API URL; checking it against
// this list keeps the operator from sending a credential to anyone's server.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::runtime {

// scheme://host[:port] of an http(s) URL, host lower-cased, port made explicit.
struct ApiOrigin {
  std::string scheme;
  std::string host;  // without brackets for IPv6
  int port = 0;

  std::string str() const;
  bool operator==(const ApiOrigin&) const = default;
};

// Parses an absolute http or https URL. Refuses (nullopt, and *error says why) what a browser
// might read differently from a person: user info ("https://api.anthropic.com@evil"), an empty
// or malformed host or port, whitespace, backslashes, percent-escapes in the host.
std::optional<ApiOrigin> parse_api_origin(std::string_view url, std::string* error = nullptr);

// The API origins the operator may send credentials to (--allowed-api-hosts).
class ApiHostAllowList {
 public:
  // The official API only.
  static ApiHostAllowList official();
  // A comma-separated list of origins ("https://api.anthropic.com,http://127.0.0.1:8080"); an
  // origin with a path, or that does not parse, is std::invalid_argument naming it.
  static ApiHostAllowList parse(std::string_view list);

  bool allows(const ApiOrigin& origin) const;
  // "https://api.anthropic.com, http://127.0.0.1:8080", for messages.
  std::string describe() const;

 private:
  std::vector<ApiOrigin> origins_;
};

}  // namespace perimeter::runtime
