#include "runtime/conditions.h"

namespace perimeter::runtime {

const nlohmann::json* find_condition(const nlohmann::json& conditions, const std::string& type) {
  if (!conditions.is_array()) return nullptr;
  for (const auto& condition : conditions) {
    if (condition.is_object() && condition.value("type", "") == type) return &condition;
  }
  return nullptr;
}

void set_condition(nlohmann::json& conditions, const std::string& type, const std::string& status,
                   const std::string& reason, const std::string& message,
                   std::int64_t observed_generation, const std::string& now_rfc3339) {
  if (!conditions.is_array()) conditions = nlohmann::json::array();
  nlohmann::json* existing = nullptr;
  for (auto& condition : conditions) {
    if (condition.is_object() && condition.value("type", "") == type) existing = &condition;
  }
  std::string transition = now_rfc3339;
  if (existing != nullptr && existing->value("status", "") == status) {
    transition = existing->value("lastTransitionTime", now_rfc3339);
  }
  nlohmann::json updated = {{"type", type},
                            {"status", status},
                            {"reason", reason},
                            {"message", message},
                            {"observedGeneration", observed_generation},
                            {"lastTransitionTime", transition}};
  if (existing != nullptr) {
    *existing = std::move(updated);
  } else {
    conditions.push_back(std::move(updated));
  }
}

}  // namespace perimeter::runtime
