#include "bench_cluster.h"

#include <cstdlib>
#include <iostream>

#include "localcluster/tools.h"

namespace perimeter::bench {

std::unique_ptr<testing::LocalCluster> start_bench_cluster(const std::string& source) {
  testing::LocalClusterOptions options;
  options.controller_manager = true;
  options.scheduler = true;
  options.kwok_nodes = 10;
  std::cerr << "starting the control plane...\n";
  auto cluster = testing::LocalCluster::start(options);
  const std::string kubectl = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
                              " --kubeconfig " + cluster->kubeconfig_path();
  if (std::system(  // NOLINT(concurrency-mt-unsafe): one set-up step, before any bench thread
          (kubectl + " apply -f " + source + "/crds/ >/dev/null && " + kubectl +
           " wait --for condition=established --timeout=60s crd --all >/dev/null")
              .c_str()) != 0) {
    std::cerr << "could not install the CRDs\n";
    return nullptr;
  }
  return cluster;
}

namespace {

kube::Config unthrottled(const std::string& kubeconfig_path) {
  auto config = kube::Config::from_kubeconfig_file(kubeconfig_path);
  config.qps = 0;
  return config;
}

}  // namespace

BenchKube::BenchKube(const std::string& kubeconfig_path)
    : transport(unthrottled(kubeconfig_path)),
      client_metrics(registry),
      runtime_metrics(registry),
      namespaces(transport, kube::resources::namespaces(), client_metrics),
      secrets(transport, kube::resources::secrets(), client_metrics),
      pods(transport, kube::resources::pods(), client_metrics),
      agent_environments(
          transport, {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true},
          client_metrics) {}

void create_namespace_with_environment_key(BenchKube& kube, const std::string& ns,
                                           const std::string& environment_key) {
  kube.namespaces.create(
      "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});
  kube.secrets.create(
      ns, {{"apiVersion", "v1"},
           {"kind", "Secret"},
           {"metadata", {{"name", "key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
           {"stringData", {{"environment-key", environment_key}}}});
}

}  // namespace perimeter::bench
