#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/base64.h"  // base64url_decode: JWT parts
#include "core/clock.h"

namespace perimeter::sim {

// Where an issuer's signing keys come from: a JSON Web Key Set ({"keys":[...]}). Behind an
// interface so unit tests hand the verifier a fixed set, and the server fetches the real one
// (OIDC discovery, then jwks_uri) from the local kube-apiserver.
class KeySource {
 public:
  virtual ~KeySource() = default;
  // The current key set, or nullopt with `error` set. `refresh` asks for a fresh copy (a token
  // names a key id the cached set does not have: the issuer may have rotated its keys).
  virtual std::optional<nlohmann::json> jwks(bool refresh, std::string* error) = 0;
};

// A key set given once (tests, or `POST /admin/federation_issuers` with inline keys).
class StaticKeySource final : public KeySource {
 public:
  explicit StaticKeySource(nlohmann::json jwks) : jwks_(std::move(jwks)) {}
  std::optional<nlohmann::json> jwks(bool, std::string*) override { return jwks_; }

 private:
  nlohmann::json jwks_;
};

// Fetches `<discovery_url>/.well-known/openid-configuration`, then its `jwks_uri`, over HTTPS
// trusting `ca_file` (the system store when empty). A kube-apiserver advertises jwks_uri under
// its issuer (https://kubernetes.default.svc.cluster.local/openid/v1/jwks), a name this host
// cannot resolve: a jwks_uri under `issuer` is fetched from `discovery_url`'s origin instead, as
// split-horizon DNS would. The discovery document's `issuer` must equal `issuer`. Cached; a
// refresh is at most one fetch per `min_refresh_interval`.
class DiscoveryKeySource final : public KeySource {
 public:
  DiscoveryKeySource(std::string issuer, std::string discovery_url, std::string ca_file,
                     Clock& clock,
                     std::chrono::seconds min_refresh_interval = std::chrono::seconds(10));
  std::optional<nlohmann::json> jwks(bool refresh, std::string* error) override;

 private:
  std::optional<nlohmann::json> fetch(std::string* error);

  std::string issuer_, discovery_url_, ca_file_;
  Clock& clock_;
  std::chrono::seconds min_refresh_interval_;
  std::mutex mutex_;
  std::optional<nlohmann::json> cached_;
  std::optional<Clock::TimePoint> last_fetch_;
  std::string last_error_;
};

// One HTTPS (or HTTP) GET, for the discovery fetches: status and body, or an exception with the
// reason. Blocking, with a timeout on each read and write.
struct HttpGetResult {
  int status = 0;
  std::string body;
};
HttpGetResult https_get(const std::string& url, const std::string& ca_file,
                        std::chrono::milliseconds timeout, const std::string& accept);

// What a verified assertion says.
struct VerifiedJwt {
  nlohmann::json header;
  nlohmann::json claims;
  std::string issuer;
  std::string subject;
};

// The outcome of verifying an assertion: the claims, or why it was refused (a sentence for the
// OAuth error_description).
struct JwtVerification {
  std::optional<VerifiedJwt> jwt;
  std::string error;
  bool ok() const { return jwt.has_value(); }
};

// Verifies a compact JWS the way an OIDC relying party does: RS256 or ES256 only (never
// `none`), the signature against the issuer's key named by `kid` (or the only key of the right
// type when the token names none), then `iss` exactly, `aud` (a string or an array) containing
// the audience, `exp` in the future and `nbf`/`iat` not in the future, each with `skew` leeway.
class OidcVerifier {
 public:
  OidcVerifier(Clock& clock, std::chrono::seconds skew = std::chrono::seconds(30))
      : clock_(clock), skew_(skew) {}
  JwtVerification verify(const std::string& token, const std::string& expected_issuer,
                         const std::string& audience, KeySource& keys) const;

 private:
  Clock& clock_;
  std::chrono::seconds skew_;
};

}  // namespace perimeter::sim
