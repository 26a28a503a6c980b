#include "controllers/agentenvironment/runner_start_latency.h"

#include <algorithm>

#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "core/time_format.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

const json& member(const json& object, const char* key) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  const auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> runner_started_at(const json& pod) {
  const json& containers = member(member(pod, "status"), "containerStatuses");
  if (!containers.is_array()) return std::nullopt;
  for (const auto& container : containers) {
    if (cached_string(container, "name") != "runner") continue;
    const json& state = member(container, "state");
    for (const char* phase : {"running", "terminated"}) {
      const std::string& started = cached_string(member(state, phase), "startedAt");
      if (!started.empty()) return parse_rfc3339(started);
    }
  }
  return std::nullopt;
}

RunnerStartLatency::RunnerStartLatency(OperatorMetrics& metrics,
                                       std::chrono::system_clock::time_point claims_from)
    : metrics_(metrics), claims_from_(claims_from) {}

void RunnerStartLatency::survey(const std::string& environment,
                                const std::vector<const json*>& pods) {
  static const std::string kClaimedAt{kAnnotationClaimedAt}, kWarm{kLabelWarm};
  std::lock_guard lock(mutex_);
  const std::set<std::string>& observed = observed_[environment];
  std::set<std::string> kept;
  for (const json* pod : pods) {
    const json& metadata = member(*pod, "metadata");
    const std::string& uid = cached_string(metadata, "uid");
    if (uid.empty()) continue;
    // A warm pod's runner started before its claim, waiting for one: its figure would read 0 and
    // hide slow cold starts (perimeter_claim_seconds{kind="warm"} is the warm claim's figure).
    if (cached_string(member(metadata, "labels"), kWarm) == "true") continue;
    if (observed.contains(uid)) {
      kept.insert(uid);
      continue;
    }
    const auto started = runner_started_at(*pod);
    if (!started) continue;
    const auto claimed =
        parse_rfc3339_micros(cached_string(member(metadata, "annotations"), kClaimedAt));
    if (!claimed || *claimed < claims_from_) continue;  // an earlier term's claim
    // startedAt has whole seconds and the claim microseconds: a start in the claim's own second
    // reads as before it, and is observed as immediate.
    const double seconds =
        std::max(0.0, std::chrono::duration<double>(*started - *claimed).count());
    metrics_.observe_claim_to_runner_started(environment, seconds);
    kept.insert(uid);
  }
  observed_[environment] = std::move(kept);
}

void RunnerStartLatency::forget(const std::string& environment) {
  std::lock_guard lock(mutex_);
  observed_.erase(environment);
}

}  // namespace perimeter::agentenvironment
