#include "runtime/spec_fields.h"

namespace perimeter::runtime {

const nlohmann::json& child(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  if (!object.is_object()) return kEmpty;
  const auto it = object.find(key);
  return it == object.end() || !it->is_object() ? kEmpty : *it;
}

std::string required_string(const nlohmann::json& object, const char* key,
                            const std::string& path) {
  std::string value;
  read_optional(object, key, path, &value);
  if (value.empty()) throw SpecError(path + "." + key + " is required");
  return value;
}

}  // namespace perimeter::runtime
