#include "runtime/desired_state.h"

namespace perimeter::runtime {

bool json_contains(const nlohmann::json& have, const nlohmann::json& want) {
  if (want.is_object()) {
    if (!have.is_object()) return false;
    for (const auto& [key, value] : want.items()) {
      const auto it = have.find(key);
      // The apiserver omits an empty list when it stores an object: absent is what [] became.
      if (it == have.end() && value.is_array() && value.empty()) continue;
      if (it == have.end() || !json_contains(*it, value)) return false;
    }
    return true;
  }
  if (want.is_array()) {
    if (!have.is_array() || have.size() != want.size()) return false;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!json_contains(have[i], want[i])) return false;
    }
    return true;
  }
  return have == want;
}

}  // namespace perimeter::runtime
