#pragma once

#include <optional>
#include <set>
#include <string>

#include "controllers/mcptunnel/credentials.h"
#include "controllers/mcptunnel/reconciler.h"
#include "controllers/mcptunnel/tunnel_metrics.h"
#include "core/log.h"
#include "kube/resource_client.h"
#include "runtime/event_recorder.h"
#include "runtime/manager.h"

namespace perimeter::mcptunnel {

// The clients the McpTunnel controller reads and writes with.
struct ControllerClients {
  kube::ResourceClient& tunnels;
  kube::ResourceClient& services;
  kube::ResourceClient& secrets;
  kube::ResourceClient& config_maps;
  kube::ResourceClient& deployments;
  kube::ResourceClient& network_policies;
  kube::ResourceClient& disruption_budgets;
};

struct ControllerSettings {
  std::string watch_namespace;  // empty: every namespace
  ReconcilerOptions reconciler;
  int workers = 2;
};

// The McpTunnel controller as the Manager runs it: McpTunnels, and per namespace that may hold
// them the Services routes point at and the gateway Deployments, from the shared cache.
runtime::ControllerFactory mcp_tunnel_controller(ControllerClients clients,
                                                 ControllerSettings settings,
                                                 runtime::EventRecorder& events,
                                                 TunnelsApiFactory& api_factory,
                                                 TunnelMetrics& metrics,
                                                 runtime::RuntimeMetrics& runtime_metrics,
                                                 Logger logger);

}  // namespace perimeter::mcptunnel
