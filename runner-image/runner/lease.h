#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "agentapi/agent_api.h"
#include "core/clock.h"
#include "core/log.h"
#include "runner/runner_metrics.h"
#include "runner/stop_source.h"

namespace perimeter::runner {

// Why serving a work item ended, as the official worker records it on its lease.
enum class LeaseEnd {
  kNone,
  kRunnerDone,         // the session runner finished (or SIGTERM): the item is still ours
  kHeartbeatStop,      // the server said stopping/stopped, or did not extend the lease
  kLeaseLost,          // 412: another worker holds the lease
  kHeartbeatRejected,  // a permanent 4xx on the heartbeat
  kAssumedLost,        // no successful beat for longer than the TTL
};
const char* to_string(LeaseEnd end);

// This runner's view of one work item's lease. The first recorded reason wins, so a run stopped
// because the lease was lost still reads as lost during teardown. Finishing also fires `stop`,
// which ends the session runner, and `done`, which ends the heartbeat loop. The item's stop alone
// (the session ended, SIGTERM) does not end the heartbeat: the teardown still needs the lease.
class Lease {
 public:
  explicit Lease(StopSource& stop) : stop_(stop) {}
  void finish(LeaseEnd reason);
  LeaseEnd end() const;
  // The item belongs to the queue or another worker now: do not stop it.
  bool lost() const;
  StopSource& stop() { return stop_; }
  // Fired by finish() only.
  StopSource& done() { return done_; }

 private:
  StopSource& stop_;
  StopSource done_;
  mutable std::mutex mutex_;
  LeaseEnd end_ = LeaseEnd::kNone;
};

struct HeartbeatTiming {
  std::chrono::milliseconds default_interval{30'000};
  std::chrono::milliseconds default_ttl{90'000};
  std::chrono::milliseconds min_interval{1'000};
};

// The lease heartbeat, as the official worker's heartbeatLoop: NO_HEARTBEAT first, then the
// server's previous last_heartbeat echoed; interval max(1 s, min(ttl/2, 30 s)); each call cut off
// after one interval. Runs on its own thread (run() blocks until the lease stops).
class HeartbeatLoop {
 public:
  HeartbeatLoop(agentapi::AgentApi& api, std::string work_id, Lease& lease, const Clock& clock,
                StoppableSleeper& sleeper, Logger logger, RunnerMetrics* metrics = nullptr,
                HeartbeatTiming timing = {});

  // Called with the server's lease TTL after every beat that reports one.
  void on_ttl(std::function<void(std::chrono::milliseconds)> callback) {
    on_ttl_ = std::move(callback);
  }
  // The first beat has been answered (or failed): for the start-up benchmark and tests.
  bool first_beat_done() const { return first_beat_done_.load(); }

  void run();

 private:
  void beat();

  agentapi::AgentApi& api_;
  std::string work_id_;
  Lease& lease_;
  const Clock& clock_;
  StoppableSleeper& sleeper_;
  Logger logger_;
  RunnerMetrics* metrics_;
  HeartbeatTiming timing_;
  std::function<void(std::chrono::milliseconds)> on_ttl_;
  std::chrono::milliseconds interval_;
  std::chrono::milliseconds ttl_;
  Clock::TimePoint last_success_;
  std::string last_heartbeat_;
  std::atomic<bool> first_beat_done_{false};
};

}  // namespace perimeter::runner
