#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "process/process.h"

namespace perimeter::testing {

// What a test needs from its control plane. etcd and kube-apiserver always run.
//
// What each part gives you (and what you lack without it):
//  - controller_manager: garbage collection (ownerReferences), Deployments -> ReplicaSets -> Pods,
//    Jobs, namespace deletion, and the `default` ServiceAccount in each namespace. Without it
//    nothing is garbage-collected and no ServiceAccount exists, so Pods are rejected by the
//    ServiceAccount admission plugin unless the test creates the ServiceAccount itself.
//  - scheduler: binds Pods to Nodes. Without it Pods stay Pending unless spec.nodeName is set.
//  - kwok_nodes: fake Nodes (kwok-node-0...) that are Ready; a Pod bound to one goes Running.
//    A Running Pod annotated `perimeter.dev/kwok-complete-after: 5s` goes Succeeded 5 s later
//    (Failed when also annotated `perimeter.dev/kwok-exit-code: "<non-zero>"`).
struct LocalClusterOptions {
  bool controller_manager = false;  // garbage collection, deployments, namespaces, SAs
  bool scheduler = false;
  int kwok_nodes = 0;  // >0 starts KWOK and creates that many Ready fake nodes
  std::vector<std::string> extra_apiserver_flags;
  // A real kubelet on a containerd of its own (localcluster/real_node.h): pods that tolerate the
  // taint `perimeter.dev/real-node=true:NoSchedule` and select the label
  // `perimeter.dev/real-node=true` really run (images from hack/images/build-images.sh, with
  // imagePullPolicy Never). Needs root; a missing binary or kernel feature fails the start.
  bool real_node = false;
  // More OCI archives for the real node to import, each named
  // localhost/perimeter/<file name without .tar>:<its tag> (runner_image_archive() below).
  std::vector<std::string> images;

  bool operator==(const LocalClusterOptions&) const = default;
};

// A real control plane on 127.0.0.1 (free ports, throwaway certificates, one temp folder), run
// by a `perimeter-local-cluster serve` supervisor process. The supervisor stops everything and
// removes the folder when this object is destroyed, and also when this process dies in any way
// (SIGKILL included): it gets SIGTERM as its parent-death signal and sees EOF on its stdin.
// Start it from a thread that lives as long as the cluster (the test's main thread): the kernel
// sends the parent-death signal when the *spawning thread* exits.
class LocalCluster {
 public:
  // Starts everything and waits until ready; throws std::runtime_error with a clear message
  // (a missing binary is named with the command that builds it; a component that fails to start
  // comes with the tail of its log).
  static std::unique_ptr<LocalCluster> start(const LocalClusterOptions& options);
  ~LocalCluster();  // stops everything, removes the dir
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  const std::string& kubeconfig_path() const { return kubeconfig_; }
  const std::string& apiserver_url() const { return apiserver_url_; }  // https://127.0.0.1:<port>
  const std::string& ca_file() const { return ca_file_; }
  const std::string& client_cert_file() const { return client_cert_file_; }
  const std::string& client_key_file() const { return client_key_file_; }
  const std::string& etcd_url() const { return etcd_url_; }  // http://127.0.0.1:<port>
  const std::string& dir() const { return dir_; }
  const LocalClusterOptions& options() const { return options_; }

  // Stops kube-apiserver and starts it on the same port; returns once /readyz is ok.
  void restart_apiserver();

  // The supervisor's pid and the component pids (tests that check nothing leaks use them).
  pid_t supervisor_pid() const;
  std::vector<pid_t> component_pids() const { return component_pids_; }
  // The real node's description (name, bridge, pod_subnet, cgroup_root, containerd_socket,
  // phases...), null without one.
  const nlohmann::json& real_node() const { return real_node_; }
  // Start-up phases in milliseconds as the supervisor measured them (total_ms, ...).
  const nlohmann::json& phases() const { return phases_; }
  // Folder of the log of each component: <dir>/logs/<component>.log.
  std::string log_path(const std::string& component) const;

 private:
  LocalCluster() = default;
  // Sends one command to the supervisor and waits for its answer line.
  std::string command(const std::string& line, const std::string& wanted_event,
                      std::chrono::seconds timeout);

  LocalClusterOptions options_;
  std::unique_ptr<process::Process> supervisor_;
  std::string kubeconfig_, apiserver_url_, ca_file_, client_cert_file_, client_key_file_, etcd_url_,
      dir_;
  std::vector<pid_t> component_pids_;
  nlohmann::json real_node_;
  nlohmann::json phases_;
};

// Where the perimeter-local-cluster binary is: $PERIMETER_BIN_DIR (set by ctest), else next to
// the running test binary's build tree, else PATH.
std::string local_cluster_binary();

// The runner image archive `make build` writes (<build>/images/perimeter-runner.tar, found from
// $PERIMETER_BIN_DIR), for LocalClusterOptions::images; pods name it kRunnerImage. Throws
// std::runtime_error naming the build step when it is missing.
inline constexpr const char* kRunnerImage = "localhost/perimeter/perimeter-runner:0.1.0";
std::string runner_image_archive();

// The perimeter-mcp-guard image archive `make build` writes (<build>/images/
// perimeter-mcp-guard.tar), imported as kGuardImage (the McpTunnel controller's default guard
// image). Throws std::runtime_error naming the build step when it is missing.
inline constexpr const char* kGuardImage = "localhost/perimeter/perimeter-mcp-guard:0.1.0";
std::string guard_image_archive();

// The perimeter-egress-gateway image archive `make build` writes (<build>/images/
// perimeter-egress-gateway.tar), imported as kEgressGatewayImage (the operator's default
// --egress-gateway-image). Throws std::runtime_error naming the build step when it is missing.
inline constexpr const char* kEgressGatewayImage =
    "localhost/perimeter/perimeter-egress-gateway:0.1.0";
std::string egress_gateway_image_archive();

// The perimeter-operator image archive `make build` writes (<build>/images/
// perimeter-operator.tar, operator/image/build-image.sh), imported as kOperatorImage: the chart's
// image with image.repository=localhost/perimeter/perimeter-operator and its appVersion as tag.
// Throws std::runtime_error naming the build step when it is missing.
inline constexpr const char* kOperatorImageRepository = "localhost/perimeter/perimeter-operator";
std::string operator_image_archive();

// A cluster shared by all tests of one test binary, started on first use with these options
// (a GoogleTest Environment tears it down at exit). Asking again with different options is a
// bug in the test binary and throws std::logic_error.
LocalCluster& shared_cluster(const LocalClusterOptions& options = {});

}  // namespace perimeter::testing
