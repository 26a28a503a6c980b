#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "controllers/mcptunnel/credentials.h"
#include "controllers/mcptunnel/gateway.h"
#include "controllers/mcptunnel/mcp_tunnel.h"
#include "controllers/mcptunnel/tunnel_metrics.h"
#include "core/clock.h"
#include "core/log.h"
#include "kube/resource_client.h"
#include "runtime/api_hosts.h"
#include "runtime/controller.h"
#include "runtime/event_recorder.h"
#include "runtime/store.h"

namespace perimeter::mcptunnel {

// The finalizer that lets the operator retire the hosted tunnel (Archive) or say it is kept
// (Retain) before the McpTunnel goes. Manual McpTunnels have none: nothing outside the cluster.
inline constexpr const char* kFinalizer = "perimeter.dev/mcptunnel";
// The token Secret's annotation naming the token it holds (the API's token id), so a token
// rotated by an interrupted pass is recognised rather than rotated again.
inline constexpr const char* kAnnotationTokenId = "perimeter.dev/token-id";

struct ReconcilerDependencies {
  runtime::Store& tunnels;      // McpTunnel cache
  runtime::Store& services;     // Services of the namespaces that may hold McpTunnels
  runtime::Store& deployments;  // gateway Deployments
  kube::ResourceClient& tunnel_client;
  kube::ResourceClient& secret_client;
  kube::ResourceClient& config_map_client;
  kube::ResourceClient& deployment_client;
  kube::ResourceClient& network_policy_client;
  kube::ResourceClient& disruption_budget_client;
  runtime::EventRecorder& events;
  TunnelsApiFactory& api_factory;
  TunnelMetrics& metrics;
  Clock& clock;
  Logger logger;
};

struct ReconcilerOptions {
  std::string field_manager = "perimeter-operator";
  // The namespaces where McpTunnels are served (RBAC lets the operator write there); nullopt:
  // every namespace.
  std::optional<std::set<std::string>> tunnel_namespaces;
  runtime::ApiHostAllowList allowed_api_hosts = runtime::ApiHostAllowList::official();
  // The audiences the operator mints its ServiceAccount token for (--tunnel-audiences). Whoever
  // writes an McpTunnel picks the audience; without this list they could pick one the apiserver
  // itself accepts.
  std::set<std::string> allowed_audiences{"https://api.anthropic.com"};
  std::string cluster_domain = "cluster.local";
  // The perimeter-mcp-guard image for McpTunnels whose spec.guard.image is empty
  // (--mcp-guard-image): the build's default names an image only the local real node has.
  std::string default_guard_image = kDefaultGuardImage;
  // How long the retiring CA stays registered after the gateway's Secret moved to a certificate of
  // the new CA: the kubelet refreshes Secret volumes within about a minute, the proxy polls its
  // certificate file; only then may the old CA go.
  std::chrono::seconds ca_overlap{std::chrono::minutes(2)};
  // How long deletion with Archive keeps trying an unreachable API before it lets the McpTunnel
  // go (a Warning Event names the tunnel left active), so a namespace deletion never hangs.
  std::chrono::seconds archive_deadline{std::chrono::minutes(5)};
  // How often an McpTunnel is looked at when nothing changes (Secrets someone edited, the hosted
  // tunnel's state).
  std::chrono::seconds resync{std::chrono::minutes(5)};
};

// Converges one McpTunnel: the hosted tunnel (created once, or adopted), its connector token, its
// CA and server certificate, the gateway (ConfigMap, Deployment, NetworkPolicy, PDB), and the
// status with conditions that are true when read.
class McpTunnelReconciler final : public runtime::Reconciler {
 public:
  McpTunnelReconciler(ReconcilerDependencies deps, ReconcilerOptions options);
  runtime::ReconcileResult reconcile(const kube::ObjectKey& key) override;

 private:
  struct Pass;  // one reconcile's working state (reconciler.cc)

  runtime::ReconcileResult reconcile_managed(Pass& pass);
  runtime::ReconcileResult reconcile_manual(Pass& pass);
  runtime::ReconcileResult finalize(Pass& pass);
  // Why this resource's credentials may not be used (a host or audience the administrator did
  // not allow): {reason, message}, or nullopt. Checked before every use of the identity.
  std::optional<std::pair<std::string, std::string>> credentials_refusal(const McpTunnel& tunnel) const;
  void ensure_tunnel(Pass& pass);
  void ensure_token(Pass& pass);
  void ensure_certificates(Pass& pass);
  void resolve_routes(Pass& pass);
  void apply_gateway(Pass& pass);
  void observe_gateway(Pass& pass);
  // GuardEnforced: whether every gateway replica runs perimeter-mcp-guard with this generation's
  // listeners (policies then reach it by the mounted file).
  void observe_guard(Pass& pass, const nlohmann::json* deployment, bool rolled_out,
                     std::int64_t updated_replicas);
  void write_status(Pass& pass);
  bool add_finalizer(Pass& pass);
  void remove_finalizer(Pass& pass);
  nlohmann::json get_or_null(kube::ResourceClient& client, const std::string& ns,
                             const std::string& name);
  void apply(kube::ResourceClient& client, const std::string& ns, const nlohmann::json& object);

  // What the last complete pass verified with the Tunnels API for an McpTunnel. A pass within
  // `resync` of it, for the same generation (typically woken by the gateway Deployment's status),
  // reuses it instead of reading the tunnel and listing its certificates again: the API belongs
  // to the organization and every McpTunnel shares the operator's one identity.
  struct Verified {
    std::int64_t generation = 0;
    std::string tunnel_id;
    std::string domain;
    std::string ca_fingerprint;
    std::string registered_certificate_id;
    Clock::TimePoint at;
  };
  std::optional<Verified> fresh_verification(const Pass& pass);
  void remember(const Pass& pass);
  void forget(const std::string& key);

  ReconcilerDependencies deps_;
  ReconcilerOptions options_;
  std::mutex verified_mutex_;
  std::map<std::string, Verified> verified_;  // guarded by verified_mutex_
};

}  // namespace perimeter::mcptunnel
