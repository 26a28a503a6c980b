#include "controllers/mcptunnel/controller_setup.h"

#include "runtime/controller.h"

namespace perimeter::mcptunnel {
namespace {

class McpTunnelController final : public runtime::ManagedController {
 public:
  McpTunnelController(ControllerClients clients, ControllerSettings settings,
                      runtime::EventRecorder& events, TunnelsApiFactory& api_factory,
                      TunnelMetrics& metrics, runtime::RuntimeMetrics& runtime_metrics,
                      Logger logger)
      : clients_(clients),
        settings_(std::move(settings)),
        events_(events),
        api_factory_(api_factory),
        metrics_(metrics),
        runtime_metrics_(runtime_metrics),
        logger_(std::move(logger)) {}

  std::string name() const override { return "mcptunnel"; }

  void setup(runtime::SharedCache& cache) override {
    runtime::InformerOptions tunnel_options;
    tunnel_options.ns = settings_.watch_namespace;
    tunnel_options.transform = runtime::strip_managed_fields;
    runtime::Informer& tunnels = cache.informer(clients_.tunnels, tunnel_options);

    // Services and gateway Deployments: cluster-wide, or one informer per namespace that may hold
    // McpTunnels (RBAC grants nothing cluster-wide then), each kind filling one store.
    const auto namespaces = runtime::namespaces_to_watch(settings_.watch_namespace,
                                                         settings_.reconciler.tunnel_namespaces);
    runtime::InformerOptions service_options;
    service_options.transform = runtime::strip_managed_fields;
    auto services = cache.informers(clients_.services, namespaces, service_options);
    runtime::InformerOptions deployment_options;
    deployment_options.label_selector =
        "app.kubernetes.io/managed-by=perimeter,app.kubernetes.io/name=mcp-tunnel-gateway";
    deployment_options.transform = runtime::strip_managed_fields;
    auto deployments = cache.informers(clients_.deployments, namespaces, deployment_options);
    service_store_ = services.store;
    deployment_store_ = deployments.store;

    reconciler_ = std::make_unique<McpTunnelReconciler>(
        ReconcilerDependencies{tunnels.store(), *service_store_, *deployment_store_,
                               clients_.tunnels, clients_.secrets, clients_.config_maps,
                               clients_.deployments, clients_.network_policies,
                               clients_.disruption_budgets, events_, api_factory_, metrics_,
                               SystemClock::instance(), logger_.child("mcptunnel")},
        settings_.reconciler);
    runtime::ControllerOptions controller_options;
    controller_options.workers = settings_.workers;
    controller_ =
        std::make_unique<runtime::Controller>(name(), *reconciler_, std::move(controller_options),
                                              runtime_metrics_, logger_.child("controller"));
    // The controller's own status writes do not wake it; spec and metadata changes do.
    controller_->watch(tunnels, runtime::generation_or_metadata_changed);
    for (auto* informer : deployments.informers) controller_->watch_owned(*informer, kKind);
    // A Service appearing, changing or going wakes the McpTunnels of its namespace.
    runtime::Store& tunnel_store = tunnels.store();
    for (auto* informer : services.informers) {
      controller_->watch_mapped(*informer, [&tunnel_store](const nlohmann::json& service) {
        const std::string ns = service["metadata"].value("namespace", "");
        std::vector<std::string> keys;
        for (const auto& key : tunnel_store.keys()) {
          if (key.rfind(ns + "/", 0) == 0) keys.push_back(key);
        }
        return keys;
      });
    }
  }

  void start() override { controller_->start(); }
  void stop() override { controller_->stop(); }

 private:
  ControllerClients clients_;
  ControllerSettings settings_;
  runtime::EventRecorder& events_;
  TunnelsApiFactory& api_factory_;
  TunnelMetrics& metrics_;
  runtime::RuntimeMetrics& runtime_metrics_;
  Logger logger_;
  std::shared_ptr<runtime::Store> service_store_;
  std::shared_ptr<runtime::Store> deployment_store_;
  std::unique_ptr<McpTunnelReconciler> reconciler_;
  std::unique_ptr<runtime::Controller> controller_;
};

}  // namespace

runtime::ControllerFactory mcp_tunnel_controller(ControllerClients clients,
                                                 ControllerSettings settings,
                                                 runtime::EventRecorder& events,
                                                 TunnelsApiFactory& api_factory,
                                                 TunnelMetrics& metrics,
                                                 runtime::RuntimeMetrics& runtime_metrics,
                                                 Logger logger) {
  return [=, &events, &api_factory, &metrics, &runtime_metrics]() {
    return std::make_unique<McpTunnelController>(clients, settings, events, api_factory, metrics,
                                                 runtime_metrics, logger);
  };
}

}  // namespace perimeter::mcptunnel
