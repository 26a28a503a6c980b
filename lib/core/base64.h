#pragma once

#include <string>
#include <string_view>

namespace perimeter {

// Standard base64 (RFC 4648 section 4), padded: Kubernetes Secret data, connector tokens.
std::string base64_encode(std::string_view bytes);
// base64url (RFC 4648 section 5) without padding: JWTs, JWKs, work secrets.
std::string base64url_encode(std::string_view bytes);
// Decodes either alphabet, padding optional, as the hosted API's secrets and kubeconfigs come in
// both. False (and *out unspecified) on any other character or a length no whole byte ends at.
bool base64_decode_any(std::string_view text, std::string* out);
// base64url alone (JWTs), padding optional: '+' and '/' are refused.
bool base64url_decode(std::string_view text, std::string* out);

}  // namespace perimeter
