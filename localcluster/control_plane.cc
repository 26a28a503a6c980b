#include "localcluster/control_plane.h"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "core/backoff.h"
#include "core/clock.h"
#include "core/random.h"
#include "localcluster/cluster_dirs.h"
#include "localcluster/kubeconfig.h"
#include "localcluster/kwok_stages.h"
#include "localcluster/ports.h"
#include "localcluster/readiness.h"
#include "localcluster/tools.h"

namespace perimeter::localcluster {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kServiceClusterIpRange = "10.0.0.0/24";
constexpr const char* kPodCidr = "10.244.0.0/16";
constexpr const char* kServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local";
constexpr const char* kFakeNodeLabel = "perimeter.dev/fake-node";
constexpr int kLogTailLines = 40;
constexpr int kPortAttempts = 3;

std::string loopback_url(const char* scheme, int port) {
  return std::string(scheme) + "://127.0.0.1:" + std::to_string(port);
}

long long millis_since(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

std::string fake_node_name(int index) {
  return "kwok-node-" + std::to_string(index);
}

bool node_is_ready(const nlohmann::json& node) {
  const auto* conditions = node.contains("status") && node["status"].contains("conditions")
                               ? &node["status"]["conditions"]
                               : nullptr;
  if (!conditions || !conditions->is_array()) return false;
  for (const auto& condition : *conditions) {
    if (condition.value("type", "") == "Ready") return condition.value("status", "") == "True";
  }
  return false;
}

}  // namespace

std::vector<std::string> controller_manager_controllers() {
  return {"garbage-collector-controller", "deployment-controller", "replicaset-controller",
          "namespace-controller", "serviceaccount-controller", "serviceaccount-token-controller",
          "root-ca-certificate-publisher-controller", "clusterrole-aggregation-controller",
          "job-controller", "cronjob-controller", "statefulset-controller",
          "ttl-after-finished-controller", "pod-garbage-collector-controller",
          "endpointslice-controller", "disruption-controller", "resourcequota-controller",
          // PersistentVolumeClaims bind, and are kept while a pod uses them (the real node's
          // storage, local_volumes.h).
          "persistentvolume-binder-controller", "persistentvolume-protection-controller",
          "persistentvolumeclaim-protection-controller"};
}

ControlPlane::ControlPlane(ControlPlaneOptions options, Logger logger)
    : options_(std::move(options)), logger_(std::move(logger)) {}

ControlPlane::~ControlPlane() {
  stop();
}

std::unique_ptr<ControlPlane> ControlPlane::start(const ControlPlaneOptions& options,
                                                  Logger logger) {
  if (options.dir.empty() || !fs::is_directory(options.dir)) {
    throw std::runtime_error("local cluster folder '" + options.dir + "' does not exist");
  }
  if (options.kwok_nodes < 0) {
    throw std::runtime_error("kwok_nodes must be >= 0, got " + std::to_string(options.kwok_nodes));
  }
  std::unique_ptr<ControlPlane> plane(new ControlPlane(options, std::move(logger)));
  plane->start_all();  // on failure the destructor stops whatever did start
  return plane;
}

void ControlPlane::start_all() {
  // Every binary is checked up front so a missing one is reported before anything starts.
  std::vector<std::string> needed = {"etcd", "kube-apiserver"};
  if (options_.controller_manager) needed.push_back("kube-controller-manager");
  if (options_.scheduler) needed.push_back("kube-scheduler");
  if (options_.kwok_nodes > 0) needed.push_back("kwok");
  if (options_.real_node) needed.push_back("kubelet");
  for (const auto& tool : needed) require_tool(options_.tools_dir, tool);
  if (options_.real_node) {
    // Before anything starts: a machine that cannot run the node says so at once.
    if (auto missing = missing_node_prerequisites(real_node_options()); !missing.empty()) {
      std::string message = "the real node cannot start; missing:";
      for (const auto& what : missing) message += "\n  - " + what;
      throw std::runtime_error(message);
    }
  }

  const auto started = Clock::now();
  fs::create_directories(options_.dir + "/logs");
  fs::create_directories(options_.dir + "/" + kComponentPidDir);
  generate_pki();
  record_phase("certificates_ms", started);
  start_etcd();
  record_phase("etcd_ready_ms", started);
  start_apiserver();
  record_phase("apiserver_ready_ms", started);

  // The rest only needs the apiserver: start them together, then wait for each.
  if (options_.controller_manager) start_controller_manager();
  if (options_.scheduler) start_scheduler();
  if (options_.kwok_nodes > 0) start_kwok();
  for (auto& component : components_) {
    if (component->health_port == 0) continue;
    // Their serving certificates are self-signed: the client authenticates, it does not verify.
    HttpClientConfig config;
    config.base_url = loopback_url("https", component->health_port);
    config.cert_file = pki_.admin_cert;
    config.key_file = pki_.admin_key;
    config.timeout = std::chrono::seconds(2);
    HttpClient health(config);
    wait_until_ready(*component, "/healthz ok", [&](std::string* complaint) {
      auto response = health.get("/healthz");
      *complaint = "/healthz answered " + std::to_string(response.status) + ": " + response.body;
      return response.status == 200;
    });
  }
  if (options_.controller_manager) {
    // Pods are only admitted once their namespace's ServiceAccount exists; wait for the first.
    auto api = admin_client();
    wait_until_ready(
        *find("kube-controller-manager"), "the default ServiceAccount",
        [&](std::string* complaint) {
          auto response = api->get("/api/v1/namespaces/default/serviceaccounts/default");
          *complaint = "ServiceAccount default/default: HTTP " + std::to_string(response.status);
          return response.status == 200;
        });
  }
  record_phase("controllers_ready_ms", started);
  if (options_.kwok_nodes > 0) {
    create_fake_nodes();
    wait_for_fake_nodes();
    record_phase("nodes_ready_ms", started);
  }
  if (options_.real_node) {
    start_real_node();
    record_phase("real_node_ready_ms", started);
  }
  record_phase("total_ms", started);
  logger_.info(
      "local cluster ready",
      {{"dir", options_.dir}, {"apiserver", endpoints_.apiserver_url}, {"phases", phases_}});
}

void ControlPlane::record_phase(const std::string& name, Clock::time_point since) {
  phases_[name] = millis_since(since);
}

void ControlPlane::generate_pki() {
  const std::string pki_dir = options_.dir + "/pki";
  fs::create_directories(pki_dir);
  pki_ = generate_certificates(pki_dir);
  endpoints_.dir = options_.dir;
  endpoints_.ca_file = pki_.ca_cert;
  endpoints_.client_cert_file = pki_.admin_cert;
  endpoints_.client_key_file = pki_.admin_key;
  endpoints_.kubeconfig = options_.dir + "/kubeconfig";
}

ControlPlane::Component& ControlPlane::add_component(const std::string& name,
                                                     std::vector<std::string> argv) {
  for (auto& component : components_) {
    if (component->name == name) {
      component->argv = std::move(argv);
      return *component;
    }
  }
  auto component = std::make_unique<Component>();
  component->name = name;
  component->argv = std::move(argv);
  component->log_path = options_.dir + "/logs/" + name + ".log";
  components_.push_back(std::move(component));
  return *components_.back();
}

void ControlPlane::spawn(Component& component) {
  process::ProcessSpec spec;
  spec.argv = component.argv;
  spec.log_path = component.log_path;
  spec.working_dir = options_.dir;
  // The supervisor's own children die with it whatever happens to it.
  spec.parent_death_signal = SIGKILL;
  component.process = process::Process::spawn(spec);
  write_pid_file(options_.dir + "/" + kComponentPidDir + "/" + component.name + ".pid",
                 component.process->pid());
  logger_.debug("started", {{"component", component.name}, {"pid", component.process->pid()}});
}

void ControlPlane::wait_until_ready(Component& component, const std::string& what,
                                    const std::function<bool(std::string*)>& probe) {
  ReadinessCheck check;
  check.component = component.name;
  check.what = what;
  check.timeout = options_.start_timeout;
  check.probe = probe;
  check.exit_description = [&component]() -> std::optional<std::string> {
    if (component.process->running()) return std::nullopt;
    return component.process->exit_status()->describe();
  };
  check.log_path = component.log_path;
  check.log_tail = [&component] { return tail_of_file(component.log_path, kLogTailLines); };
  check.abort_requested = options_.abort_requested;
  // Counted per component so a slow start shows whether it was slow to answer or answered "no".
  probe_counts_[component.name] +=
      localcluster::wait_until_ready(check, SystemClock::instance(), ThreadSleeper::instance(),
                                     SystemRandom::instance())
          .probes;
}

void ControlPlane::start_etcd() {
  const std::string etcd = options_.tools_dir + "/etcd";
  for (int attempt = 1;; ++attempt) {
    etcd_port_ = pick_free_port();
    etcd_peer_port_ = pick_free_port();
    endpoints_.etcd_url = loopback_url("http", etcd_port_);
    const std::string peer_url = loopback_url("http", etcd_peer_port_);
    fs::remove_all(options_.dir + "/etcd");
    Component& component = add_component(
        "etcd",
        {etcd, "--name=perimeter", "--data-dir=" + options_.dir + "/etcd",
         "--listen-client-urls=" + endpoints_.etcd_url,
         "--advertise-client-urls=" + endpoints_.etcd_url, "--listen-peer-urls=" + peer_url,
         "--initial-advertise-peer-urls=" + peer_url, "--initial-cluster=perimeter=" + peer_url,
         "--initial-cluster-state=new", "--unsafe-no-fsync=true", "--log-level=warn"});
    spawn(component);
    HttpClientConfig config;
    config.base_url = endpoints_.etcd_url;
    config.timeout = std::chrono::seconds(2);
    HttpClient health(config);
    try {
      wait_until_ready(component, "/health", [&](std::string* complaint) {
        auto response = health.get("/health");
        *complaint = "/health answered " + std::to_string(response.status) + ": " + response.body;
        return response.status == 200 && response.body.find("\"true\"") != std::string::npos;
      });
      return;
    } catch (const StartFailure& failure) {
      if (!failure.port_in_use() || attempt == kPortAttempts) throw;
      ++port_retries_;
      logger_.warn("port taken, retrying with new ports", {{"component", "etcd"}});
      component.process->terminate(std::chrono::seconds(5));
    }
  }
}

std::vector<std::string> ControlPlane::apiserver_argv() const {
  std::vector<std::string> argv = {
      options_.tools_dir + "/kube-apiserver",
      "--etcd-servers=" + endpoints_.etcd_url,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      "--secure-port=" + std::to_string(apiserver_port_),
      "--cert-dir=" + options_.dir + "/pki",
      "--tls-cert-file=" + pki_.apiserver_cert,
      "--tls-private-key-file=" + pki_.apiserver_key,
      "--client-ca-file=" + pki_.ca_cert,
      "--authorization-mode=RBAC",
      "--enable-admission-plugins=PodSecurity",
      "--allow-privileged=true",
      "--service-account-issuer=" + std::string(kServiceAccountIssuer),
      "--service-account-key-file=" + pki_.service_account_pub,
      "--service-account-signing-key-file=" + pki_.service_account_key,
      "--service-cluster-ip-range=" + std::string(kServiceClusterIpRange),
      // No default route on these machines, and nothing to reconcile endpoints to.
      "--endpoint-reconciler-type=none",
      "--profiling=false",
      // Without it, an open watch holds a stopping apiserver until its 60 s shutdown timeout;
      // with it, watches are closed and clients reconnect, as they would to a restarted server.
      "--shutdown-watch-termination-grace-period=2s",
  };
  if (options_.real_node) {
    // pods/log, exec and port-forward go to the kubelet: authenticate as the admin (the kubelet
    // trusts the cluster CA) and reach it at its Hostname address, 127.0.0.1 (the kubelet
    // refuses a loopback InternalIP).
    argv.insert(argv.end(), {"--kubelet-client-certificate=" + pki_.admin_cert,
                             "--kubelet-client-key=" + pki_.admin_key,
                             "--kubelet-preferred-address-types=Hostname"});
  }
  // Last, so a test's flag overrides one of ours (the last occurrence of a flag wins).
  argv.insert(argv.end(), options_.extra_apiserver_flags.begin(),
              options_.extra_apiserver_flags.end());
  return argv;
}

void ControlPlane::start_apiserver() {
  for (int attempt = 1;; ++attempt) {
    apiserver_port_ = pick_free_port();
    endpoints_.apiserver_url = loopback_url("https", apiserver_port_);
    Component& component = add_component("kube-apiserver", apiserver_argv());
    spawn(component);
    auto api = admin_client();
    try {
      wait_until_ready(component, "/readyz", [&](std::string* complaint) {
        auto response = api->get("/readyz");
        *complaint = "/readyz answered " + std::to_string(response.status) + ": " + response.body;
        return response.status == 200;
      });
      break;
    } catch (const StartFailure& failure) {
      if (!failure.port_in_use() || attempt == kPortAttempts) throw;
      ++port_retries_;
      logger_.warn("port taken, retrying with a new port", {{"component", "kube-apiserver"}});
      component.process->terminate(std::chrono::seconds(5));
    }
  }
  KubeconfigSpec kubeconfig;
  kubeconfig.server = endpoints_.apiserver_url;
  kubeconfig.ca_file = pki_.ca_cert;
  kubeconfig.client_cert_file = pki_.admin_cert;
  kubeconfig.client_key_file = pki_.admin_key;
  write_kubeconfig(endpoints_.kubeconfig, kubeconfig);
}

void ControlPlane::restart_apiserver() {
  Component* apiserver = find("kube-apiserver");
  if (!apiserver || stopped_) throw std::runtime_error("restart_apiserver: no apiserver running");
  const auto started = Clock::now();
  apiserver->process->terminate(std::chrono::seconds(15));
  auto api = admin_client();
  // Same port, so clients keep their URL. A start that loses the port to someone else in the
  // instant it was free is retried after a pause.
  Backoff backoff({.initial = std::chrono::milliseconds(200),
                   .max = std::chrono::seconds(2),
                   .multiplier = 2,
                   .jitter = 0.2},
                  SystemRandom::instance());
  for (int attempt = 1;; ++attempt) {
    spawn(*apiserver);
    try {
      wait_until_ready(*apiserver, "/readyz after restart", [&](std::string* complaint) {
        auto response = api->get("/readyz");
        *complaint = "/readyz answered " + std::to_string(response.status) + ": " + response.body;
        return response.status == 200;
      });
      break;
    } catch (const StartFailure& failure) {
      if (!failure.port_in_use() || attempt == kPortAttempts) throw;
      ++port_retries_;
      apiserver->process->terminate(std::chrono::seconds(5));
      std::this_thread::sleep_for(backoff.next());
    }
  }
  record_phase("last_apiserver_restart_ms", started);
  logger_.info("kube-apiserver restarted", {{"ms", millis_since(started)}});
}

void ControlPlane::start_controller_manager() {
  std::string controllers;
  for (const auto& name : controller_manager_controllers()) {
    controllers += (controllers.empty() ? "" : ",") + name;
  }
  const int port = pick_free_port();
  fs::create_directories(options_.dir + "/kube-controller-manager");
  Component& component = add_component(
      "kube-controller-manager",
      {options_.tools_dir + "/kube-controller-manager", "--kubeconfig=" + endpoints_.kubeconfig,
       "--authentication-kubeconfig=" + endpoints_.kubeconfig,
       "--authorization-kubeconfig=" + endpoints_.kubeconfig,
       // Off: a leader that cannot renew while the apiserver restarts would exit.
       "--leader-elect=false", "--controllers=" + controllers,
       "--service-account-private-key-file=" + pki_.service_account_key,
       "--root-ca-file=" + pki_.ca_cert, "--use-service-account-credentials=false",
       "--cert-dir=" + options_.dir + "/kube-controller-manager", "--bind-address=127.0.0.1",
       "--secure-port=" + std::to_string(port)});
  component.health_port = port;
  spawn(component);
}

void ControlPlane::start_scheduler() {
  const int port = pick_free_port();
  fs::create_directories(options_.dir + "/kube-scheduler");
  Component& component = add_component(
      "kube-scheduler",
      {options_.tools_dir + "/kube-scheduler", "--kubeconfig=" + endpoints_.kubeconfig,
       "--authentication-kubeconfig=" + endpoints_.kubeconfig,
       "--authorization-kubeconfig=" + endpoints_.kubeconfig, "--leader-elect=false",
       "--cert-dir=" + options_.dir + "/kube-scheduler", "--bind-address=127.0.0.1",
       "--secure-port=" + std::to_string(port)});
  component.health_port = port;
  spawn(component);
}

void ControlPlane::start_kwok() {
  const std::string stages = options_.dir + "/kwok-stages.yaml";
  std::ofstream(stages) << render_kwok_pod_stages();
  Component& component = add_component(
      "kwok", {options_.tools_dir + "/kwok", "--kubeconfig=" + endpoints_.kubeconfig,
               "--config=" + stages, "--manage-all-nodes=false",
               "--manage-nodes-with-annotation-selector=" + std::string(kFakeNodeAnnotation) + "=" +
                   kFakeNodeAnnotationValue,
               "--cidr=" + std::string(kPodCidr), "--node-ip=127.0.0.1",
               "--node-lease-duration-seconds=40"});
  spawn(component);
}

void ControlPlane::create_fake_nodes() {
  auto api = admin_client();
  for (int i = 0; i < options_.kwok_nodes; ++i) {
    const std::string name = fake_node_name(i);
    nlohmann::json node = {{"apiVersion", "v1"},
                           {"kind", "Node"},
                           {"metadata",
                            {{"name", name},
                             {"annotations",
                              {{kFakeNodeAnnotation, kFakeNodeAnnotationValue},
                               {"node.alpha.kubernetes.io/ttl", "0"}}},
                             {"labels",
                              {{kFakeNodeLabel, "true"},
                               {"type", "kwok"},
                               {"kubernetes.io/hostname", name},
                               {"kubernetes.io/os", "linux"},
                               {"kubernetes.io/arch", "amd64"}}}}},
                           {"spec", nlohmann::json::object()}};
    auto response = api->request("POST", "/api/v1/nodes", node.dump());
    if (response.status != 201 && response.status != 409) {
      throw std::runtime_error("creating fake node " + name + ": HTTP " +
                               std::to_string(response.status) + ": " + response.body);
    }
  }
}

void ControlPlane::wait_for_fake_nodes() {
  Component* kwok = find("kwok");
  auto api = admin_client();
  const std::string path = "/api/v1/nodes?labelSelector=" + std::string(kFakeNodeLabel) + "%3Dtrue";
  wait_until_ready(*kwok, "every fake Node Ready and untainted", [&](std::string* complaint) {
    auto response = api->get(path);
    if (response.status != 200) {
      *complaint = "listing nodes: HTTP " + std::to_string(response.status) + ": " + response.body;
      return false;
    }
    int usable = 0;
    const nlohmann::json list = nlohmann::json::parse(response.body);
    for (const auto& node : list.at("items")) {
      if (!node_is_ready(node)) continue;
      // The TaintNodesByCondition admission plugin creates every Node with the not-ready taint;
      // the node-lifecycle controller would lift it once the Node is Ready. That controller is
      // not run here (KWOK's Nodes need no eviction), so the harness lifts it.
      if (!node["spec"].value("taints", nlohmann::json::array()).empty()) {
        const std::string name = node["metadata"]["name"];
        auto patched = api->request("PATCH", "/api/v1/nodes/" + name, R"({"spec":{"taints":null}})",
                                    "application/merge-patch+json");
        if (patched.status != 200) {
          *complaint = "lifting the taints of " + name + ": HTTP " +
                       std::to_string(patched.status) + ": " + patched.body;
        }
        continue;
      }
      ++usable;
    }
    if (usable < options_.kwok_nodes) {
      *complaint = std::to_string(usable) + " of " + std::to_string(options_.kwok_nodes) +
                   " fake Nodes Ready and untainted";
    }
    return usable >= options_.kwok_nodes;
  });
}

RealNodeOptions ControlPlane::real_node_options() const {
  RealNodeOptions node;
  node.dir = options_.dir + "/node";
  node.logs_dir = options_.dir + "/logs";
  node.tools_dir = options_.tools_dir;
  node.images_dir = options_.images_dir.empty() ? images_dir() : options_.images_dir;
  node.extra_images = options_.extra_images;
  node.apiserver_url = endpoints_.apiserver_url;
  node.ca_cert = pki_.ca_cert;
  node.ca_key = pki_.ca_key;
  node.start_timeout = options_.start_timeout;
  node.abort_requested = options_.abort_requested;
  node.admin_client = [this] { return admin_client(); };
  node.service_cluster_ip_range = kServiceClusterIpRange;
  // Next to the cluster folders, where the next start's sweep looks anyway.
  node.records_dir = fs::path(options_.dir).parent_path().string() + "/real-nodes";
  return node;
}

void ControlPlane::start_real_node() {
  real_node_ = RealNode::start(real_node_options(), logger_);
}

ControlPlane::Component* ControlPlane::find(const std::string& name) {
  for (auto& component : components_) {
    if (component->name == name) return component.get();
  }
  return nullptr;
}

std::unique_ptr<HttpClient> ControlPlane::admin_client() const {
  return std::make_unique<HttpClient>(HttpClientConfig{.base_url = endpoints_.apiserver_url,
                                                       .ca_file = pki_.ca_cert,
                                                       .cert_file = pki_.admin_cert,
                                                       .key_file = pki_.admin_key,
                                                       .timeout = std::chrono::seconds(5)});
}

std::vector<std::string> ControlPlane::exited_components() {
  std::vector<std::string> exited;
  if (stopped_) return exited;
  if (real_node_) exited = real_node_->exited_components();
  for (auto& component : components_) {
    if (component->process && !component->process->running()) {
      exited.push_back(component->name + ": " + component->process->exit_status()->describe());
    }
  }
  return exited;
}

nlohmann::json ControlPlane::describe() const {
  nlohmann::json components = nlohmann::json::array();
  for (const auto& component : components_) {
    components.push_back({{"name", component->name},
                          {"pid", component->process ? component->process->pid() : 0},
                          {"log", component->log_path}});
  }
  return {{"dir", endpoints_.dir},
          {"kubeconfig", endpoints_.kubeconfig},
          {"apiserver_url", endpoints_.apiserver_url},
          {"ca_file", endpoints_.ca_file},
          {"client_cert_file", endpoints_.client_cert_file},
          {"client_key_file", endpoints_.client_key_file},
          {"etcd_url", endpoints_.etcd_url},
          {"kwok_nodes", options_.kwok_nodes},
          {"controller_manager", options_.controller_manager},
          {"scheduler", options_.scheduler},
          {"components", components},
          {"real_node", real_node_ ? real_node_->describe() : nlohmann::json(nullptr)},
          {"phases", phases_},
          {"readiness_probes", probe_counts_},
          {"port_retries", port_retries_}};
}

void ControlPlane::stop() {
  if (stopped_) return;
  stopped_ = true;
  // The node before the apiserver it reports to; its teardown needs no apiserver.
  if (real_node_) real_node_->stop();
  // Everything but etcd is told at once, so their shutdowns overlap; etcd goes last because the
  // apiserver's graceful shutdown still talks to it.
  for (auto& component : components_) {
    if (component->name != "etcd" && component->process) component->process->signal(SIGTERM);
  }
  for (auto it = components_.rbegin(); it != components_.rend(); ++it) {
    if ((*it)->name != "etcd" && (*it)->process)
      (*it)->process->terminate(std::chrono::seconds(10));
  }
  for (auto& component : components_) {
    if (component->name == "etcd" && component->process) {
      component->process->terminate(std::chrono::seconds(10));
    }
  }
}

}  // namespace perimeter::localcluster
