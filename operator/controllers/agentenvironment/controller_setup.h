#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "controllers/agentenvironment/key_release.h"
#include "controllers/agentenvironment/operator_metrics.h"
#include "controllers/agentenvironment/runner_egress.h"
#include "controllers/agentenvironment/session_ports.h"
#include "controllers/agentenvironment/warm_assignment_listener.h"
#include "core/log.h"
#include "kube/resource_client.h"
#include "runtime/event_recorder.h"
#include "runtime/manager.h"

namespace perimeter::agentenvironment {

// The clients the AgentEnvironment controller writes and watches with.
struct ControllerClients {
  kube::ResourceClient& environments;
  kube::ResourceClient& pods;
  kube::ResourceClient& secrets;
  kube::ResourceClient& network_policies;
  // Cilium egress mode only; null otherwise.
  kube::ResourceClient* cilium_network_policies = nullptr;
  // The ConfigMaps of spec.apiCAConfigMapRef.
  kube::ResourceClient* config_maps = nullptr;
  // Session workspaces (spec.runner.workspace.persistentVolumeClaim); null: not served.
  kube::ResourceClient* persistent_volume_claims = nullptr;
};

struct ControllerSettings {
  std::string watch_namespace;  // empty: every namespace
  // nullopt: every namespace; otherwise the namespaces that opted in to sessions.
  std::optional<std::set<std::string>> session_namespaces;
  ApiHostAllowList allowed_api_hosts = ApiHostAllowList::official();
  std::string worker_id = "perimeter-operator";
  int workers = 4;
  int poll_threads = 4;
  int max_extra_poll_threads = 64;
  // ReconcilerOptions' intervals of the same names (--resync-seconds, --orphan-sweep-seconds,
  // --gate-sweep-seconds).
  std::chrono::seconds resync{15};
  std::chrono::seconds orphan_sweep{60};
  std::chrono::seconds gate_sweep{15};
  // How runner pods reach the network (--runner-egress, --cluster-dns).
  RunnerEgress egress;
  // The warm runners' assignment service (--warm-assignment-port), served by the leader;
  // nullopt: not served, so no warm pod can be told where to ask.
  std::optional<WarmAssignmentSettings> warm_assignment{};
};

// Where warm pods ask for their assignment and the CA they trust for it; nullopt when the
// operator does not serve assignments. What the reconciler's options take (docs/warm-pool.md).
std::optional<AssignmentEndpoint> warm_assignment_endpoint(const ControllerSettings& settings);
// The runner pods' egress to it, for environments with a warm pool; nullopt when not served.
std::optional<AssignmentPeer> warm_assignment_peer(const ControllerSettings& settings);

// The AgentEnvironment controller as the Manager runs it: its informers (AgentEnvironments, and
// runner pods per namespace that opted in) from the shared cache, the reconciler with its
// session pollers, and the controller that ties them.
runtime::ControllerFactory agent_environment_controller(
    ControllerClients clients, ControllerSettings settings, runtime::EventRecorder& events,
    AgentApiFactory& api_factory, OperatorMetrics& metrics,
    runtime::RuntimeMetrics& runtime_metrics, Logger logger);

}  // namespace perimeter::agentenvironment
