#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "kube/json_filter.h"

namespace perimeter::agentenvironment {

// Reduces a runner pod to what the AgentEnvironment controller reads of it, for its informer
// cache (client-go's SetTransform): identity and versions, labels, annotations and owners;
// the scheduling gate an earlier version set and activeDeadlineSeconds; the phase, reason, start
// time, and each container's start and termination.
// Everything else (the pod template the operator wrote itself, managedFields, conditions, IPs) is
// dropped, so ten thousand cached sessions fit in a small operator (bench/runner_pod_cache has the
// figures).
void trim_runner_pod(nlohmann::json& pod);

// What trim_runner_pod keeps, as a filter for the watch's decode: the informer builds only
// these fields of each event's pod (a superset: labels and annotations whole), then trims.
std::shared_ptr<const kube::JsonFilter> runner_pod_decode_filter();

// The string at `key` of a cached object, by reference ("" when absent or not a string): the
// census and the session survey read cached pods in place, and a copy per field was most of
// their cost.
const std::string& cached_string(const nlohmann::json& object, const std::string& key);

}  // namespace perimeter::agentenvironment
