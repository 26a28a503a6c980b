#include "agentapi/work_secret.h"

#include <nlohmann/json.hpp>

namespace perimeter::agentapi {

bool base64_decode_any(std::string_view text, std::string* out) {
  out->clear();
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return false;  // no whole byte ends there
  unsigned buffer = 0;
  int bits = 0;
  for (char c : text) {
    int value;
    if (c >= 'A' && c <= 'Z') {
      value = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      value = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      value = c - '0' + 52;
    } else if (c == '-' || c == '+') {
      value = 62;
    } else if (c == '_' || c == '/') {
      value = 63;
    } else {
      return false;
    }
    buffer = (buffer << 6) | static_cast<unsigned>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return true;
}

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
