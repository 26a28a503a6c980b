#include "runtime/leader_election.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <thread>

#include "core/thread_name.h"
#include "kube/api_error.h"

namespace perimeter::runtime {

using nlohmann::json;

LeaderElector::LeaderElector(kube::ResourceClient& leases, LeaderElectionConfig config,
                             LeaderCallbacks callbacks, RuntimeMetrics& metrics, Logger logger,
                             Clock& clock, RandomSource& random)
    : leases_(leases),
      config_(std::move(config)),
      callbacks_(std::move(callbacks)),
      logger_(std::move(logger)),
      clock_(clock),
      random_(random),
      is_leader_gauge_(metrics.leader_election_is_leader.Add(
          {{"lease", config_.lease_namespace + "/" + config_.lease_name}})),
      renew_failures_(metrics.leader_election_renew_failures_total.Add(
          {{"lease", config_.lease_namespace + "/" + config_.lease_name}})) {
  if (config_.identity.empty()) config_.identity = default_identity(random_);
  if (config_.lease_name.empty() || config_.lease_namespace.empty())
    throw std::invalid_argument("leader election needs a lease namespace and name");
  const auto seconds = [](std::chrono::seconds s) { return std::to_string(s.count()) + " s"; };
  if (config_.lease_duration.count() <= 0 || config_.renew_deadline.count() <= 0 ||
      config_.retry_period.count() <= 0)
    throw std::invalid_argument("leader election: lease duration (" +
                                seconds(config_.lease_duration) + "), renew deadline (" +
                                seconds(config_.renew_deadline) + ") and retry period (" +
                                seconds(config_.retry_period) + ") must be positive");
  if (config_.renew_deadline >= config_.lease_duration)
    throw std::invalid_argument(
        "leader election: the renew deadline (" + seconds(config_.renew_deadline) +
        ") must be shorter than the lease duration (" + seconds(config_.lease_duration) +
        "), or another replica may take the lease while this one still leads");
  if (config_.retry_period >= config_.renew_deadline)
    throw std::invalid_argument(
        "leader election: the retry period (" + seconds(config_.retry_period) +
        ") must be shorter than the renew deadline (" + seconds(config_.renew_deadline) +
        "), or a leader cannot retry a failed renewal before it must stop leading");
}

std::string LeaderElector::default_identity(RandomSource& random) {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "unknown");
  static const char* alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string suffix;
  for (int i = 0; i < 8; ++i)
    suffix.push_back(alphabet[static_cast<int>(random.uniform01() * 36) % 36]);
  return std::string(host) + "_" + suffix;
}

std::string LeaderElector::format_micro_time(std::chrono::system_clock::time_point time) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(micros / 1000000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<long long>(micros % 1000000));
  return buffer;
}

json LeaderElector::lease_spec(const json& previous) const {
  const std::string now = format_micro_time(clock_.wall_now());
  const bool ours = previous.value("holderIdentity", "") == config_.identity;
  json spec = {{"holderIdentity", config_.identity},
               {"leaseDurationSeconds", config_.lease_duration.count()},
               {"renewTime", now}};
  const int transitions = previous.value("leaseTransitions", 0);
  if (ours) {
    spec["acquireTime"] = previous.value("acquireTime", now);
    spec["leaseTransitions"] = transitions;
  } else {
    spec["acquireTime"] = now;
    spec["leaseTransitions"] = previous.contains("holderIdentity") ? transitions + 1 : transitions;
  }
  return spec;
}

namespace {

// An attempt that would have to send a request with (almost) no time left before its deadline.
class RenewDeadlineReached : public std::runtime_error {
 public:
  RenewDeadlineReached() : std::runtime_error("renew deadline reached before the request") {}
};

}  // namespace

