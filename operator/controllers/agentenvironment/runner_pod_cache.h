#pragma once

#include <nlohmann/json.hpp>

namespace perimeter::agentenvironment {

// Reduces a runner pod to what the AgentEnvironment controller reads of it, for its informer
// cache (client-go's SetTransform): identity and versions, labels, annotations and owners;
// the scheduling gate an earlier version set; the phase, reason and each container's termination.
// Everything else (the pod template the operator wrote itself, managedFields, conditions, IPs) is
// dropped, so ten thousand cached sessions fit in a small operator (bench/runner_pod_cache has the
// figures).
void trim_runner_pod(nlohmann::json& pod);

}  // namespace perimeter::agentenvironment
