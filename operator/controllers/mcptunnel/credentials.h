#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "agentapi/http_transport.h"
#include "agentapi/request_executor.h"
#include "controllers/mcptunnel/mcp_tunnel.h"
#include "core/log.h"
#include "kube/resource_client.h"
#include "tunnelsapi/access_token_source.h"
#include "tunnelsapi/tunnels_api.h"

namespace perimeter::mcptunnel {

// The ServiceAccount whose token the operator presents to the token endpoint: its own.
struct ServiceAccountRef {
  std::string ns;
  std::string name;
  std::string str() const { return ns + "/" + name; }
  // "namespace/name"; nullopt (and *error says why) when it is not that.
  static std::optional<ServiceAccountRef> parse(const std::string& text, std::string* error);
};

// Mints a short-lived ServiceAccount token for an audience (the TokenRequest API).
class ServiceAccountTokenRequester {
 public:
  virtual ~ServiceAccountTokenRequester() = default;
  virtual tunnelsapi::Secret request(const ServiceAccountRef& account, const std::string& audience,
                                     std::chrono::seconds lifetime) = 0;
};

// POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token. RBAC grants the operator this on its
// own ServiceAccount only.
class KubeServiceAccountTokenRequester final : public ServiceAccountTokenRequester {
 public:
  explicit KubeServiceAccountTokenRequester(kube::ResourceClient& service_accounts)
      : service_accounts_(service_accounts) {}
  tunnelsapi::Secret request(const ServiceAccountRef& account, const std::string& audience,
                             std::chrono::seconds lifetime) override;

 private:
  kube::ResourceClient& service_accounts_;
};

// The Tunnels API as one McpTunnel's credentials reach it.
class TunnelsApiFactory {
 public:
  virtual ~TunnelsApiFactory() = default;
  // A client for the resource's apiBaseUrl and workload identity. Throws CredentialsError when
  // the operator cannot even try (no identity configured).
  virtual std::unique_ptr<tunnelsapi::TunnelsApi> make(const McpTunnel& tunnel) = 0;
};

// The operator cannot obtain credentials for this resource, and retrying will not change that.
class CredentialsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WorkloadIdentitySettings {
  // The operator's ServiceAccount (--tunnels-service-account); nullopt: workload identity is not
  // configured and every WorkloadIdentity McpTunnel says so in its condition.
  std::optional<ServiceAccountRef> identity;
  std::chrono::seconds assertion_lifetime{600};
  // Plain http is allowed for a loopback token endpoint only (the SDK's rule); the local stack's
  // simulator listens on a bridge address, which this allows too.
  bool allow_plain_http = false;
  std::string user_agent = "perimeter/0.1.0";
};

// Real clients, all over one BeastTransport (one TLS context, one pool of kept-alive
// connections). McpTunnels with the same credential (API, rule, organization,
// service account, workspace, audience) share one token source, so they share one access token
// and one exchange per refresh.
class WorkloadIdentityApiFactory final : public TunnelsApiFactory {
 public:
  WorkloadIdentityApiFactory(WorkloadIdentitySettings settings,
                             ServiceAccountTokenRequester& tokens, agentapi::ApiMetrics& metrics,
                             Logger logger);
  std::unique_ptr<tunnelsapi::TunnelsApi> make(const McpTunnel& tunnel) override;

 private:
  tunnelsapi::AccessTokenSource& source_for(const McpTunnel& tunnel);

  WorkloadIdentitySettings settings_;
  ServiceAccountTokenRequester& tokens_;
  agentapi::ApiMetrics& metrics_;
  Logger logger_;
  agentapi::RealSleeper sleeper_;
  std::shared_ptr<agentapi::HttpTransport> transport_;
  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<tunnelsapi::AccessTokenSource>> sources_;  // guarded by mutex_
};

}  // namespace perimeter::mcptunnel
