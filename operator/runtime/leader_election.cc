#include "runtime/leader_election.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <thread>

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
          {{"lease", config_.lease_namespace + "/" + config_.lease_name}})) {
  if (config_.identity.empty()) config_.identity = default_identity(random_);
  if (config_.lease_name.empty() || config_.lease_namespace.empty())
    throw std::invalid_argument("leader election needs a lease namespace and name");
  if (config_.renew_deadline >= config_.lease_duration)
    throw std::invalid_argument("leader election: renew deadline must be shorter than the lease");
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

bool LeaderElector::try_acquire_or_renew() {
  try {
    json lease;
    try {
      lease = leases_.get(config_.lease_namespace, config_.lease_name);
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound) throw;
      const json spec = lease_spec(json::object());
      json fresh = {
          {"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
          {"spec", spec}};
      leases_.create(config_.lease_namespace, fresh);
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
    leases_.update(config_.lease_namespace, lease);  // carries resourceVersion: a race is a 409
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
    json lease = leases_.get(config_.lease_namespace, config_.lease_name);
    if (lease["spec"].value("holderIdentity", "") != config_.identity) return;
    lease["spec"]["holderIdentity"] = "";
    lease["spec"]["leaseDurationSeconds"] = 1;
    lease["spec"]["renewTime"] = format_micro_time(clock_.wall_now());
    leases_.update(config_.lease_namespace, lease);
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
  std::unique_lock lock(sleep_mutex_);
  sleep_cv_.wait_for(lock, stop, delay, [] { return false; });
  return !stop.stop_requested();
}

void LeaderElector::run(std::stop_token stop) {
  logger_.info("campaigning", {{"lease", config_.lease_name}, {"identity", config_.identity}});
  while (!try_acquire_or_renew()) {
    if (!sleep_for(jittered_retry(), stop)) return;
  }
  if (stop.stop_requested()) return;
  leading_ = true;
  is_leader_gauge_.Set(1);
  logger_.info("started leading", {{"lease", config_.lease_name}, {"identity", config_.identity}});
  std::stop_source leader_work;
  std::thread work([&] {
    if (callbacks_.on_started_leading) callbacks_.on_started_leading(leader_work.get_token());
  });
  auto last_renew = clock_.now();
  bool lost = false;
  while (sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(config_.retry_period),
                   stop)) {
    if (try_acquire_or_renew()) {
      last_renew = clock_.now();
    } else if (clock_.now() - last_renew >= config_.renew_deadline ||
               observed_spec_.value("holderIdentity", "") != config_.identity) {
      lost = true;
      break;
    }
  }
  // Leader-only work stops first, before anything else can block.
  leader_work.request_stop();
  leading_ = false;
  is_leader_gauge_.Set(0);
  work.join();
  if (lost) {
    logger_.error("lost leadership",
                  {{"lease", config_.lease_name}, {"identity", config_.identity}});
  } else if (config_.release_on_stop) {
    release();
  }
  if (callbacks_.on_stopped_leading) callbacks_.on_stopped_leading();
}

}  // namespace perimeter::runtime
