#pragma once

// Reading a custom resource's JSON into a typed struct, once, at the edge (kube-rs style): a
// present field of the wrong type is an error naming the field, never a half-applied spec.

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace perimeter::runtime {

// A spec the schema let through but a controller cannot act on (an object stored before a schema
// change, say). Reported in a condition; never a crash.
class SpecError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads `object[key]` as T when present and not null; a value of the wrong type throws SpecError
// naming `path.key`.
template <typename T>
void read_optional(const nlohmann::json& object, const char* key, const std::string& path, T* out) {
  if (!object.is_object()) return;
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return;
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw SpecError(path + "." + key + " has the wrong type: " + it->dump());
  }
}

// `object[key]` when it is an object; otherwise an empty object (absent optional blocks).
const nlohmann::json& child(const nlohmann::json& object, const char* key);

// A string field that must be present and non-empty.
std::string required_string(const nlohmann::json& object, const char* key, const std::string& path);

}  // namespace perimeter::runtime
