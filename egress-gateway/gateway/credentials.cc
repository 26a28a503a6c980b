#include "gateway/credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/base64.h"
#include "core/strings.h"

namespace perimeter::egressgateway {

std::string sign_user(std::string_view key, std::string_view user) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(user.data()), user.size(), digest, &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(std::size_t{length} * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
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
  // Same length first (the expected length is public), then the bytes in constant time.
  if (password.size() != expected.size() ||
      CRYPTO_memcmp(password.data(), expected.data(), expected.size()) != 0) {
    return {std::nullopt, "bad_signature"};
  }
  SessionIdentity identity;
  identity.environment = std::string(user.substr(0, first)) + "/" +
                         std::string(user.substr(first + 1, second - first - 1));
  identity.session = std::string(user.substr(second + 1));
  return {std::move(identity), ""};
}

}  // namespace perimeter::egressgateway
