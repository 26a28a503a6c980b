// Starts a LocalCluster, prints what a test needs to find its processes and folder as one JSON
// line, then waits to be killed. The cleanup test SIGKILLs it to prove nothing outlives it.
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cluster/local_cluster.h"

int main(int argc, char** argv) {
  perimeter::testing::LocalClusterOptions options;
  if (argc > 1) options.kwok_nodes = std::atoi(argv[1]);
  try {
    auto cluster = perimeter::testing::LocalCluster::start(options);
    nlohmann::json started = {{"dir", cluster->dir()},
                              {"supervisor_pid", cluster->supervisor_pid()},
                              {"component_pids", cluster->component_pids()}};
    std::cout << started.dump() << std::endl;
    while (true) ::pause();
  } catch (const std::exception& e) {
    std::cout << nlohmann::json{{"error", e.what()}}.dump() << std::endl;
    return 1;
  }
}
