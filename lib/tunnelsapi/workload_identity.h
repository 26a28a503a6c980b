#pragma once

// Workload identity federation: a projected Kubernetes ServiceAccount token exchanged for an
// Anthropic access token (RFC 7523 jwt-bearer grant), as the official SDK's
// oidcFederationProvider + TokenCache do it:
//
//   POST /v1/oauth/token
//   anthropic-beta: oauth-2025-04-20,oidc-federation-2026-04-01
//   {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": <the JWT>,
//    "federation_rule_id", "organization_id", "service_account_id"?, "workspace_id"?}
//   -> {"access_token", "expires_in", "token_type"?: "Bearer"}
//
// The assertion file is read again at every exchange (the kubelet rotates projected tokens). The
// access token is cached until `refresh_before` ahead of its expiry (at most half its lifetime
// ahead), and dropped when the API answers it with 401. When a refresh fails while the cached
// token still has over `kMinimumRemaining` to live, the cached token is served and the failure
// logged (the SDK's advisory window), so a short token-endpoint outage stops no call. The assertion
// and the access token go to no log, error message or metric; an OAuth error body keeps only RFC
// 6749's error fields (error, error_description, error_uri), since anything else may echo the
// assertion.

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "agentapi/api_error.h"
#include "agentapi/http_transport.h"
#include "agentapi/request_executor.h"
#include "core/backoff.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "tunnelsapi/access_token_source.h"

namespace perimeter::tunnelsapi {

inline constexpr std::string_view kJwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
inline constexpr std::string_view kTokenEndpoint = "/v1/oauth/token";
inline constexpr std::string_view kOAuthBeta = "oauth-2025-04-20";
inline constexpr std::string_view kFederationBeta = "oidc-federation-2026-04-01";
// A cached token is served after a failed refresh only while it has this long left.
inline constexpr std::chrono::seconds kMinimumRemaining{30};
// The token endpoint refuses larger assertions; refused here with a clear reason instead.
inline constexpr std::size_t kMaxAssertionBytes = 16 * 1024;

struct WorkloadIdentityConfig {
  std::string base_url = "https://api.anthropic.com";
  std::string federation_rule_id;  // fdrl_...
  std::string organization_id;
  std::string service_account_id;  // sent when not empty
  std::string workspace_id;        // sent when not empty; the minted token is scoped to it
  // The projected ServiceAccount token (its audience is the federation rule's).
  std::string assertion_file;
  // Called at every exchange instead of reading assertion_file when set (the operator requests a
  // short-lived ServiceAccount token with the rule's audience through the TokenRequest API).
  std::function<Secret()> assertion_source;
  std::string user_agent = "perimeter/0.1.0";
  std::chrono::milliseconds request_timeout{30000};
  // The exchange only mints a token, so it is repeatable: retried like the SDK's calls.
  int max_retries = 2;
  BackoffPolicy retry_backoff = agentapi::kSdkRetryBackoff;
  std::chrono::seconds refresh_before{120};
  // The assertion is a credential: only https, or http to a loopback host (the SDK's rule),
  // unless this is set (a simulator on another local address).
  bool allow_plain_http = false;
};

// The exchange cannot even be attempted: the assertion file is missing, empty or too large, or
// the endpoint is not https. A configuration problem, not a transient one.
class WorkloadIdentityError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The token endpoint answered non-2xx. `error()` is RFC 6749's code ("invalid_grant", ...) when
// the body had one; body()/raw_body() hold only the safe fields.
class OAuthError : public agentapi::ApiError {
 public:
  OAuthError(int status, std::string redacted_body, std::string request_id);
  const std::string& error() const { return error_; }
  const std::string& error_description() const { return error_description_; }
  const std::string& error_uri() const { return error_uri_; }

 private:
  std::string error_;
  std::string error_description_;
  std::string error_uri_;
};

// A token endpoint error body reduced to what may be shown: of a JSON object only the keys
// error, error_description and error_uri; other text truncated to 2000 characters; and
// `assertion`, wherever it still appears, replaced.
std::string redact_oauth_error_body(const std::string& body, const std::string& assertion);

class WorkloadIdentityTokenSource final : public AccessTokenSource {
 public:
  WorkloadIdentityTokenSource(WorkloadIdentityConfig config,
                              std::unique_ptr<agentapi::HttpTransport> transport, Clock& clock,
                              RandomSource& random, agentapi::Sleeper& sleeper,
                              agentapi::ApiMetrics* metrics = nullptr,
                              Logger logger = Logger("tunnelsapi.wif"));

  // Throws WorkloadIdentityError, OAuthError, agentapi::TransportError, agentapi::ProtocolError.
  Secret access_token() override;
  void invalidate(const Secret& rejected) override;

  // How many exchanges were made (for tests and debugging).
  int exchanges() const;

 private:
  struct Cached {
    Secret token;
    Clock::TimePoint refresh_at;
    Clock::TimePoint expires_at;
  };
  Secret read_assertion() const;
  Cached exchange();

  WorkloadIdentityConfig config_;
  std::unique_ptr<agentapi::HttpTransport> transport_;
  Clock& clock_;
  Logger logger_;
  agentapi::RequestExecutor executor_;
  // Held across an exchange, so concurrent callers wait for one exchange instead of each making
  // their own.
  mutable std::mutex mutex_;
  std::optional<Cached> cached_;  // guarded by mutex_
  int exchanges_ = 0;             // guarded by mutex_
};

}  // namespace perimeter::tunnelsapi
