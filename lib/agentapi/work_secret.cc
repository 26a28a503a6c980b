#include "agentapi/work_secret.h"

#include <nlohmann/json.hpp>

#include "core/base64.h"

namespace perimeter::agentapi {

WorkSecret decode_work_secret(std::string_view secret) {
  if (secret.empty()) throw SecretError("work secret is empty");
  std::string decoded;
  if (!base64_decode_any(secret, &decoded)) {
    throw SecretError("work secret is not base64url (" + std::to_string(secret.size()) +
                      " characters)");
  }
  const nlohmann::json payload = nlohmann::json::parse(decoded, nullptr, false);
  if (payload.is_discarded()) throw SecretError("work secret does not decode to JSON");
  if (!payload.is_object()) throw SecretError("work secret payload is not a JSON object");
  auto token = payload.find("sessions_token");
  if (token == payload.end() || !token->is_string() || token->get<std::string>().empty()) {
    throw SecretError("work secret payload has no sessions_token string");
  }
  WorkSecret result;
  result.sessions_token = token->get<std::string>();
  if (auto base = payload.find("api_base_url"); base != payload.end() && !base->is_null()) {
    if (!base->is_string()) throw SecretError("work secret api_base_url is not a string");
    result.api_base_url = base->get<std::string>();
  }
  return result;
}

}  // namespace perimeter::agentapi
