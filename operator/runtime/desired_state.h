#pragma once

#include <nlohmann/json.hpp>

namespace perimeter::runtime {

// Whether a live object `have` holds everything the desired `want` does: objects key by key (extra
// keys in `have`, such as fields the apiserver defaulted, are allowed; an empty list in `want` may
// be absent from `have`, as the apiserver drops it), arrays element by element, scalars equal.
// What decides whether a cached child has drifted and must be written again.
bool json_contains(const nlohmann::json& have, const nlohmann::json& want);

}  // namespace perimeter::runtime
