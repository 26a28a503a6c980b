#pragma once

// The warm pool of an AgentEnvironment (spec.warmPool, docs/warm-pool.md "The pool"): how many
// warm runner pods it keeps, decided from the pod cache alone, and the port that makes and
// removes them.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "controllers/agentenvironment/agent_environment.h"
#include "core/clock.h"

namespace perimeter::agentenvironment {

// A warm pod that no claim has assigned, as the pod cache shows it.
enum class WarmPodState {
  kStarting,  // not running yet (scheduling, pulling, starting the runner)
  kReady,     // Running, its "runner" container running: a claim may take it
  kFinished,  // Succeeded or Failed: the pool shrank (SIGTERM, exit 0) or it failed
  kDeleting,  // being deleted: no longer the pool's, still a pod until it ends
};

// Whether `pod` (a cached runner pod) is a warm pod no claim has assigned: labelled
// perimeter.dev/warm=true without perimeter.dev/assigned-work-id. Such a pod is not a session.
bool unassigned_warm_pod(const nlohmann::json& pod);

// Whether `pod` is a warm pod a claim has assigned: labelled perimeter.dev/warm=true with
// perimeter.dev/assigned-work-id. Such a pod is a session's, served warm.
bool assigned_warm_pod(const nlohmann::json& pod);

// The work id of the session a runner pod serves: perimeter.dev/work-id on a cold pod,
// perimeter.dev/assigned-work-id on an assigned warm pod; empty on an unassigned warm pod.
const std::string& session_work_id(const nlohmann::json& pod);

// The state of a warm pod as cached.
WarmPodState warm_pod_state(const nlohmann::json& pod);

struct UnassignedWarmPod {
  std::string name{};
  std::string uid{};  // empty: created by this operator, not in the cache yet
  std::string resource_version{};
  std::string created{};  // creationTimestamp, RFC 3339 (orders pods by age)
  WarmPodState state = WarmPodState::kStarting;
  // Finished with a failure of its own (not the pool's SIGTERM, nor its deadline): why.
  std::string failure{};
  // The digest of the runner template it was made from (kAnnotationWarmTemplate).
  std::string template_hash{};
};

struct WarmPoolInputs {
  WarmPoolSpec spec{};
  bool suspended = false;  // spec.suspend: nothing is claimed, so nothing is kept warm
  int max_concurrent_sessions = 0;
  // Every unfinished runner pod of the environment: sessions' and warm ones.
  std::size_t unfinished_runner_pods = 0;
  // Sessions claimed in the last interval (warm or cold), from the pods' claim times.
  std::size_t recent_claims = 0;
  std::vector<UnassignedWarmPod> pods{};
  // The digest of the runner template warm pods are made from now (warm_runner_template_hash).
  std::string template_hash{};
};

struct WarmPoolPlan {
  // minReady plus the recent claims, at most maxReady (0 when suspended).
  std::size_t target = 0;
  std::size_t ready = 0, starting = 0;
  // Warm pods to create now: up to the target, and never past maxConcurrentSessions.
  std::size_t create = 0;
  // True when maxConcurrentSessions leaves the pool less than its target.
  bool held_by_session_limit = false;
  // Finished ones and those of an earlier runner template (always: no claim assigns them), then
  // the surplus over the target: starting before ready, the newest first (the oldest ready pods
  // are the likeliest to be claimed next; a pod still starting cost least). Never an assigned pod
  // (they are not among the inputs).
  std::vector<UnassignedWarmPod> remove{};
  // How many of `remove` are of an earlier template.
  std::size_t outdated = 0;
};

// The pool's rule, without I/O.
WarmPoolPlan plan_warm_pool(const WarmPoolInputs& inputs);

// The pool decides from the cache, which shows a pod the operator created, or the deletion it
// asked for, only once the watch event arrives: until then a second pass would create (or
// remove) again. Remembers what was asked per environment, as client-go's ReplicaSet
// "expectations" do, until the cache shows it or `horizon` passes.
class WarmPoolExpectations {
 public:
  explicit WarmPoolExpectations(std::chrono::seconds horizon = std::chrono::minutes(2))
      : horizon_(horizon) {}

  void created(const std::string& environment, const std::string& name, Clock::TimePoint now);
  void removed(const std::string& environment, const std::string& uid, Clock::TimePoint now);
  // Adds to `inputs` (from the cache) what the cache does not show yet: a created pod it lacks
  // (`cached(name)` false) is starting, and an unfinished runner pod; a pod whose removal was
  // asked is deleting. Forgets what the cache shows now, and what is older than the horizon.
  void apply(const std::string& environment, Clock::TimePoint now,
             const std::function<bool(const std::string&)>& cached, WarmPoolInputs& inputs);
  void forget(const std::string& environment);

 private:
  struct Asked {
    std::map<std::string, Clock::TimePoint> created;  // pod name -> when
    std::map<std::string, Clock::TimePoint> removed;  // pod uid -> when
  };
  const std::chrono::seconds horizon_;
  std::mutex mutex_;
  std::map<std::string, Asked> asked_;  // guarded by mutex_
};

// The sessions claimed in the last window, per environment. A claim is seen on its pod
// (perimeter.dev/claimed-at) for as long as the pod is cached, which with a retention of 0 is
// seconds: each claim seen is remembered here until it is older than the window, so the count
// does not drop when retention removes the pod. After a restart it starts from the pods cached.
class RecentClaims {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  explicit RecentClaims(std::chrono::seconds window) : window_(window) {}
  // Adds the claims seen now (pod uid -> claim time), forgets those older than the window, and
  // returns how many remain.
  std::size_t update(const std::string& environment, const std::map<std::string, WallTime>& seen,
                     WallTime now);
  // When the oldest remembered claim leaves the window (the pool may shrink then).
  std::optional<std::chrono::system_clock::duration> next_expiry(const std::string& environment,
                                                                 WallTime now);
  void forget(const std::string& environment);

 private:
  const std::chrono::seconds window_;
  std::mutex mutex_;
  std::map<std::string, std::map<std::string, WallTime>> claims_;  // guarded by mutex_
};

// Writes warm pods and their own Secrets (kube_warm_pool.h against the apiserver; a fake in unit
// tests).
class WarmPodWriter {
 public:
  virtual ~WarmPodWriter() = default;
  // Creates the pod's own Secret, then the pod (which mounts it). Throws ObjectRefused
  // (session_ports.h) when the apiserver refuses either as built, other exceptions for failures
  // that may pass; a Secret left without its pod by a failure is removed again when possible.
  virtual void create(const nlohmann::json& secret, const nlohmann::json& pod) = 0;
  // Removes an unassigned warm pod, exactly the one cached: its uid and, when given, its
  // resourceVersion (a claim that assigned it since changed it, and wins), then its own Secret.
  // False when the pod is not the one cached any more. Already gone is fine.
  virtual bool remove(const std::string& ns, const std::string& name, const std::string& uid,
                      const std::string& resource_version) = 0;
};

}  // namespace perimeter::agentenvironment
