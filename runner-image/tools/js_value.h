#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace perimeter::tools {

// The SDK's tools take the model's JSON unvalidated and lean on JavaScript's coercions; these
// reproduce the few coercions they rely on, so a bad input gets the result the SDK would give.

// The input field `name`, or nullptr when absent (JavaScript's undefined).
const nlohmann::json* field(const nlohmann::json& input, std::string_view name);
// `!!value`; nullptr is undefined.
bool js_truthy(const nlohmann::json* value);
// `String(value)` / a template literal of the value.
std::string js_to_string(const nlohmann::json& value);
// `Number(value)`; NaN for what does not convert.
double js_to_number(const nlohmann::json& value);
// Number#toString: shortest round-trip digits in JavaScript's notation.
std::string js_number_to_string(double value);
// Node's ERR_INVALID_ARG_TYPE tail for a non-string: "type number (5)", "an instance of Array".
std::string node_received(const nlohmann::json& value);
// JSON.stringify(value) for a value that came from JSON.
std::string js_json_stringify(const nlohmann::json& value);

}  // namespace perimeter::tools
