#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace perimeter::agentapi {

// Typed reads of an API object's fields, for the clients' parsers. Errors are ProtocolErrors
// that name the object and the field, never the field's value (it may be a credential).

// A string field that must be there.
std::string require_string(const nlohmann::json& object, const char* key, std::string_view what);
// A string field that may be missing, null or of another type (nullopt then).
std::optional<std::string> optional_string(const nlohmann::json& object, const char* key);
// A field the API documents as `string | null`: nullopt for null or missing, a ProtocolError for
// any other type.
std::optional<std::string> nullable_string(const nlohmann::json& object, const char* key,
                                           std::string_view what);
// `object["type"]` must be `expected` (the API's discriminator, e.g. "tunnel").
void require_type(const nlohmann::json& object, std::string_view expected, std::string_view what);

}  // namespace perimeter::agentapi
