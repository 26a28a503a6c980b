#include "controllers/agentenvironment/duplicates.h"

#include <tuple>

namespace perimeter::agentenvironment {

std::optional<std::string> earlier_claimant(
    const runtime::Store& environments, const AgentEnvironment& env,
    const std::function<bool(const std::string& ns)>& may_serve) {
  const auto order = [](const nlohmann::json& metadata) {
    return std::make_tuple(metadata.value("creationTimestamp", std::string()),
                           metadata.value("namespace", std::string()),
                           metadata.value("name", std::string()));
  };
  std::optional<std::tuple<std::string, std::string, std::string>> own;
  std::optional<std::tuple<std::string, std::string, std::string>> first;
  for (const auto& object : environments.list()) {
    const auto& metadata = (*object)["metadata"];
    if (metadata.contains("deletionTimestamp")) continue;
    const auto& spec = object->value("spec", nlohmann::json::object());
    if (spec.value("environmentId", std::string()) != env.environment_id) continue;
    if (spec.value("apiBaseUrl", std::string("https://api.anthropic.com")) != env.api_base_url) {
      continue;
    }
    const std::string ns = metadata.value("namespace", std::string());
    const auto key = order(metadata);
    if (ns == env.namespace_ && metadata.value("name", std::string()) == env.name) {
      own = key;
      continue;
    }
    if (!may_serve(ns)) continue;
    if (!first || key < *first) first = key;
  }
  if (!first || (own && *own < *first)) return std::nullopt;
  return std::get<1>(*first) + "/" + std::get<2>(*first);
}

}  // namespace perimeter::agentenvironment
