#include "controllers/agentenvironment/egress_gateway_controller.h"

#include "core/base64.h"
#include "kube/api_error.h"
#include "pki/hmac.h"
#include "runtime/desired_state.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// The gateway refuses a shorter key (docs/egress-gateway.md).
constexpr size_t kMinimumKeyBytes = 32;

// The key a Secret holds, decoded; empty if it holds none.
std::string key_in(const json& secret) {
  const auto data = secret.value("data", json::object());
  std::string key;
  if (!data.contains(kEgressGatewayKeyField) || !data[kEgressGatewayKeyField].is_string() ||
      !base64_decode_any(data[kEgressGatewayKeyField].get<std::string>(), &key)) {
    return {};
  }
  return key;
}

std::string read_key(const json& secret, const EgressGatewaySettings& gateway) {
  std::string key = key_in(secret);
  if (key.size() < kMinimumKeyBytes) {
    throw std::invalid_argument(
        "Secret " + gateway.namespace_ + "/" + gateway.key_secret_name() + " has no key \"" +
        kEgressGatewayKeyField + "\" of at least " + std::to_string(kMinimumKeyBytes) +
        " bytes; the egress gateway would refuse it. Delete the Secret to have the operator make "
        "one, or put such a key in it");
  }
  return key;
}

}  // namespace

