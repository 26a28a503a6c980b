#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "controllers/agentenvironment/operator_metrics.h"

namespace perimeter::agentenvironment {

// When the runner container of a cached runner pod started (its containerStatuses' running or
// terminated startedAt, as the kubelet reports it: to the second), or nullopt while it has not.
std::optional<std::chrono::system_clock::time_point> runner_started_at(const nlohmann::json& pod);

// Observes perimeter_claim_to_runner_started_seconds once per cold runner pod (a warm pod's runner
// starts before its claim, and is left out): from its claim (the
// perimeter.dev/claimed-at annotation the claim wrote, on the claiming process's clock) to its
// runner container starting, read from the pod's status as the informer cache delivers it.
//
// Exactly once, by two rules:
// - Within a process, a pod is keyed by uid: once observed, its uid is kept while the cache
//   holds the pod (each survey keeps the uids it still sees), so the repeated informer events
//   and resyncs of a running or finished pod observe nothing more.
// - Across processes, a pod is observed only by the leadership term that claimed it: its
//   claimed-at must not be before `claims_from` (when this term began to reconcile). A restarted
//   or newly elected operator lists every pod again, started ones included; those were claimed
//   by an earlier term, which observed them if it saw them start, so it leaves them alone. Terms
//   do not overlap: the old leader stops claiming at its renew deadline (10 s by default) and
//   the new one takes the lease only once it has expired (15 s), so the last claim of one term
//   is some 5 s before the first reconcile of the next, more than the skew between two
//   operators' NTP-synchronised clocks (the only clocks compared here; the kubelet's startedAt
//   decides nothing). No pod is counted by two terms. A pod claimed by an earlier term that
//   starts in this one is not observed at all: under-counting a restart's few pods is the price
//   of never counting one twice.
//
// A pod is judged from the cache at each survey of its environment, not from the event that
// woke it: a pod created and started between two surveys is still observed (its startedAt says
// when), and so is one that started and finished in between.
class RunnerStartLatency {
 public:
  RunnerStartLatency(OperatorMetrics& metrics, std::chrono::system_clock::time_point claims_from);

  // One survey of `environment`'s ("namespace/name") runner pods as cached, every one of them.
  void survey(const std::string& environment, const std::vector<const nlohmann::json*>& pods);
  // The environment is gone: its uids are not kept.
  void forget(const std::string& environment);

 private:
  OperatorMetrics& metrics_;
  const std::chrono::system_clock::time_point claims_from_;
  std::mutex mutex_;
  // By environment: the uids observed and still in the cache.
  std::map<std::string, std::set<std::string>> observed_;  // guarded by mutex_
};

}  // namespace perimeter::agentenvironment
