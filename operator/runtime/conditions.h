#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace perimeter::runtime {

// Sets condition `type` in a status.conditions list (Kubernetes API conventions): the
// lastTransitionTime moves only when the status changes, so it says since when a state holds.
void set_condition(nlohmann::json& conditions, const std::string& type, const std::string& status,
                   const std::string& reason, const std::string& message,
                   std::int64_t observed_generation, const std::string& now_rfc3339);

// The condition of that type, or null.
const nlohmann::json* find_condition(const nlohmann::json& conditions, const std::string& type);

}  // namespace perimeter::runtime
