#pragma once

#include <string>

#include "cluster/local_cluster.h"

namespace perimeter::e2e {

// server-everything's image (hack/setup/mcp-everything-image.sh, which `make setup` runs), as the
// real node imports it: localhost/perimeter/mcp-everything:<server-everything's version>.
inline constexpr const char* kMcpEverythingImage = "localhost/perimeter/mcp-everything:2026.8.31";

// Where that script left the archive; throws std::runtime_error naming `make setup` when it is
// missing or stale.
std::string mcp_everything_image_archive();

// The one real-node cluster every test of real_node_e2e_test shares (testing::shared_cluster):
// a scheduler, the controller manager, and the runner, perimeter-mcp-guard and server-everything
// images imported into the node's containerd.
testing::LocalClusterOptions real_node_cluster_options();

}  // namespace perimeter::e2e
