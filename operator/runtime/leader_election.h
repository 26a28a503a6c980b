#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stop_token>
#include <string>

#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "kube/resource_client.h"
#include "runtime/metrics.h"

namespace perimeter::runtime {

struct LeaderElectionConfig {
  std::string lease_namespace;
  std::string lease_name;
  std::string identity;  // default_identity() when empty
  // How long another candidate waits, from when it last saw the record change, before it may take
  // the lease.
  std::chrono::seconds lease_duration{15};
  // How long a leader may go without a renewal it can prove before it stops leading. Every
  // acquire and renew request is bounded by what remains of it; must be shorter than
  // lease_duration (the margin absorbs clocks that run at different rates).
  std::chrono::seconds renew_deadline{10};
  // Between attempts; must be shorter than renew_deadline so a failed renewal can be retried.
  std::chrono::seconds retry_period{2};
  // On a clean stop, clear the holder so a follower takes over at once instead of waiting out
  // the lease.
  bool release_on_stop = true;
};

struct LeaderCallbacks {
  // Runs on its own thread while this process leads; must return soon after the token stops.
  std::function<void(std::stop_token)> on_started_leading;
  // Called once leading ended (lost or released), after on_started_leading has returned.
  std::function<void()> on_stopped_leading;
  // Called when a different holder is observed (from the elector's own threads).
  std::function<void(const std::string& identity)> on_new_leader;
};

// Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules: a holder's lease is
// valid for lease_duration from when *we* last saw its record change (no trust in remote clocks);
// writes carry the resourceVersion, so two candidates cannot both win; the leader renews every
// retry_period.
//
// A leader leads only while it can prove a renewal: until renew_deadline after the start of the
// last acquire or renew attempt that succeeded (the record others time out from was written after
// that start, so nobody else can take the lease before lease_duration after it). Every request of
// an attempt carries a timeout no longer than what remains of that deadline, and renewals run on a
// thread of their own while run() watches the deadline: once it passes, or another holder is
// seen, leader-only work is told to stop and is_leader() is false, even while a request hangs.
class LeaderElector {
 public:
  LeaderElector(kube::ResourceClient& leases, LeaderElectionConfig config,
                LeaderCallbacks callbacks, RuntimeMetrics& metrics, Logger logger,
                Clock& clock = SystemClock::instance(),
                RandomSource& random = SystemRandom::instance());

  // Campaigns, leads, and returns when leadership is lost or `stop` is requested.
  void run(std::stop_token stop);

  // One attempt to take or keep the lease, its requests bounded by renew_deadline from now; true
  // when we hold it afterwards.
  bool try_acquire_or_renew();
  // Gives the lease up if we hold it.
  void release();

  // How run() waits for a point in time on the elector's clock: until `until`, or false as soon
  // as `stop` is requested. Tests that drive a fake clock replace it (before run()); the default
  // waits on a condition variable.
  using Waiter = std::function<bool(Clock::TimePoint until, std::stop_token stop)>;
  void set_waiter(Waiter waiter) { waiter_ = std::move(waiter); }

  // True while leading and the last proven renewal is within renew_deadline: a leader whose
  // renewal is in doubt says so at once, before its threads have noticed.
  bool is_leader() const { return leading_.load() && clock_.now() < lead_until_.load(); }
  const std::string& identity() const { return config_.identity; }
  // hostname + "_" + a random suffix, so two processes on one host differ.
  static std::string default_identity(RandomSource& random = SystemRandom::instance());
  // Kubernetes MicroTime: RFC 3339 with microseconds, UTC.
  static std::string format_micro_time(std::chrono::system_clock::time_point time);

 private:
  bool try_acquire_or_renew(Clock::TimePoint deadline);
  // The timeout for a request that must end by `deadline`; throws when too little is left.
  kube::RequestOptions bounded_by(Clock::TimePoint deadline) const;
  // Leads from a proven acquisition until the deadline passes, the lease is taken, or `stop`.
  void lead(Clock::TimePoint proven_at, std::stop_token stop);
  // The renewals of one term; asks `term` to stop when another holder is seen.
  void renew_until_stopped(std::stop_source& term, std::atomic<bool>& taken);
  bool sleep_for(std::chrono::milliseconds delay, std::stop_token& stop);
  bool wait_until(Clock::TimePoint until, std::stop_token stop);
  std::chrono::milliseconds jittered_retry();
  nlohmann::json lease_spec(const nlohmann::json& previous_spec) const;

  kube::ResourceClient& leases_;
  LeaderElectionConfig config_;
  LeaderCallbacks callbacks_;
  Logger logger_;
  Clock& clock_;
  RandomSource& random_;
  prometheus::Gauge& is_leader_gauge_;
  prometheus::Counter& renew_failures_;
  std::atomic<bool> leading_{false};
  // Leading is proven until then: renew_deadline after the start of the last attempt that
  // acquired or renewed the lease in time.
  std::atomic<Clock::TimePoint> lead_until_{Clock::TimePoint{}};
  // The last lease record we saw and when (on our clock) it last changed. Touched by one thread
  // at a time: run()'s while campaigning, the renewer's while leading.
  nlohmann::json observed_spec_;
  Clock::TimePoint observed_time_{};
  std::string last_seen_holder_;
  std::mutex sleep_mutex_;
  std::condition_variable_any sleep_cv_;
  Waiter waiter_;
};

}  // namespace perimeter::runtime
