#pragma once

#include <memory>
#include <string>

#include "cluster/local_cluster.h"

namespace perimeter::bench {

// The local control plane the operator benchmarks run on: scheduler, controller manager and ten
// KWOK nodes, with Perimeter's CRDs (from `source`/crds) installed and established. Null, after
// saying why on stderr, when the CRDs cannot be installed.
std::unique_ptr<testing::LocalCluster> start_bench_cluster(const std::string& source);

}  // namespace perimeter::bench
