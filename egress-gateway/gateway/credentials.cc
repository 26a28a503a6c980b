#include "gateway/credentials.h"

#include "core/base64.h"
#include "core/strings.h"
#include "pki/hmac.h"

namespace perimeter::egressgateway {

std::string sign_user(std::string_view key, std::string_view user) {
  return pki::hmac_sha256_hex(key, user);
}

CredentialCheck verify_proxy_authorization(std::string_view header_value, std::string_view key) {
  const std::string value = trim(header_value);
  if (value.empty()) return {std::nullopt, "missing"};
  const auto space = value.find(' ');
  if (space == std::string::npos) return {std::nullopt, "not_basic"};
  std::string scheme = value.substr(0, space);
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "basic") return {std::nullopt, "not_basic"};
  const std::string encoded = trim(std::string_view(value).substr(space + 1));
  // Basic uses the standard alphabet; the url-safe one is refused.
  if (encoded.empty() || encoded.find_first_of("-_") != std::string::npos) {
    return {std::nullopt, "malformed_base64"};
  }
  std::string decoded;
  if (!base64_decode_any(encoded, &decoded)) return {std::nullopt, "malformed_base64"};
  const auto colon = decoded.find(':');
  if (colon == std::string::npos) return {std::nullopt, "no_colon"};
  const std::string_view user = std::string_view(decoded).substr(0, colon);
  const std::string_view password = std::string_view(decoded).substr(colon + 1);
  // "<namespace>~<name>~<session>": exactly three non-empty parts.
  const auto first = user.find('~');
  const auto second = first == std::string_view::npos ? first : user.find('~', first + 1);
  if (first == std::string_view::npos || second == std::string_view::npos || first == 0 ||
      second == first + 1 || second + 1 == user.size() ||
      user.find('~', second + 1) != std::string_view::npos) {
    return {std::nullopt, "bad_user"};
  }
  const std::string expected = sign_user(key, user);
  // The expected length is public; the bytes are compared in constant time.
  if (!pki::constant_time_equal(password, expected)) {
    return {std::nullopt, "bad_signature"};
  }
  SessionIdentity identity;
  identity.environment = std::string(user.substr(0, first)) + "/" +
                         std::string(user.substr(first + 1, second - first - 1));
  identity.session = std::string(user.substr(second + 1));
  return {std::move(identity), ""};
}

}  // namespace perimeter::egressgateway
