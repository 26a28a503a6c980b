#pragma once

#include <optional>
#include <set>
#include <string>

#include "controllers/agentenvironment/egress_gateway.h"
#include "core/log.h"
#include "kube/resource_client.h"
#include "runtime/api_hosts.h"
#include "runtime/controller.h"
#include "runtime/manager.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {

// The key Secret's HMAC key: read from the Secret when it exists (a key an administrator put
// there is kept), else made and stored. Both replicas of the operator call this at start; the one
// whose create loses reads the winner's. Throws with the reason if the Secret holds no usable
// key (under 32 bytes): sessions must not be signed with a key the gateway refuses.
std::string load_or_create_egress_gateway_key(kube::ResourceClient& secrets,
                                              const EgressGatewaySettings& gateway);

struct EgressGatewayClients {
  kube::ResourceClient& environments;
  kube::ResourceClient& config_maps;
  kube::ResourceClient& secrets;
  kube::ResourceClient& deployments;
  kube::ResourceClient& services;
  kube::ResourceClient& network_policies;
};

// What the gateway serves: which environments are listed in its configuration.
struct EgressGatewayScope {
  std::string watch_namespace;  // empty: every namespace
  // nullopt: every namespace; else only environments there (no runner pod runs elsewhere).
  std::optional<std::set<std::string>> session_namespaces;
  runtime::ApiHostAllowList allowed_api_hosts = runtime::ApiHostAllowList::official();
  std::string field_manager = "perimeter-operator";
};

// Reads from the shared cache: every AgentEnvironment, and the gateway's own objects.
struct EgressGatewayStores {
  runtime::Store& environments;
  runtime::Store& config_maps;
  runtime::Store& secrets;
  runtime::Store& deployments;
  runtime::Store& services;
  runtime::Store& network_policies;
};

// One key: the gateway. A pass renders the configuration from every AgentEnvironment in the
// cache and writes each of the gateway's objects only where the cached one differs, so a pass
// woken by an environment's status write costs no request; an object deleted or edited by hand
// is put back by the pass its watch event wakes.
class EgressGatewayReconciler final : public runtime::Reconciler {
 public:
  EgressGatewayReconciler(EgressGatewayStores stores, EgressGatewayClients clients,
                          EgressGatewaySettings gateway, std::string key, EgressGatewayScope scope,
                          Logger logger);
  runtime::ReconcileResult reconcile(const kube::ObjectKey& key) override;
  // The one key every event maps to.
  std::string key() const { return gateway_.namespace_ + "/" + gateway_.name; }
  // The configuration the cache's environments make now.
  std::string desired_config() const;

 private:
  void ensure(kube::ResourceClient& client, runtime::Store& store, const nlohmann::json& desired,
              bool drifted);

  EgressGatewayStores stores_;
  EgressGatewayClients clients_;
  EgressGatewaySettings gateway_;
  std::string key_;
  EgressGatewayScope scope_;
  Logger logger_;
};

// The controller as the Manager runs it (--runner-egress=gateway only).
runtime::ControllerFactory egress_gateway_controller(EgressGatewayClients clients,
                                                     EgressGatewaySettings gateway, std::string key,
                                                     EgressGatewayScope scope,
                                                     runtime::RuntimeMetrics& runtime_metrics,
                                                     Logger logger);

}  // namespace perimeter::agentenvironment
