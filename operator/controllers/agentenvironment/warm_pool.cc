#include "controllers/agentenvironment/warm_pool.h"

#include <algorithm>
#include <set>

#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

const json& member_or_empty(const json& object, const std::string& key) {
  static const json kEmpty = json::object();
  if (!object.is_object()) return kEmpty;
  const auto it = object.find(key);
  return it == object.end() ? kEmpty : *it;
}

}  // namespace

bool unassigned_warm_pod(const json& pod) {
  static const std::string kMetadata = "metadata", kLabels = "labels", kAnnotations = "annotations",
                           kWarm{kLabelWarm}, kAssigned{kAnnotationAssignedWorkId};
  const json& metadata = member_or_empty(pod, kMetadata);
  return cached_string(member_or_empty(metadata, kLabels), kWarm) == "true" &&
         cached_string(member_or_empty(metadata, kAnnotations), kAssigned).empty();
}

bool assigned_warm_pod(const json& pod) {
  static const std::string kMetadata = "metadata", kLabels = "labels", kAnnotations = "annotations",
                           kWarm{kLabelWarm}, kAssigned{kAnnotationAssignedWorkId};
  const json& metadata = member_or_empty(pod, kMetadata);
  return cached_string(member_or_empty(metadata, kLabels), kWarm) == "true" &&
         !cached_string(member_or_empty(metadata, kAnnotations), kAssigned).empty();
}

const std::string& session_work_id(const json& pod) {
  static const std::string kMetadata = "metadata", kAnnotations = "annotations",
                           kWorkId{kAnnotationWorkId}, kAssigned{kAnnotationAssignedWorkId};
  const json& annotations = member_or_empty(member_or_empty(pod, kMetadata), kAnnotations);
  const std::string& cold = cached_string(annotations, kWorkId);
  return cold.empty() ? cached_string(annotations, kAssigned) : cold;
}

WarmPodState warm_pod_state(const json& pod) {
  const json& status = member_or_empty(pod, "status");
  const std::string& phase = cached_string(status, "phase");
  if (phase == "Succeeded" || phase == "Failed") return WarmPodState::kFinished;
  const json& metadata = member_or_empty(pod, "metadata");
  if (const auto it = metadata.find("deletionTimestamp"); it != metadata.end() && !it->is_null()) {
    return WarmPodState::kDeleting;
  }
  if (phase != "Running") return WarmPodState::kStarting;
  const json& containers = member_or_empty(status, "containerStatuses");
  if (!containers.is_array()) return WarmPodState::kStarting;
  for (const auto& container : containers) {
    if (cached_string(container, "name") != "runner") continue;
    const json& state = member_or_empty(container, "state");
    return state.contains("running") ? WarmPodState::kReady : WarmPodState::kStarting;
  }
  return WarmPodState::kStarting;
}

WarmPoolPlan plan_warm_pool(const WarmPoolInputs& in) {
  WarmPoolPlan plan;
  std::vector<const UnassignedWarmPod*> starting, ready;
  for (const auto& pod : in.pods) {
    // A pod not cached yet has no digest to read: this operator made it, of a recent template.
    const bool alive = pod.state == WarmPodState::kStarting || pod.state == WarmPodState::kReady;
    if (alive && !pod.uid.empty() && pod.template_hash != in.template_hash) {
      plan.remove.push_back(pod);
      ++plan.outdated;
      continue;
    }
    switch (pod.state) {
      case WarmPodState::kStarting:
        starting.push_back(&pod);
        break;
      case WarmPodState::kReady:
        ready.push_back(&pod);
        break;
      case WarmPodState::kFinished:
        if (!pod.uid.empty()) plan.remove.push_back(pod);
        break;
      case WarmPodState::kDeleting:
        break;  // on its way out; still an unfinished pod, counted by the caller
    }
  }
  plan.ready = ready.size();
  plan.starting = starting.size();
  const std::size_t alive = plan.ready + plan.starting;

  if (!in.suspended) {
    const std::size_t wanted =
        static_cast<std::size_t>(std::max(in.spec.min_ready, 0)) + in.recent_claims;
    plan.target = std::min(wanted, static_cast<std::size_t>(std::max(in.spec.max_ready, 0)));
  }
  // The limit is on every unfinished runner pod: a new warm pod takes a slot a cold claim could
  // have used, so the pool grows only into free slots. Pods already warm stay: a claim may still
  // turn one into a session when the limit is reached.
  const std::size_t limit = static_cast<std::size_t>(std::max(in.max_concurrent_sessions, 0));
  const std::size_t free_slots =
      in.unfinished_runner_pods < limit ? limit - in.unfinished_runner_pods : 0;
  if (alive < plan.target) {
    plan.create = std::min(plan.target - alive, free_slots);
    plan.held_by_session_limit = plan.create < plan.target - alive;
  }
  if (alive > plan.target) {
    // Newest first; a pod the cache does not show yet cannot be removed exactly (no uid), and
    // waits for the next pass.
    const auto newest_first = [](const UnassignedWarmPod* a, const UnassignedWarmPod* b) {
      return a->created != b->created ? a->created > b->created : a->name > b->name;
    };
    std::sort(starting.begin(), starting.end(), newest_first);
    std::sort(ready.begin(), ready.end(), newest_first);
    std::size_t surplus = alive - plan.target;
    for (const auto* group : {&starting, &ready}) {
      for (const auto* pod : *group) {
        if (surplus == 0) break;
        if (pod->uid.empty()) continue;
        plan.remove.push_back(*pod);
        --surplus;
      }
    }
  }
  return plan;
}

