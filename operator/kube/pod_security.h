#pragma once

#include <nlohmann/json.hpp>

namespace perimeter::kube {

// A container's securityContext under the "restricted" Pod Security Standard, as every container
// Perimeter renders runs: no privilege escalation, no capabilities, non-root, read-only root.
// One definition, so the runner's, the egress gateway's and the McpTunnel gateway's containers
// cannot drift apart.
nlohmann::json restricted_container_security_context();

}  // namespace perimeter::kube