kube::RequestOptions LeaderElector::bounded_by(Clock::TimePoint deadline) const {
  using std::chrono::milliseconds;
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock_.now());
  // Rounded down to whole seconds (tenths under one): the HTTP transport keeps a connection pool
  // per distinct timeout, so the values used must stay few.
  kube::RequestOptions options;
  if (left >= std::chrono::seconds(1)) {
    options.timeout = std::chrono::floor<std::chrono::seconds>(left);
  } else {
    options.timeout = milliseconds(left.count() / 100 * 100);
    if (options.timeout.count() <= 0) throw RenewDeadlineReached();
  }
  return options;
}

bool LeaderElector::try_acquire_or_renew() {
  return try_acquire_or_renew(clock_.now() + config_.renew_deadline);
}

bool LeaderElector::try_acquire_or_renew(Clock::TimePoint deadline) {
  try {
    json lease;
    try {
      lease = leases_.get(config_.lease_namespace, config_.lease_name, bounded_by(deadline));
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound) throw;
      const json spec = lease_spec(json::object());
      json fresh = {
          {"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
          {"spec", spec}};
      leases_.create(config_.lease_namespace, fresh, bounded_by(deadline));
      observed_spec_ = spec;
      observed_time_ = clock_.now();
      return true;
    }
    const json spec =
        lease.contains("spec") && lease["spec"].is_object() ? lease["spec"] : json::object();
    if (spec != observed_spec_) {
      observed_spec_ = spec;
      observed_time_ = clock_.now();
    }
    const std::string holder = spec.value("holderIdentity", "");
    if (holder != last_seen_holder_) {
      last_seen_holder_ = holder;
      if (!holder.empty() && holder != config_.identity && callbacks_.on_new_leader)
        callbacks_.on_new_leader(holder);
    }
    const auto duration = std::chrono::seconds(
        spec.value("leaseDurationSeconds", static_cast<int64_t>(config_.lease_duration.count())));
    if (!holder.empty() && holder != config_.identity && clock_.now() < observed_time_ + duration)
      return false;  // someone else holds a lease that has not expired on our clock
    const json next = lease_spec(spec);
    lease["spec"] = next;
    // Carries resourceVersion: a race is a 409.
    leases_.update(config_.lease_namespace, lease, bounded_by(deadline));
    observed_spec_ = next;
    observed_time_ = clock_.now();
    return true;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kConflict && e.kind() != kube::ErrorKind::kAlreadyExists)
      logger_.warn("lease request failed", {{"lease", config_.lease_name}, {"error", e.what()}});
    return false;
  } catch (const std::exception& e) {
    logger_.warn("lease request failed", {{"lease", config_.lease_name}, {"error", e.what()}});
    return false;
  }
}

void LeaderElector::release() {
  try {
    // A release that cannot finish in time changes nothing: the lease then simply expires.
    const auto deadline = clock_.now() + config_.renew_deadline;
    json lease = leases_.get(config_.lease_namespace, config_.lease_name, bounded_by(deadline));
    if (lease["spec"].value("holderIdentity", "") != config_.identity) return;
    lease["spec"]["holderIdentity"] = "";
    lease["spec"]["leaseDurationSeconds"] = 1;
    lease["spec"]["renewTime"] = format_micro_time(clock_.wall_now());
    leases_.update(config_.lease_namespace, lease, bounded_by(deadline));
    logger_.info("released lease", {{"lease", config_.lease_name}, {"identity", config_.identity}});
  } catch (const std::exception& e) {
    logger_.warn("could not release lease", {{"lease", config_.lease_name}, {"error", e.what()}});
  }
}

std::chrono::milliseconds LeaderElector::jittered_retry() {
  // client-go waits retry_period * (1 + up to 1.2): candidates that lost together spread out.
  const auto base = std::chrono::duration_cast<std::chrono::milliseconds>(config_.retry_period);
  return base + std::chrono::milliseconds(static_cast<long long>(static_cast<double>(base.count()) *
                                                                 1.2 * random_.uniform01()));
}

bool LeaderElector::sleep_for(std::chrono::milliseconds delay, std::stop_token& stop) {
  return wait_until(clock_.now() + delay, stop);
}

