#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "cluster/local_cluster.h"
#include "localcluster/tools.h"

namespace perimeter::agentenvironment {

// Installs Perimeter's CRDs in the shared control plane the way users install them (kubectl
// apply of the manifests in crds/) and waits until AgentEnvironments are served. Idempotent.
inline void install_crds() {
  auto& cluster = perimeter::testing::shared_cluster();
  const std::string kubectl = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
                              " --kubeconfig " + cluster.kubeconfig_path();
  const std::string command = kubectl + " apply -f " + std::getenv("PERIMETER_SOURCE_DIR") +
                              "/crds/ && " + kubectl +
                              " wait --for condition=established --timeout=60s"
                              " crd/agentenvironments.perimeter.dev";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

}  // namespace perimeter::agentenvironment
