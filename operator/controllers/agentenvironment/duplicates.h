#pragma once

#include <functional>
#include <optional>
#include <string>

#include "controllers/agentenvironment/agent_environment.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {

// Two AgentEnvironments that serve the same hosted environment (same environmentId at the same
// API) would both claim its items and could start two pods for one item. The one created first
// (then the smaller namespace/name) serves it; this returns that one's "namespace/name" when it is
// not `env`, or nullopt when `env` is the one to serve. Only environments `may_serve` accepts
// (their namespace opted in) count: one that can never poll must not shut out the others.
std::optional<std::string> earlier_claimant(
    const runtime::Store& environments, const AgentEnvironment& env,
    const std::function<bool(const std::string& ns)>& may_serve);

}  // namespace perimeter::agentenvironment