bool LeaderElector::wait_until(Clock::TimePoint until, std::stop_token stop) {
  if (waiter_) return waiter_(until, std::move(stop));
  std::unique_lock lock(sleep_mutex_);
  while (!stop.stop_requested()) {
    const auto now = clock_.now();
    if (now >= until) return true;
    sleep_cv_.wait_for(lock, stop, until - now, [] { return false; });
  }
  return false;
}

void LeaderElector::run(std::stop_token stop) {
  logger_.info("campaigning", {{"lease", config_.lease_name}, {"identity", config_.identity}});
  for (;;) {
    const auto attempt = clock_.now();
    if (try_acquire_or_renew(attempt + config_.renew_deadline)) {
      if (clock_.now() < attempt + config_.renew_deadline) {
        if (stop.stop_requested()) return;
        lead(attempt, stop);
        return;
      }
      // The answer came too late to build on; the next attempt renews what we now hold.
      logger_.warn("acquired the lease too late to lead on it",
                   {{"lease", config_.lease_name}, {"identity", config_.identity}});
    }
    if (!sleep_for(jittered_retry(), stop)) return;
  }
}

void LeaderElector::lead(Clock::TimePoint proven_at, std::stop_token stop) {
  lead_until_ = proven_at + config_.renew_deadline;
  leading_ = true;
  is_leader_gauge_.Set(1);
  logger_.info("started leading", {{"lease", config_.lease_name}, {"identity", config_.identity}});
  std::stop_source leader_work;
  std::thread work([&] {
    name_this_thread("leader-work");
    if (callbacks_.on_started_leading) callbacks_.on_started_leading(leader_work.get_token());
  });
  // Renewals run on a thread of their own, so that a request that hangs cannot keep this one
  // from stopping the leader work when the deadline passes. `term` ends the renewals; the
  // renewer asks for it too when it sees another holder.
  std::stop_source term;
  std::atomic<bool> taken{false};
  std::thread renewer([&] {
    name_this_thread("lease-renew");
    renew_until_stopped(term, taken);
  });
  bool deadline_passed = false;
  {
    std::stop_callback forward(stop, [&term] { term.request_stop(); });
    // Each successful renewal moves lead_until_ on; wake at the current one and look again.
    while (wait_until(lead_until_.load(), term.get_token())) {
      if (clock_.now() >= lead_until_.load()) {
        deadline_passed = true;
        break;
      }
    }
  }
  // Leader-only work stops first, before anything else can block.
  leader_work.request_stop();
  leading_ = false;
  is_leader_gauge_.Set(0);
  term.request_stop();
  work.join();
  renewer.join();  // its request is bounded by the deadline that has just passed, or ends now
  if (deadline_passed) {
    logger_.error("lost leadership: no renewal within the renew deadline",
                  {{"lease", config_.lease_name},
                   {"identity", config_.identity},
                   {"renew_deadline_s", config_.renew_deadline.count()}});
  } else if (taken) {
    logger_.error("lost leadership: another holder has the lease",
                  {{"lease", config_.lease_name},
                   {"identity", config_.identity},
                   {"holder", observed_spec_.value("holderIdentity", "")}});
  } else if (config_.release_on_stop) {
    release();
  }
  if (callbacks_.on_stopped_leading) callbacks_.on_stopped_leading();
}

void LeaderElector::renew_until_stopped(std::stop_source& term, std::atomic<bool>& taken) {
  auto token = term.get_token();
  while (sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(config_.retry_period),
                   token)) {
    const auto attempt = clock_.now();
    const auto deadline = lead_until_.load();
    if (attempt >= deadline) return;  // run() is stepping down
    // Proven only when the answer came in time; a late one leaves the deadline where it was.
    if (try_acquire_or_renew(deadline) && clock_.now() < deadline) {
      lead_until_ = attempt + config_.renew_deadline;
      continue;
    }
    renew_failures_.Increment();
    if (observed_spec_.value("holderIdentity", "") != config_.identity) {
      taken = true;
      term.request_stop();
      return;
    }
  }
}

}  // namespace perimeter::runtime
