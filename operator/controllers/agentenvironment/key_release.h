#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controllers/agentenvironment/agent_environment.h"

namespace perimeter::agentenvironment {

// Whoever may create an AgentEnvironment chooses its apiBaseUrl and names a Secret of the
// namespace as its key; the operator then sends that Secret's value as a Bearer token. Two checks
// keep it from being a confused deputy: the host must be one the operator's installer allowed,
// and the Secret must have been marked for Perimeter by someone who may write Secrets. Until
// both hold, no byte of the Secret leaves the operator.

// The label that marks a Secret as an environment key Perimeter may send.
inline constexpr std::string_view kLabelEnvironmentKey = "perimeter.dev/environment-key";
// Optional: the environment ids (comma-separated) the marked key may be sent for.
inline constexpr std::string_view kAnnotationEnvironmentIds = "perimeter.dev/environment-ids";

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

// The API origins the operator may send environment keys to (--allowed-api-hosts).
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

// Why a key may not be sent, in a condition's terms: a CamelCase reason and a message that tells
// the user what to do.
struct KeyRefusal {
  std::string reason;
  std::string message;
};

// The first half: is env.apiBaseUrl an allowed origin?
std::optional<KeyRefusal> check_api_host(const AgentEnvironment& env,
                                         const ApiHostAllowList& allowed);

// The second half: is the Secret (as read from the API) marked for Perimeter, and, when it names
// environment ids, for this environment?
std::optional<KeyRefusal> check_key_secret(const nlohmann::json& secret,
                                           const AgentEnvironment& env);

}  // namespace perimeter::agentenvironment
