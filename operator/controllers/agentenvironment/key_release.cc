#include "controllers/agentenvironment/key_release.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "core/strings.h"

namespace perimeter::agentenvironment {

std::optional<KeyRefusal> check_api_host(const AgentEnvironment& env,
                                         const ApiHostAllowList& allowed) {
  std::string why;
  const auto origin = parse_api_origin(env.api_base_url, &why);
  if (!origin) {
    return KeyRefusal{"InvalidApiBaseUrl",
                      "spec.apiBaseUrl '" + env.api_base_url + "' is not usable: " + why};
  }
  if (!allowed.allows(*origin)) {
    return KeyRefusal{"ApiHostNotAllowed",
                      "spec.apiBaseUrl " + origin->str() +
                          " is not an API host this operator sends environment keys to (allowed: " +
                          allowed.describe() +
                          "); the key was not read. An operator administrator can add it with "
                          "--allowed-api-hosts (Helm value allowedApiHosts)"};
  }
  return std::nullopt;
}

std::optional<KeyRefusal> check_key_secret(const nlohmann::json& secret,
                                           const AgentEnvironment& env) {
  const std::string where = "Secret " + env.namespace_ + "/" + env.key_secret_name;
  const auto& metadata =
      secret.is_object() && secret.contains("metadata") && secret["metadata"].is_object()
          ? secret["metadata"]
          : nlohmann::json::object();
  const auto labels = metadata.value("labels", nlohmann::json::object());
  const auto mark = labels.find(std::string(kLabelEnvironmentKey));
  if (mark == labels.end() || !mark->is_string() || *mark != "true") {
    return KeyRefusal{"SecretNotMarked",
                      where +
                          " is not marked as an environment key for Perimeter, so it is not "
                          "sent anywhere; someone who may manage Secrets here marks it: kubectl "
                          "-n " +
                          env.namespace_ + " label secret " + env.key_secret_name + " " +
                          std::string(kLabelEnvironmentKey) + "=true"};
  }
  const auto annotations = metadata.value("annotations", nlohmann::json::object());
  const auto ids = annotations.find(std::string(kAnnotationEnvironmentIds));
  if (ids != annotations.end() && ids->is_string()) {
    const auto allowed = split_commas(ids->get<std::string>());
    if (std::find(allowed.begin(), allowed.end(), env.environment_id) == allowed.end()) {
      return KeyRefusal{"SecretNotForEnvironment",
                        where + " is marked for environments " + ids->get<std::string>() +
                            " only, not " + env.environment_id + "; its owner adds " +
                            env.environment_id + " to its " +
                            std::string(kAnnotationEnvironmentIds) + " annotation"};
    }
  }
  return std::nullopt;
}

}  // namespace perimeter::agentenvironment
