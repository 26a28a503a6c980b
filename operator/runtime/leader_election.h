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
  std::chrono::seconds lease_duration{15};
  std::chrono::seconds renew_deadline{10};
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
  // Called when a different holder is observed.
  std::function<void(const std::string& identity)> on_new_leader;
};

// Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules: a holder's lease is
// valid for lease_duration from when *we* last saw its record change (no trust in remote clocks);
// writes carry the resourceVersion, so two candidates cannot both win; the leader renews every
// retry_period and gives up, stopping its leader-only work at once, when it could not renew for
// renew_deadline.
class LeaderElector {
 public:
  LeaderElector(kube::ResourceClient& leases, LeaderElectionConfig config,
                LeaderCallbacks callbacks, RuntimeMetrics& metrics, Logger logger,
                Clock& clock = SystemClock::instance(),
                RandomSource& random = SystemRandom::instance());

  // Campaigns, leads, and returns when leadership is lost or `stop` is requested.
  void run(std::stop_token stop);

  // One attempt to take or keep the lease; true when we hold it afterwards.
  bool try_acquire_or_renew();
  // Gives the lease up if we hold it.
  void release();

  bool is_leader() const { return leading_.load(); }
  const std::string& identity() const { return config_.identity; }
  // hostname + "_" + a random suffix, so two processes on one host differ.
  static std::string default_identity(RandomSource& random = SystemRandom::instance());
  // Kubernetes MicroTime: RFC 3339 with microseconds, UTC.
  static std::string format_micro_time(std::chrono::system_clock::time_point time);

 private:
  bool sleep_for(std::chrono::milliseconds delay, std::stop_token& stop);
  std::chrono::milliseconds jittered_retry();
  nlohmann::json lease_spec(const nlohmann::json& previous_spec) const;

  kube::ResourceClient& leases_;
  LeaderElectionConfig config_;
  LeaderCallbacks callbacks_;
  Logger logger_;
  Clock& clock_;
  RandomSource& random_;
  prometheus::Gauge& is_leader_gauge_;
  std::atomic<bool> leading_{false};
  // The last lease record we saw and when (on our clock) it last changed.
  nlohmann::json observed_spec_;
  Clock::TimePoint observed_time_{};
  std::string last_seen_holder_;
  std::mutex sleep_mutex_;
  std::condition_variable_any sleep_cv_;
};

}  // namespace perimeter::runtime
