#pragma once

#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "cluster/local_cluster.h"
#include "kube/client_metrics.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "runtime/metrics.h"

namespace perimeter::bench {

// The local control plane the operator benchmarks run on: scheduler, controller manager and ten
// KWOK nodes, with Perimeter's CRDs (from `source`/crds) installed and established. Null, after
// saying why on stderr, when the CRDs cannot be installed.
std::unique_ptr<testing::LocalCluster> start_bench_cluster(const std::string& source);

// What a benchmark drives that cluster with: one transport without a client-side rate limit (the
// bench measures the operator, not its own client), its metrics, and the clients the operator
// benches use. Other clients are made from `transport` and `client_metrics`.
struct BenchKube {
  explicit BenchKube(const std::string& kubeconfig_path);
  kube::HttpTransport transport;
  prometheus::Registry registry{};
  kube::ClientMetrics client_metrics;
  runtime::RuntimeMetrics runtime_metrics;
  kube::ResourceClient namespaces;
  kube::ResourceClient secrets;
  kube::ResourceClient pods;
  kube::ResourceClient agent_environments;
};

// The namespace `ns`, and in it the Secret "key" holding `environment_key` under the label the
// operator watches environment keys by: what an AgentEnvironment's environmentKeySecretRef names.
void create_namespace_with_environment_key(BenchKube& kube, const std::string& ns,
                                           const std::string& environment_key);

}  // namespace perimeter::bench
