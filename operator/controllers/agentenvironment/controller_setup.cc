#include "controllers/agentenvironment/controller_setup.h"

#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/reconciler.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/session_workspace.h"
#include "runtime/controller.h"

namespace perimeter::agentenvironment {
namespace {

class AgentEnvironmentController final : public runtime::ManagedController {
 public:
  AgentEnvironmentController(ControllerClients clients, ControllerSettings settings,
                             runtime::EventRecorder& events, AgentApiFactory& api_factory,
                             OperatorMetrics& metrics, runtime::RuntimeMetrics& runtime_metrics,
                             Logger logger)
      : clients_(clients),
        settings_(std::move(settings)),
        events_(events),
        api_factory_(api_factory),
        metrics_(metrics),
        runtime_metrics_(runtime_metrics),
        logger_(std::move(logger)),
        session_objects_(clients_.secrets, clients_.pods) {
    if (clients_.persistent_volume_claims != nullptr) {
      workspaces_ = std::make_unique<KubeSessionWorkspaces>(*clients_.persistent_volume_claims,
                                                            clients_.pods);
    }
  }

  std::string name() const override { return "agentenvironment"; }

  void setup(runtime::SharedCache& cache) override {
    runtime::InformerOptions environment_options;
    environment_options.ns = settings_.watch_namespace;
    runtime::Informer& environments = cache.informer(clients_.environments, environment_options);

    // Runner pods: over every namespace, or one informer per namespace that opted in (RBAC
    // grants nothing cluster-wide then), all filling one store.
    const auto pod_namespaces =
        runtime::namespaces_to_watch(settings_.watch_namespace, settings_.session_namespaces);
    runtime::InformerOptions pod_options;
    pod_options.label_selector =
        "app.kubernetes.io/managed-by=perimeter,app.kubernetes.io/component=runner";
    pod_options.transform = trim_runner_pod;  // what the controller reads, nothing more
    pod_options.decode_filter = runner_pod_decode_filter();  // and only that built at all
    auto pods = cache.informers(clients_.pods, pod_namespaces, pod_options);
    pod_store_ = pods.store;
    census_ = std::make_unique<StoreRunnerPodCensus>(*pod_store_);
    // Before the cache starts: the listener indexes the pod store by token hash and is woken by
    // the pod informers' events.
    if (settings_.warm_assignment) {
      warm_listener_ = std::make_unique<WarmAssignmentListener>(
          *settings_.warm_assignment, pods.informers, *pod_store_, clients_.secrets, clients_.pods,
          logger_.child("assignment"));
    }
    // The runner pods' NetworkPolicies, in the same namespaces: one deleted or edited by hand
    // wakes its environment's reconcile, which puts it back.
    runtime::InformerOptions policy_options;
    policy_options.label_selector =
        "app.kubernetes.io/managed-by=perimeter,app.kubernetes.io/component=runner";
    auto policies = cache.informers(clients_.network_policies, pod_namespaces, policy_options);
    policy_store_ = policies.store;
    // Cilium mode: its policies too, so one deleted or opened by hand is put back at once.
    runtime::SharedCache::MultiNamespace cilium_policies;
    if (settings_.egress.mode == EgressMode::kCiliumFqdn) {
      if (clients_.cilium_network_policies == nullptr) {
        throw std::invalid_argument("Cilium egress mode needs a CiliumNetworkPolicy client");
      }
      cilium_policies =
          cache.informers(*clients_.cilium_network_policies, pod_namespaces, policy_options);
      cilium_policy_store_ = cilium_policies.store;
    }

    // Session workspaces, in the same namespaces: a claim that binds (or not) wakes its
    // environment, found by the exact name it carries (it is owned only under
    // whenEnvironmentDeleted: Delete).
    runtime::SharedCache::MultiNamespace claims;
    if (clients_.persistent_volume_claims != nullptr) {
      runtime::InformerOptions claim_options;
      claim_options.label_selector = "app.kubernetes.io/managed-by=perimeter," +
                                     std::string(kLabelComponent) + "=" +
                                     std::string(kWorkspaceComponent);
      claims = cache.informers(*clients_.persistent_volume_claims, pod_namespaces, claim_options);
      claim_store_ = claims.store;
    }

    ReconcilerOptions options;
    options.worker_id = settings_.worker_id;
    options.poll_threads = settings_.poll_threads;
    options.max_extra_poll_threads = settings_.max_extra_poll_threads;
    options.allowed_api_hosts = settings_.allowed_api_hosts;
    options.session_namespaces = settings_.session_namespaces;
    options.resync = settings_.resync;
    options.orphan_sweep = settings_.orphan_sweep;
    options.gate_sweep = settings_.gate_sweep;
    options.egress = settings_.egress;
    options.assignment_endpoint = warm_assignment_endpoint(settings_);
    options.assignment_peer = warm_assignment_peer(settings_);
    if (warm_listener_) {
      // The listener outlives the pollers' claims: stop() stops it first, and neither goes
      // before the controller is destroyed.
      options.hand_over_warm_pod = [listener = warm_listener_.get()](WarmHandOver hand_over) {
        listener->hand_over(std::move(hand_over));
      };
      options.warm_pod_waiting_nonce = [listener = warm_listener_.get()](const std::string& uid) {
        return listener->waiting_nonce(uid);
      };
    }
    reconciler_ = std::make_unique<AgentEnvironmentReconciler>(
        ReconcilerDependencies{environments.store(),
                               *pod_store_,
                               *policy_store_,
                               clients_.environments,
                               clients_.secrets,
                               clients_.pods,
                               clients_.network_policies,
                               events_,
                               api_factory_,
                               session_objects_,
                               *census_,
                               metrics_,
                               SystemClock::instance(),
                               SystemRandom::instance(),
                               logger_.child("agentenvironment"),
                               [this](const std::string& key) {
                                 if (controller_) controller_->queue().add(key);
                               },
                               cilium_policy_store_.get(),
                               clients_.cilium_network_policies,
                               clients_.config_maps,
                               claim_store_.get(),
                               workspaces_.get()},
        options);
    runtime::ControllerOptions controller_options;
    controller_options.workers = settings_.workers;
    controller_ =
        std::make_unique<runtime::Controller>(name(), *reconciler_, std::move(controller_options),
                                              runtime_metrics_, logger_.child("controller"));
    controller_->watch(environments, runtime::generation_or_metadata_changed);
    for (auto* informer : pods.informers) controller_->watch_owned(*informer, kKind);
    for (auto* informer : policies.informers) controller_->watch_owned(*informer, kKind);
    for (auto* informer : cilium_policies.informers) controller_->watch_owned(*informer, kKind);
    for (auto* informer : claims.informers) {
      controller_->watch_mapped(*informer, [](const nlohmann::json& claim) {
        const auto& metadata = claim["metadata"];
        const std::string environment = metadata.value("annotations", nlohmann::json::object())
                                            .value(std::string(kAnnotationEnvironmentName), "");
        if (environment.empty()) return std::vector<std::string>{};
        return std::vector<std::string>{metadata.value("namespace", "") + "/" + environment};
      });
    }
  }