void WarmPoolExpectations::created(const std::string& environment, const std::string& name,
                                   Clock::TimePoint now) {
  std::lock_guard lock(mutex_);
  asked_[environment].created[name] = now;
}

void WarmPoolExpectations::removed(const std::string& environment, const std::string& uid,
                                   Clock::TimePoint now) {
  std::lock_guard lock(mutex_);
  asked_[environment].removed[uid] = now;
}

void WarmPoolExpectations::forget(const std::string& environment) {
  std::lock_guard lock(mutex_);
  asked_.erase(environment);
}

void WarmPoolExpectations::apply(const std::string& environment, Clock::TimePoint now,
                                 const std::function<bool(const std::string&)>& cached,
                                 WarmPoolInputs& inputs) {
  std::lock_guard lock(mutex_);
  const auto found = asked_.find(environment);
  if (found == asked_.end()) return;
  Asked& asked = found->second;
  std::set<std::string> cached_uids;
  for (auto& pod : inputs.pods) {
    cached_uids.insert(pod.uid);
    const auto removal = asked.removed.find(pod.uid);
    if (removal == asked.removed.end()) continue;
    if (pod.state == WarmPodState::kStarting || pod.state == WarmPodState::kReady) {
      pod.state = WarmPodState::kDeleting;  // the cache has not shown the deletion yet
    } else {
      asked.removed.erase(removal);  // it shows the pod deleting or finished
    }
  }
  std::erase_if(asked.removed, [&](const auto& entry) {
    return !cached_uids.contains(entry.first) || now - entry.second >= horizon_;
  });
  // A created pod is the cache's once it shows it under any state, assigned included.
  std::erase_if(asked.created, [&](const auto& entry) {
    return cached(entry.first) || now - entry.second >= horizon_;
  });
  for (const auto& [name, when] : asked.created) {
    UnassignedWarmPod pending;
    pending.name = name;
    pending.state = WarmPodState::kStarting;
    inputs.pods.push_back(std::move(pending));
    ++inputs.unfinished_runner_pods;
  }
  if (asked.created.empty() && asked.removed.empty()) asked_.erase(found);
}

std::size_t RecentClaims::update(const std::string& environment,
                                 const std::map<std::string, WallTime>& seen, WallTime now) {
  std::lock_guard lock(mutex_);
  auto& claims = claims_[environment];
  for (const auto& [uid, at] : seen) claims[uid] = at;
  std::erase_if(claims, [&](const auto& entry) { return entry.second < now - window_; });
  const std::size_t count = claims.size();
  if (claims.empty()) claims_.erase(environment);
  return count;
}

std::optional<std::chrono::system_clock::duration> RecentClaims::next_expiry(
    const std::string& environment, WallTime now) {
  std::lock_guard lock(mutex_);
  const auto found = claims_.find(environment);
  if (found == claims_.end()) return std::nullopt;
  WallTime oldest = WallTime::max();
  for (const auto& [uid, at] : found->second) oldest = std::min(oldest, at);
  const auto leaves = oldest + window_;
  return leaves > now ? leaves - now : std::chrono::system_clock::duration::zero();
}

void RecentClaims::forget(const std::string& environment) {
  std::lock_guard lock(mutex_);
  claims_.erase(environment);
}

}  // namespace perimeter::agentenvironment
