// perimeter-operator: the controllers, behind leader election, with metrics and health probes.
#include <cpprest/http_listener.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

#include "controllers/agentenvironment/api_factory.h"
#include "controllers/agentenvironment/controller_setup.h"
#include "controllers/agentenvironment/egress_gateway_controller.h"
#include "controllers/agentenvironment/operator_metrics.h"
#include "controllers/agentenvironment/warm_assignment_listener.h"
#include "controllers/mcptunnel/controller_setup.h"
#include "controllers/mcptunnel/credentials.h"
#include "controllers/mcptunnel/mcp_tunnel.h"
#include "controllers/mcptunnel/tunnel_metrics.h"
#include "core/shutdown_signal.h"
#include "core/strings.h"
#include "core/thread_name.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "manager/options.h"
#include "runtime/event_recorder.h"
#include "runtime/leader_election.h"
#include "runtime/manager.h"

namespace perimeter::manager {
namespace {

namespace ae = perimeter::agentenvironment;
namespace mt = perimeter::mcptunnel;

kube::ResourceType agent_environments() {
  return {ae::kGroup, ae::kVersion, "agentenvironments", ae::kKind, true};
}

// /healthz answers while the process runs; /readyz once the caches of the leader are synced, or
// at once on a follower (it is ready to take over).
class HealthServer {
 public:
  HealthServer(const std::string& address, const runtime::Manager& manager)
      : listener_(web::uri("http://" + address)), manager_(manager) {
    listener_.support(web::http::methods::GET, [this](const web::http::http_request& request) {
      const auto path = request.relative_uri().path();
      if (path == "/healthz") {
        request.reply(web::http::status_codes::OK, "ok");
      } else if (path == "/readyz") {
        const bool ready = manager_.ready();
        request.reply(
            ready ? web::http::status_codes::OK : web::http::status_codes::ServiceUnavailable,
            ready ? "ok" : "caches not synced");
      } else {
        request.reply(web::http::status_codes::NotFound, "not found");
      }
    });
    listener_.open().wait();
  }
  ~HealthServer() {
    try {
      listener_.close().wait();
    } catch (const std::exception&) {
      // Closing at exit: nothing left to report to.
    }
  }

