#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "kube/resource_client.h"
#include "runtime/informer.h"
#include "runtime/metrics.h"

namespace perimeter::testing {

// Follows a namespace's runner pods through a watch (an informer) and remembers what the
// end-to-end tests assert on: how many were unfinished at once (in all, and per session), every
// pod per work id, which succeeded, when each was deleted.
class PodTracker {
 public:
  PodTracker(kube::ResourceClient& pods, const std::string& ns, runtime::RuntimeMetrics& metrics);
  ~PodTracker();
  PodTracker(const PodTracker&) = delete;
  PodTracker& operator=(const PodTracker&) = delete;

  size_t max_unfinished() const;
  // The most pods of one session (perimeter.dev/session-id) unfinished at once, over every
  // session the watch saw.
  size_t max_unfinished_of_one_session() const;
  std::map<std::string, int> adds_per_work_id() const;
  // Every pod ever seen per work id, by uid: a pod deleted by retention and a twin made after it
  // under the same name are two.
  std::map<std::string, std::set<std::string>> uids_per_work_id() const;
  // The pods (by uid) seen in phase Succeeded.
  std::set<std::string> succeeded_uids() const;
  // When the watch first showed the pod of that uid Succeeded, on the wall clock (so benchmarks
  // can set it against other components' timestamps); nullopt if it has not.
  std::optional<std::chrono::system_clock::time_point> succeeded_seen_at(
      const std::string& uid) const;
  // When the watch last showed the pod of that name deleted; nullopt if it has not, or if a pod of
  // that name exists again.
  std::optional<std::chrono::steady_clock::time_point> deleted_at(const std::string& name) const;

 private:
  void observe(const nlohmann::json& pod, bool added);
  void count_sessions();

  runtime::Informer informer_;
  mutable std::mutex mutex_;
  std::set<std::string> unfinished_;
  size_t max_unfinished_ = 0;
  std::map<std::string, std::string> session_of_;  // pod name -> session label
  size_t max_unfinished_of_one_session_ = 0;
  std::map<std::string, int> adds_;
  std::map<std::string, std::set<std::string>> uids_;
  std::map<std::string, std::chrono::system_clock::time_point> succeeded_;  // uid -> first seen
  std::map<std::string, std::chrono::steady_clock::time_point> deleted_at_;
};

}  // namespace perimeter::testing