std::string load_or_create_egress_gateway_key(kube::ResourceClient& secrets,
                                              const EgressGatewaySettings& gateway) {
  try {
    return read_key(secrets.get(gateway.namespace_, gateway.key_secret_name()), gateway);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
  const std::string key = pki::random_key_hex(kMinimumKeyBytes);
  try {
    secrets.create(gateway.namespace_, build_egress_gateway_key_secret(gateway, key));
    return key;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
  }
  // The other replica made it first: use its key.
  return read_key(secrets.get(gateway.namespace_, gateway.key_secret_name()), gateway);
}

EgressGatewayReconciler::EgressGatewayReconciler(EgressGatewayStores stores,
                                                 EgressGatewayClients clients,
                                                 EgressGatewaySettings gateway, std::string key,
                                                 EgressGatewayScope scope, Logger logger)
    : stores_(stores),
      clients_(clients),
      gateway_(std::move(gateway)),
      key_(std::move(key)),
      scope_(std::move(scope)),
      logger_(std::move(logger)) {}

std::string EgressGatewayReconciler::desired_config() const {
  std::vector<AgentEnvironment> served;
  for (const auto& object : stores_.environments.list()) {
    AgentEnvironment env;
    try {
      env = parse_agent_environment(*object);
    } catch (const std::exception&) {
      continue;  // its own reconcile reports the spec; it runs no session
    }
    if (scope_.session_namespaces && scope_.session_namespaces->count(env.namespace_) == 0) {
      continue;
    }
    // An API host the operator may not send keys to gets no session, so no egress either.
    const auto api = runtime::parse_api_origin(env.api_base_url);
    if (!api || !scope_.allowed_api_hosts.allows(*api)) continue;
    served.push_back(std::move(env));
  }
  return render_egress_gateway_config(gateway_, std::move(served));
}

void EgressGatewayReconciler::ensure(kube::ResourceClient& client, runtime::Store& store,
                                     const json& desired, bool drifted) {
  const std::string name = desired["metadata"]["name"];
  if (!drifted) {
    const auto cached = store.get(gateway_.namespace_ + "/" + name);
    if (cached && runtime::json_contains(*cached, desired)) return;
  }
  client.apply(gateway_.namespace_, desired, {scope_.field_manager, true});
  logger_.info("applied the egress gateway's " + desired["kind"].get<std::string>(),
               {{"name", gateway_.namespace_ + "/" + name}});
}

runtime::ReconcileResult EgressGatewayReconciler::reconcile(const kube::ObjectKey&) {
  ensure(clients_.config_maps, stores_.config_maps,
         build_egress_gateway_config_map(gateway_, desired_config()), false);
  const auto secret = stores_.secrets.get(gateway_.namespace_ + "/" + gateway_.key_secret_name());
  const bool key_drifted = !secret || key_in(*secret) != key_;
  if (key_drifted) {
    // The key this process signs sessions with: a Secret deleted or changed by hand is put back,
    // or the gateway would refuse every running session's credential at its next reload.
    ensure(clients_.secrets, stores_.secrets, build_egress_gateway_key_secret(gateway_, key_),
           true);
  }
  ensure(clients_.network_policies, stores_.network_policies,
         build_egress_gateway_network_policy(gateway_), false);
  ensure(clients_.services, stores_.services, build_egress_gateway_service(gateway_), false);
  ensure(clients_.deployments, stores_.deployments, build_egress_gateway_deployment(gateway_),
         false);
  return runtime::ReconcileResult::done();
}

namespace {

class EgressGatewayController final : public runtime::ManagedController {
 public:
  EgressGatewayController(EgressGatewayClients clients, EgressGatewaySettings gateway,
                          std::string key, EgressGatewayScope scope,
                          runtime::RuntimeMetrics& runtime_metrics, Logger logger)
      : clients_(clients),
        gateway_(std::move(gateway)),
        key_(std::move(key)),
        scope_(std::move(scope)),
        runtime_metrics_(runtime_metrics),
        logger_(std::move(logger)) {}

  std::string name() const override { return "egressgateway"; }

  void setup(runtime::SharedCache& cache) override {
    runtime::InformerOptions environment_options;
    environment_options.ns = scope_.watch_namespace;  // the AgentEnvironment controller's informer
    runtime::Informer& environments = cache.informer(clients_.environments, environment_options);
    // The gateway's own objects, by name: RBAC grants them by name too (resourceNames), so the
    // operator reads no other Secret of its namespace (Helm's release Secrets live there).
    runtime::InformerOptions own;
    own.ns = gateway_.namespace_;
    own.field_selector = "metadata.name=" + gateway_.name;
    runtime::InformerOptions key_secret = own;
    key_secret.field_selector = "metadata.name=" + gateway_.key_secret_name();
    runtime::Informer& config_maps = cache.informer(clients_.config_maps, own);
    runtime::Informer& secrets = cache.informer(clients_.secrets, key_secret);
    runtime::Informer& deployments = cache.informer(clients_.deployments, own);
    runtime::Informer& services = cache.informer(clients_.services, own);
    runtime::Informer& policies = cache.informer(clients_.network_policies, own);
    reconciler_ = std::make_unique<EgressGatewayReconciler>(
        EgressGatewayStores{environments.store(), config_maps.store(), secrets.store(),
                            deployments.store(), services.store(), policies.store()},
        clients_, gateway_, key_, scope_, logger_);
    runtime::ControllerOptions options;
    options.workers = 1;  // one key
    controller_ = std::make_unique<runtime::Controller>(
        name(), *reconciler_, std::move(options), runtime_metrics_, logger_.child("controller"));
    const std::string key = reconciler_->key();
    const auto to_gateway = [key](const json&) { return std::vector<std::string>{key}; };
    // Any environment event (a status write too: the pass then finds nothing to write).
    controller_->watch_mapped(environments, to_gateway);
    for (runtime::Informer* informer :
         {&config_maps, &secrets, &deployments, &services, &policies}) {
      controller_->watch_mapped(*informer, to_gateway);
    }
  }

  void start() override {
    controller_->start();
    controller_->queue().add(reconciler_->key());  // with no environment yet, still deployed
  }
  void stop() override { controller_->stop(); }

 private:
  EgressGatewayClients clients_;
  EgressGatewaySettings gateway_;
  std::string key_;
  EgressGatewayScope scope_;
  runtime::RuntimeMetrics& runtime_metrics_;
  Logger logger_;
  std::unique_ptr<EgressGatewayReconciler> reconciler_;
  std::unique_ptr<runtime::Controller> controller_;
};

}  // namespace

runtime::ControllerFactory egress_gateway_controller(EgressGatewayClients clients,
                                                     EgressGatewaySettings gateway, std::string key,
                                                     EgressGatewayScope scope,
                                                     runtime::RuntimeMetrics& runtime_metrics,
                                                     Logger logger) {
  return [=, &runtime_metrics]() {
    return std::make_unique<EgressGatewayController>(clients, gateway, key, scope, runtime_metrics,
                                                     logger);
  };
}

}  // namespace perimeter::agentenvironment