  void start() override {
    controller_->start();  // returns once the pod cache has synced: tokens are checked against it
    if (warm_listener_) warm_listener_->start();
  }

  void stop() override {
    if (warm_listener_) warm_listener_->stop();
    controller_->stop();
    reconciler_->stop_all();
  }

 private:
  ControllerClients clients_;
  ControllerSettings settings_;
  runtime::EventRecorder& events_;
  AgentApiFactory& api_factory_;
  OperatorMetrics& metrics_;
  runtime::RuntimeMetrics& runtime_metrics_;
  Logger logger_;
  KubeSessionObjectWriter session_objects_;
  std::shared_ptr<runtime::Store> pod_store_;
  std::shared_ptr<runtime::Store> policy_store_;
  std::shared_ptr<runtime::Store> cilium_policy_store_;
  std::shared_ptr<runtime::Store> claim_store_;
  std::unique_ptr<KubeSessionWorkspaces> workspaces_;
  std::unique_ptr<StoreRunnerPodCensus> census_;
  std::unique_ptr<AgentEnvironmentReconciler> reconciler_;
  std::unique_ptr<runtime::Controller> controller_;
  std::unique_ptr<WarmAssignmentListener> warm_listener_;
};

}  // namespace

std::optional<AssignmentEndpoint> warm_assignment_endpoint(const ControllerSettings& settings) {
  if (!settings.warm_assignment) return std::nullopt;
  return warm_assignment_endpoint(*settings.warm_assignment);
}

std::optional<AssignmentPeer> warm_assignment_peer(const ControllerSettings& settings) {
  if (!settings.warm_assignment) return std::nullopt;
  return warm_assignment_peer(*settings.warm_assignment);
}

runtime::ControllerFactory agent_environment_controller(
    ControllerClients clients, ControllerSettings settings, runtime::EventRecorder& events,
    AgentApiFactory& api_factory, OperatorMetrics& metrics,
    runtime::RuntimeMetrics& runtime_metrics, Logger logger) {
  return [=, &events, &api_factory, &metrics, &runtime_metrics]() {
    return std::make_unique<AgentEnvironmentController>(clients, settings, events, api_factory,
                                                        metrics, runtime_metrics, logger);
  };
}

}  // namespace perimeter::agentenvironment