 private:
  web::http::experimental::listener::http_listener listener_;
  const runtime::Manager& manager_;
};

std::string describe(const std::optional<std::set<std::string>>& namespaces) {
  if (!namespaces) return "(all)";
  std::string out;
  for (const auto& ns : *namespaces) out += (out.empty() ? "" : ",") + ns;
  return out.empty() ? "(none)" : out;
}

// The namespace the operator runs in (the chart sets POD_NAMESPACE from the downward API).
std::string operator_namespace() {
  const char* pod_namespace = std::getenv("POD_NAMESPACE");
  return pod_namespace != nullptr && *pod_namespace != '\0' ? pod_namespace : "perimeter-system";
}

struct Clients {
  Clients(kube::Transport& transport, kube::ClientMetrics& metrics)
      : environments(transport, agent_environments(), metrics),
        pods(transport, kube::resources::pods(), metrics),
        secrets(transport, kube::resources::secrets(), metrics),
        network_policies(transport, kube::resources::network_policies(), metrics),
        cilium_network_policies(transport, kube::resources::cilium_network_policies(), metrics),
        events(transport, kube::resources::events(), metrics),
        leases(transport, kube::resources::leases(), metrics),
        tunnels(transport, mt::mcp_tunnels(), metrics),
        services(transport, kube::resources::services(), metrics),
        config_maps(transport, kube::resources::config_maps(), metrics),
        deployments(transport, kube::resources::deployments(), metrics),
        disruption_budgets(transport, kube::resources::pod_disruption_budgets(), metrics),
        service_accounts(transport, kube::resources::service_accounts(), metrics),
        persistent_volume_claims(transport, kube::resources::persistent_volume_claims(), metrics) {}
  kube::ResourceClient environments, pods, secrets, network_policies, cilium_network_policies,
      events, leases, tunnels, services, config_maps, deployments, disruption_budgets,
      service_accounts, persistent_volume_claims;
};

int run(const Options& options) {
  ShutdownSignal signals;  // before any thread starts
  // A typo in the allow-list is a start-up error, not an operator that silently sends nothing.
  const auto allowed_api_hosts = ae::ApiHostAllowList::parse(options.allowed_api_hosts);
  const Logger logger("perimeter-operator", StderrSink::instance(), options.log_level);

  kube::Config config = kube::Config::load(options.kubeconfig, options.context);
  config.qps = options.kube_api_qps;
  config.burst = options.kube_api_burst;
  kube::HttpTransport transport(config);

  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::Exposer exposer(options.metrics_bind_address);
  exposer.RegisterCollectable(registry);
  kube::ClientMetrics client_metrics(*registry);
  runtime::RuntimeMetrics runtime_metrics(*registry);
  ae::OperatorMetrics metrics(*registry);
  ae::PrometheusApiMetrics api_metrics(*registry);
  ae::AgentApiClientFactory api_factory(api_metrics, logger.child("agentapi"));

  Clients clients(transport, client_metrics);
  Options effective = options;
  if (effective.identity.empty()) effective.identity = runtime::LeaderElector::default_identity();
  runtime::EventRecorderOptions event_options;
  event_options.component = "perimeter-operator";
  event_options.host = effective.identity;
  runtime::EventRecorder events(clients.events, event_options, runtime_metrics,
                                logger.child("events"));

  runtime::ManagerOptions manager_options;
  manager_options.leader_elect = options.leader_elect;
  if (options.leader_elect) {
    auto& election = manager_options.election;
    election.lease_namespace = options.leader_election_namespace.empty()
                                   ? operator_namespace()
                                   : options.leader_election_namespace;
    election.lease_name = options.leader_election_id;
    election.identity = effective.identity;
  }
  runtime::Manager manager(manager_options, clients.leases, runtime_metrics, logger);
  ae::ControllerSettings settings;
  settings.watch_namespace = options.watch_namespace;
  settings.session_namespaces = options.session_namespaces;
  settings.allowed_api_hosts = allowed_api_hosts;
  settings.worker_id = effective.identity;
  settings.workers = options.workers;
  settings.poll_threads = options.poll_threads;
  settings.max_extra_poll_threads = options.max_extra_poll_threads;
  settings.resync = std::chrono::seconds(options.resync_seconds);
  settings.orphan_sweep = std::chrono::seconds(options.orphan_sweep_seconds);
  settings.gate_sweep = std::chrono::seconds(options.gate_sweep_seconds);
  settings.egress.mode = *ae::parse_egress_mode(options.runner_egress);  // checked by the flag
  settings.egress.cluster_dns = {options.cluster_dns.namespace_, options.cluster_dns.labels};
  settings.egress.cluster_domain = options.cluster_domain;
  const bool cilium = settings.egress.mode == ae::EgressMode::kCiliumFqdn;
  if (settings.egress.mode == ae::EgressMode::kGateway) {
    ae::EgressGatewaySettings gateway;
    gateway.namespace_ = options.egress_gateway_namespace.empty()
                             ? operator_namespace()
                             : options.egress_gateway_namespace;
    if (!options.egress_gateway_image.empty()) gateway.image = options.egress_gateway_image;
    gateway.replicas = options.egress_gateway_replicas;
    gateway.cluster_dns = settings.egress.cluster_dns;
    gateway.cluster_domain = options.cluster_domain;
    ae::point_runners_at(gateway, settings.egress);
    // Before any session is claimed: every session's proxy credential is signed with it.
    settings.egress.credentials_key =
        ae::load_or_create_egress_gateway_key(clients.secrets, gateway);
    ae::EgressGatewayScope scope;
    scope.watch_namespace = options.watch_namespace;
    scope.session_namespaces = options.session_namespaces;
    scope.allowed_api_hosts = allowed_api_hosts;
    manager.add(ae::egress_gateway_controller(
        {clients.environments, clients.config_maps, clients.secrets, clients.deployments,
         clients.services, clients.network_policies},
        gateway, settings.egress.credentials_key, scope, runtime_metrics,
        logger.child("egressgateway")));
  }
  ae::WarmAssignmentMetrics warm_assignment_metrics(*registry);
  if (options.warm_assignment_port != 0) {
    ae::WarmAssignmentSettings warm;
    warm.service.service_name = options.warm_assignment_service;
    warm.service.namespace_ = operator_namespace();
    warm.service.cluster_domain = options.cluster_domain;
    warm.service.port = options.warm_assignment_port;
    warm.service.direct_address = options.warm_assignment_address;
    if (!options.warm_assignment_address.empty())
      warm.bind_address = options.warm_assignment_address;
    warm.listen_port = options.warm_assignment_port;
    warm.operator_pods = {warm.service.namespace_, options.warm_assignment_pod_labels};
    // On every replica, before leading: the CA is what warm pods trust, so all replicas and
    // every term must serve certificates from the same one.
    warm.ca = std::make_shared<const ae::AssignmentCa>(ae::load_or_create_assignment_ca(
        clients.secrets, warm.service.namespace_, options.warm_assignment_ca_secret,
        std::chrono::system_clock::now()));
    warm.metrics = &warm_assignment_metrics;
    settings.warm_assignment = std::move(warm);
  }
  manager.add(ae::agent_environment_controller(
      {clients.environments, clients.pods, clients.secrets, clients.network_policies,
       cilium ? &clients.cilium_network_policies : nullptr, &clients.config_maps,
       &clients.persistent_volume_claims},
      settings, events, api_factory, metrics, runtime_metrics, logger.child("agentenvironment")));

  mt::PrometheusTunnelMetrics tunnel_metrics(*registry);
  mt::KubeServiceAccountTokenRequester service_account_tokens(clients.service_accounts);
  mt::WorkloadIdentitySettings identity;
  if (!options.tunnels_service_account.empty()) {
    std::string why;
    identity.identity = mt::ServiceAccountRef::parse(options.tunnels_service_account, &why);
    if (!identity.identity) throw std::invalid_argument("--tunnels-service-account: " + why);
  }
  // An http origin reaches the exchange only if the administrator put it in --allowed-api-hosts.
  identity.allow_plain_http = true;
  mt::WorkloadIdentityApiFactory tunnels_api(identity, service_account_tokens, api_metrics,
                                             logger.child("tunnels"));
  mt::ControllerSettings tunnel_settings;
  tunnel_settings.watch_namespace = options.watch_namespace;
  tunnel_settings.reconciler.tunnel_namespaces = options.tunnel_namespaces;
  tunnel_settings.reconciler.allowed_api_hosts = allowed_api_hosts;
  tunnel_settings.reconciler.cluster_domain = options.cluster_domain;
  if (!options.mcp_guard_image.empty()) {
    tunnel_settings.reconciler.default_guard_image = options.mcp_guard_image;
  }
  const auto audiences = split_commas(options.tunnel_audiences);
  if (audiences.empty()) throw std::invalid_argument("--tunnel-audiences must name an audience");
  tunnel_settings.reconciler.allowed_audiences = {audiences.begin(), audiences.end()};
  tunnel_settings.reconciler.ca_overlap = std::chrono::seconds(options.ca_rotation_overlap_seconds);
  tunnel_settings.reconciler.archive_deadline =
      std::chrono::seconds(options.tunnel_archive_deadline_seconds);
  manager.add(mt::mcp_tunnel_controller(
      {clients.tunnels, clients.services, clients.secrets, clients.config_maps,
       clients.deployments, clients.network_policies, clients.disruption_budgets},
      tunnel_settings, events, tunnels_api, tunnel_metrics, runtime_metrics,
      logger.child("mcptunnel")));

  HealthServer health(options.health_bind_address, manager);
  logger.info("starting",
              {{"identity", effective.identity},
               {"leader_elect", options.leader_elect},
               {"metrics", options.metrics_bind_address},
               {"namespace", options.watch_namespace.empty() ? "(all)" : options.watch_namespace},
               {"session_namespaces", describe(options.session_namespaces)},
               {"runner_egress", options.runner_egress},
               {"warm_assignment_port", options.warm_assignment_port},
               {"tunnel_namespaces", describe(options.tunnel_namespaces)},
               {"allowed_api_hosts", allowed_api_hosts.describe()}});

  std::jthread work([&manager, &logger](std::stop_token stop) {
    name_this_thread("manager");
    if (!manager.run(stop)) {
      // Lost the lease, or the controllers could not start: exit so no leader-only work can
      // linger; the Deployment restarts us (controller-runtime does the same).
      logger.error("leadership lost or controllers failed to start; exiting");
      std::_Exit(1);
    }
  });

  const int signal = signals.wait();
  logger.info("shutting down", {{"signal", signal}});
  work.request_stop();
  work.join();
  events.flush();
  logger.info("stopped");
  return 0;
}

}  // namespace
}  // namespace perimeter::manager

int main(int argc, char** argv) {
  using namespace perimeter::manager;
  bool help = false;
  Options options;
  try {
    options = parse_options(std::vector<std::string>(argv + 1, argv + argc), &help);
  } catch (const std::invalid_argument& e) {
    std::cerr << "perimeter-operator: " << e.what() << "\n\n" << usage();
    return 2;
  }
  if (help) {
    std::cout << usage();
    return 0;
  }
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::cerr << "perimeter-operator: " << e.what() << "\n";
    return 1;
  }
}
