#include "sim/faults.h"

namespace perimeter::sim {

nlohmann::json FaultConfig::to_json() const {
  return {{"error_5xx_rate", error_5xx_rate},
          {"error_429_rate", error_429_rate},
          {"reset_rate", reset_rate},
          {"non_json_rate", non_json_rate},
          {"heartbeat_412_rate", heartbeat_412_rate},
          {"undecodable_secret_rate", undecodable_secret_rate},
          {"sse_drop_rate", sse_drop_rate},
          {"sse_drop_after_events", sse_drop_after_events},
          {"sse_drop_first_streams", sse_drop_first_streams},
          {"latency_ms", latency_ms},
          {"reissue_secret_on_reclaim", reissue_secret_on_reclaim}};
}

bool FaultConfig::merge(const nlohmann::json& patch, std::string* error) {
  if (!patch.is_object()) {
    *error = "faults must be a JSON object";
    return false;
  }
  FaultConfig next = *this;
  double* rates[] = {&next.error_5xx_rate, &next.error_429_rate,     &next.reset_rate,
                     &next.non_json_rate,  &next.heartbeat_412_rate, &next.undecodable_secret_rate,
                     &next.sse_drop_rate};
  const char* rate_names[] = {"error_5xx_rate", "error_429_rate",     "reset_rate",
                              "non_json_rate",  "heartbeat_412_rate", "undecodable_secret_rate",
                              "sse_drop_rate"};
  for (const auto& [key, value] : patch.items()) {
    bool known = false;
    for (std::size_t i = 0; i < std::size(rate_names); ++i) {
      if (key != rate_names[i]) continue;
      known = true;
      if (!value.is_number() || value.get<double>() < 0 || value.get<double>() > 1) {
        *error = key + " must be a number between 0 and 1";
        return false;
      }
      *rates[i] = value.get<double>();
    }
    if (key == "latency_ms" || key == "sse_drop_after_events" || key == "sse_drop_first_streams") {
      known = true;
      if (!value.is_number_integer() || value.get<long long>() < 0 ||
          value.get<long long>() > 600000) {
        *error = key + " must be an integer between 0 and 600000";
        return false;
      }
      int& field = key == "latency_ms"              ? next.latency_ms
                   : key == "sse_drop_after_events" ? next.sse_drop_after_events
                                                    : next.sse_drop_first_streams;
      field = value.get<int>();
    }
    if (key == "reissue_secret_on_reclaim") {
      known = true;
      if (!value.is_boolean()) {
        *error = key + " must be true or false";
        return false;
      }
      next.reissue_secret_on_reclaim = value.get<bool>();
    }
    if (!known) {
      *error = "unknown fault `" + key + "`";
      return false;
    }
  }
  *this = next;
  return true;
}

FaultConfig Faults::config() const {
  std::lock_guard lock(mutex_);
  return config_;
}

bool Faults::update(const nlohmann::json& patch, std::string* error) {
  std::lock_guard lock(mutex_);
  return config_.merge(patch, error);
}

void Faults::set(const FaultConfig& config) {
  std::lock_guard lock(mutex_);
  config_ = config;
}

bool Faults::roll(double probability) {
  if (probability <= 0) return false;
  return random_.uniform01() < probability;
}

}  // namespace perimeter::sim
