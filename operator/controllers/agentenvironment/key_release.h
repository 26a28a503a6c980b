#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controllers/agentenvironment/agent_environment.h"
#include "runtime/api_hosts.h"

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

using runtime::ApiHostAllowList;
using runtime::ApiOrigin;
using runtime::parse_api_origin;

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
