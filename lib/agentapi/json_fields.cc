#include "agentapi/json_fields.h"

#include "agentapi/api_error.h"

namespace perimeter::agentapi {

std::string require_string(const nlohmann::json& object, const char* key, std::string_view what) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_string()) {
    throw ProtocolError(std::string(what) + ": field `" + key + "` is missing or not a string");
  }
  return object[key].get<std::string>();
}

std::optional<std::string> optional_string(const nlohmann::json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_string()) {
    return std::nullopt;
  }
  return object[key].get<std::string>();
}

std::optional<std::string> nullable_string(const nlohmann::json& object, const char* key,
                                           std::string_view what) {
  if (!object.is_object()) throw ProtocolError(std::string(what) + ": not a JSON object");
  if (!object.contains(key) || object[key].is_null()) return std::nullopt;
  if (!object[key].is_string()) {
    throw ProtocolError(std::string(what) + ": field `" + key + "` is neither a string nor null");
  }
  return object[key].get<std::string>();
}

void require_type(const nlohmann::json& object, std::string_view expected, std::string_view what) {
  if (!object.is_object()) throw ProtocolError(std::string(what) + ": not a JSON object");
  const std::string type = require_string(object, "type", what);
  if (type != expected) {
    throw ProtocolError(std::string(what) + ": field `type` is \"" + type.substr(0, 60) +
                        "\", expected \"" + std::string(expected) + "\"");
  }
}

}  // namespace perimeter::agentapi
