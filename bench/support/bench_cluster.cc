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

}  // namespace perimeter::bench
