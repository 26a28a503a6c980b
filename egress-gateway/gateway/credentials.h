#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace perimeter::egressgateway {

// Who a CONNECT comes from, read from a verified credential (docs/egress-gateway.md,
// "Credentials"): user "<namespace>~<name>~<session id>", password the lowercase hex
// HMAC-SHA256(key, user).
struct SessionIdentity {
  std::string environment;  // "<namespace>/<name>"
  std::string session;
};

struct CredentialCheck {
  std::optional<SessionIdentity> identity;
  // When identity is empty: missing, not_basic, malformed_base64, no_colon, bad_user,
  // bad_signature. Never echoes the credential.
  std::string failure;
};

// The password the operator issues for `user`.
std::string sign_user(std::string_view key, std::string_view user);

// Verifies a Proxy-Authorization header's value (empty when the header is absent). The signature
// is compared in constant time.
CredentialCheck verify_proxy_authorization(std::string_view header_value, std::string_view key);

}  // namespace perimeter::egressgateway
