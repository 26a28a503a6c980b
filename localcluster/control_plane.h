#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/log.h"
#include "localcluster/certificates.h"
#include "localcluster/http_client.h"
#include "localcluster/real_node.h"
#include "process/process.h"

namespace perimeter::localcluster {

struct ControlPlaneOptions {
  std::string dir;        // an existing, empty folder: data, certificates, logs, kubeconfig
  std::string tools_dir;  // where etcd, kube-apiserver, ... are (see tools.h)
  bool controller_manager = false;
  bool scheduler = false;
  int kwok_nodes = 0;  // > 0 starts KWOK and creates that many fake Nodes
  // A real kubelet on a containerd of its own (see real_node.h); pods scheduled to it run.
  bool real_node = false;
  std::string images_dir;  // the node's image archives (default: real_node.h's images_dir())
  std::vector<std::string> extra_images;  // more OCI archives for the node (the runner image)
  std::vector<std::string> extra_apiserver_flags;
  std::chrono::seconds start_timeout{120};  // per component
  // Asked while waiting for components; returning true abandons the start (a shutdown request
  // arrived), which then throws.
  std::function<bool()> abort_requested;
};

struct ControlPlaneEndpoints {
  std::string dir;
  std::string kubeconfig;
  std::string apiserver_url;
  std::string ca_file;
  std::string client_cert_file;
  std::string client_key_file;
  std::string etcd_url;
};

// The controllers kube-controller-manager runs here: what Deployments, garbage collection,
// namespaces, service accounts, Jobs and RBAC aggregation need. No node lifecycle or IPAM: the
// nodes are KWOK's.
std::vector<std::string> controller_manager_controllers();

// A real Kubernetes control plane on 127.0.0.1, in this process's children: etcd, kube-apiserver
// and, on request, kube-controller-manager, kube-scheduler and KWOK with fake Nodes. Every child
// is in its own process group with a parent-death signal, so none outlives this process.
// Destroying the object stops everything (the folder is the caller's to remove).
class ControlPlane {
 public:
  // Starts everything and waits until it is ready: etcd healthy, apiserver /readyz ok, the
  // controller manager and scheduler healthy (and the default ServiceAccount created), every
  // fake Node Ready. Throws std::runtime_error naming the component, with the tail of its log.
  static std::unique_ptr<ControlPlane> start(const ControlPlaneOptions& options, Logger logger);

  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  const ControlPlaneEndpoints& endpoints() const { return endpoints_; }

  // Stops kube-apiserver and starts it again on the same port against the same etcd, then waits
  // for /readyz. Throws like start() when it does not come back.
  void restart_apiserver();

  // Components that have exited although nobody stopped them ("etcd: killed by signal 9").
  std::vector<std::string> exited_components();

  // Endpoints, component pids and logs, how long each start phase took, how many readiness
  // probes each component needed and how many starts were retried for a taken port (JSON).
  nlohmann::json describe() const;

  // Stops every component, newest first. Idempotent.
  void stop();

  // An HTTPS client for the apiserver authenticated as the admin user.
  std::unique_ptr<HttpClient> admin_client() const;

 private:
  struct Component {
    std::string name;
    std::vector<std::string> argv;
    std::string log_path;
    int health_port = 0;  // serves /healthz over HTTPS when non-zero
    std::unique_ptr<process::Process> process;
  };

  ControlPlane(ControlPlaneOptions options, Logger logger);
  void start_all();
  void generate_pki();
  void start_etcd();
  void start_apiserver();
  void start_controller_manager();
  void start_scheduler();
  void start_kwok();
  void create_fake_nodes();
  void wait_for_fake_nodes();
  RealNodeOptions real_node_options() const;
  void start_real_node();

  Component* find(const std::string& name);
  Component& add_component(const std::string& name, std::vector<std::string> argv);
  void spawn(Component& component);
  // Polls `probe` until it returns true (see readiness.h); throws StartFailure.
  void wait_until_ready(Component& component, const std::string& what,
                        const std::function<bool(std::string* complaint)>& probe);
  std::vector<std::string> apiserver_argv() const;
  void record_phase(const std::string& name, std::chrono::steady_clock::time_point since);

  ControlPlaneOptions options_;
  Logger logger_;
  ClusterCertificates pki_;
  ControlPlaneEndpoints endpoints_;
  int etcd_port_ = 0;
  int etcd_peer_port_ = 0;
  int apiserver_port_ = 0;
  std::vector<std::unique_ptr<Component>> components_;
  std::unique_ptr<RealNode> real_node_;
  nlohmann::json phases_ = nlohmann::json::object();
  std::map<std::string, int> probe_counts_;  // readiness probes per component
  int port_retries_ = 0;                     // starts retried because a picked port was taken
  bool stopped_ = false;
};

}  // namespace perimeter::localcluster
