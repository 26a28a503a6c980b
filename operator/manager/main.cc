// perimeter-operator: the controllers, behind leader election, with metrics and health probes.
#include <cpprest/http_listener.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "controllers/agentenvironment/api_factory.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/operator_metrics.h"
#include "controllers/agentenvironment/reconciler.h"
#include "core/shutdown_signal.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "manager/options.h"
#include "runtime/controller.h"
#include "runtime/event_recorder.h"
#include "runtime/informer.h"
#include "runtime/leader_election.h"

namespace perimeter::manager {
namespace {

namespace ae = perimeter::agentenvironment;

kube::ResourceType agent_environments() {
  return {ae::kGroup, ae::kVersion, "agentenvironments", ae::kKind, true};
}

// /healthz answers while the process runs; /readyz once the caches of the leader are synced, or
// at once on a follower (it is ready to take over).
class HealthServer {
 public:
  HealthServer(const std::string& address, std::atomic<bool>& ready)
      : listener_(web::uri("http://" + address)), ready_(ready) {
    listener_.support(web::http::methods::GET, [this](const web::http::http_request& request) {
      const auto path = request.relative_uri().path();
      if (path == "/healthz") {
        request.reply(web::http::status_codes::OK, "ok");
      } else if (path == "/readyz") {
        request.reply(ready_.load() ? web::http::status_codes::OK
                                    : web::http::status_codes::ServiceUnavailable,
                      ready_.load() ? "ok" : "caches not synced");
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
  std::atomic<bool>& ready_;
};

struct Clients {
  Clients(kube::Transport& transport, kube::ClientMetrics& metrics)
      : environments(transport, agent_environments(), metrics),
        pods(transport, kube::resources::pods(), metrics),
        secrets(transport, kube::resources::secrets(), metrics),
        network_policies(transport, kube::resources::network_policies(), metrics),
        events(transport, kube::resources::events(), metrics),
        leases(transport, kube::resources::leases(), metrics) {}
  kube::ResourceClient environments, pods, secrets, network_policies, events, leases;
};

// Everything the leader runs: informers, the reconciler with its pollers, and the controller.
void run_controllers(std::stop_token stop, const Options& options, Clients& clients,
                     runtime::RuntimeMetrics& runtime_metrics, ae::OperatorMetrics& metrics,
                     runtime::EventRecorder& events, ae::AgentApiFactory& api_factory,
                     std::atomic<bool>& ready, const Logger& logger) {
  runtime::InformerOptions environment_options;
  environment_options.ns = options.watch_namespace;
  runtime::Informer environment_informer(clients.environments, environment_options, runtime_metrics,
                                         logger.child("informer.environments"));
  runtime::InformerOptions pod_options;
  pod_options.ns = options.watch_namespace;
  pod_options.label_selector =
      "app.kubernetes.io/managed-by=perimeter,app.kubernetes.io/component=runner";
  runtime::Informer pod_informer(clients.pods, pod_options, runtime_metrics,
                                 logger.child("informer.pods"));

  ae::KubeSessionObjectWriter session_objects(clients.secrets, clients.pods);
  ae::StoreRunnerPodCensus census(pod_informer.store());
  std::unique_ptr<runtime::Controller> controller;
  ae::ReconcilerOptions reconciler_options;
  reconciler_options.worker_id = options.identity;
  reconciler_options.poll_threads = options.poll_threads;
  ae::AgentEnvironmentReconciler reconciler(
      {environment_informer.store(), pod_informer.store(), clients.environments, clients.secrets,
       clients.pods, clients.network_policies, events, api_factory, session_objects, census,
       metrics, SystemClock::instance(), SystemRandom::instance(), logger.child("agentenvironment"),
       [&controller](const std::string& key) {
         if (controller) controller->queue().add(key);
       }},
      reconciler_options);
  runtime::ControllerOptions controller_options;
  controller_options.workers = options.workers;
  controller = std::make_unique<runtime::Controller>("agentenvironment", reconciler,
                                                     std::move(controller_options), runtime_metrics,
                                                     logger.child("controller"));
  controller->watch(environment_informer);
  controller->watch_owned(pod_informer, ae::kKind);
  environment_informer.start();
  pod_informer.start();
  controller->start();
  ready = true;
  logger.info("controllers started",
              {{"namespace", options.watch_namespace.empty() ? "(all)" : options.watch_namespace}});

  std::mutex mutex;
  std::condition_variable_any wait;
  std::unique_lock lock(mutex);
  wait.wait(lock, stop, [] { return false; });

  ready = false;
  logger.info("stopping controllers");
  controller->stop();
  reconciler.stop_all();
  pod_informer.stop();
  environment_informer.stop();
}

int run(const Options& options) {
  ShutdownSignal signals;  // before any thread starts
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
  ae::CpprestAgentApiFactory api_factory(api_metrics, logger.child("agentapi"));

  Clients clients(transport, client_metrics);
  Options effective = options;
  if (effective.identity.empty()) effective.identity = runtime::LeaderElector::default_identity();
  runtime::EventRecorderOptions event_options;
  event_options.component = "perimeter-operator";
  event_options.host = effective.identity;
  runtime::EventRecorder events(clients.events, event_options, runtime_metrics,
                                logger.child("events"));

  std::atomic<bool> ready{!options.leader_elect};
  HealthServer health(options.health_bind_address, ready);
  logger.info("starting", {{"identity", effective.identity},
                           {"leader_elect", options.leader_elect},
                           {"metrics", options.metrics_bind_address}});

  std::jthread work;
  if (options.leader_elect) {
    runtime::LeaderElectionConfig election;
    election.lease_namespace = options.leader_election_namespace;
    if (election.lease_namespace.empty()) {
      const char* pod_namespace = std::getenv("POD_NAMESPACE");
      election.lease_namespace = pod_namespace != nullptr ? pod_namespace : "perimeter-system";
    }
    election.lease_name = options.leader_election_id;
    election.identity = effective.identity;
    ready = true;  // a follower is ready: it stands by to take over
    runtime::LeaderCallbacks callbacks;
    callbacks.on_started_leading = [&](std::stop_token stop) {
      run_controllers(stop, effective, clients, runtime_metrics, metrics, events, api_factory,
                      ready, logger);
    };
    callbacks.on_new_leader = [&](const std::string& identity) {
      logger.info("leader observed", {{"leader", identity}});
    };
    auto elector = std::make_shared<runtime::LeaderElector>(
        clients.leases, election, callbacks, runtime_metrics, logger.child("leader-election"));
    work = std::jthread([elector, &logger](std::stop_token stop) {
      elector->run(stop);
      if (!stop.stop_requested()) {
        // Lost the lease: exit so no leader-only work can linger; the Deployment restarts us
        // as a follower (controller-runtime does the same).
        logger.error("leadership lost; exiting");
        std::_Exit(1);
      }
    });
  } else {
    work = std::jthread([&](std::stop_token stop) {
      run_controllers(stop, effective, clients, runtime_metrics, metrics, events, api_factory,
                      ready, logger);
    });
  }

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
