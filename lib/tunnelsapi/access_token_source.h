#pragma once

#include "tunnelsapi/secret.h"

namespace perimeter::tunnelsapi {

// Where the Tunnels API client gets its bearer token. Admin API keys are not accepted by the
// Tunnels API; the token comes from workload identity federation (WorkloadIdentityTokenSource)
// or, in tests, from a fixed value. Implementations are thread-safe: one source serves every
// reconcile of the McpTunnels that share a credential.
class AccessTokenSource {
 public:
  virtual ~AccessTokenSource() = default;
  // A token to send now: the cached one while it is fresh, else a new one (which may throw what
  // obtaining it throws).
  virtual Secret access_token() = 0;
  // The API answered 401 to `rejected`: forget it, so the next access_token() obtains a new one.
  // A no-op when `rejected` is no longer the cached token (another caller already refreshed).
  virtual void invalidate(const Secret& rejected) = 0;
};

// A token given once, for tests and for tokens obtained elsewhere; invalidate() does nothing.
class StaticAccessTokenSource final : public AccessTokenSource {
 public:
  explicit StaticAccessTokenSource(Secret token) : token_(std::move(token)) {}
  Secret access_token() override { return token_; }
  void invalidate(const Secret&) override {}

 private:
  Secret token_;
};

}  // namespace perimeter::tunnelsapi
