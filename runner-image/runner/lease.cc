#include "runner/lease.h"

#include <algorithm>

#include "agentapi/agent_api_client.h"
#include "agentapi/api_error.h"

namespace perimeter::runner {

const char* to_string(LeaseEnd end) {
  switch (end) {
    case LeaseEnd::kNone:
      return "none";
    case LeaseEnd::kRunnerDone:
      return "runner_done";
    case LeaseEnd::kHeartbeatStop:
      return "heartbeat_stop";
    case LeaseEnd::kLeaseLost:
      return "lease_lost";
    case LeaseEnd::kHeartbeatRejected:
      return "heartbeat_rejected";
    case LeaseEnd::kAssumedLost:
      return "assumed_lost";
  }
  return "unknown";
}

void Lease::finish(LeaseEnd reason) {
  {
    std::lock_guard lock(mutex_);
    if (end_ == LeaseEnd::kNone) end_ = reason;
  }
  stop_.request();
  done_.request();
}

LeaseEnd Lease::end() const {
  std::lock_guard lock(mutex_);
  return end_;
}

bool Lease::lost() const {
  const LeaseEnd end = this->end();
  return end == LeaseEnd::kLeaseLost || end == LeaseEnd::kAssumedLost;
}

HeartbeatLoop::HeartbeatLoop(agentapi::AgentApi& api, std::string work_id, Lease& lease,
                             const Clock& clock, StoppableSleeper& sleeper, Logger logger,
                             RunnerMetrics* metrics, HeartbeatTiming timing)
    : api_(api),
      work_id_(std::move(work_id)),
      lease_(lease),
      clock_(clock),
      sleeper_(sleeper),
      logger_(std::move(logger)),
      metrics_(metrics),
      timing_(timing),
      interval_(timing.default_interval),
      ttl_(timing.default_ttl),
      last_heartbeat_(agentapi::kNoHeartbeat) {}

void HeartbeatLoop::run() {
  last_success_ = clock_.now();
  beat();
  first_beat_done_.store(true);
  // Until the lease is finished, not merely until the item is stopped: the teardown after a stop
  // (the final memory sync and flush, the skills' cleanup) runs under this lease.
  while (!lease_.done().requested()) {
    sleeper_.sleep_for(interval_, lease_.done());
    if (lease_.done().requested()) break;
    beat();
  }
}

void HeartbeatLoop::beat() {
  auto count = [this](const char* outcome) {
    if (metrics_) metrics_->heartbeat(outcome);
  };
  try {
    const agentapi::HeartbeatResponse response =
        api_.heartbeat(work_id_, last_heartbeat_, std::nullopt, interval_);
    last_success_ = clock_.now();
    last_heartbeat_ = response.last_heartbeat;
    count("ok");
    if (response.ttl_seconds > 0) {
      ttl_ = std::chrono::milliseconds(response.ttl_seconds * 1000);
      interval_ = std::max(timing_.min_interval, std::min(ttl_ / 2, timing_.default_interval));
      if (on_ttl_) on_ttl_(ttl_);
    }
    if (response.state == "stopping" || response.state == "stopped") {
      logger_.info("heartbeat signals shutdown",
                   {{"work_id", work_id_}, {"state", response.state}});
      lease_.finish(LeaseEnd::kHeartbeatStop);
    }
    if (!response.lease_extended) {
      logger_.warn("lease not extended, shutting down", {{"work_id", work_id_}});
      lease_.finish(LeaseEnd::kHeartbeatStop);
    }
    return;
  } catch (const agentapi::ApiError& error) {
    if (lease_.done().requested()) return;
    if (error.status() == 412) {
      const nlohmann::json server = error.lease_state();
      auto field = [&server](const char* name) {
        return server.is_object() && server.contains(name) ? server[name] : nlohmann::json();
      };
      logger_.error("lease lost: heartbeat precondition failed",
                    {{"work_id", work_id_},
                     {"server_state", field("state")},
                     {"server_ttl_seconds", field("ttl_seconds")},
                     {"server_last_heartbeat", field("last_heartbeat")}});
      count("lost");
      lease_.finish(LeaseEnd::kLeaseLost);
      return;
    }
    if (error.fatal()) {
      logger_.error(
          "permanent heartbeat failure",
          {{"work_id", work_id_}, {"status", error.status()}, {"error", error.raw_body()}});
      count("rejected");
      lease_.finish(LeaseEnd::kHeartbeatRejected);
      return;
    }
    count("transient");
    if (clock_.now() - last_success_ > ttl_) {
      logger_.error("lease assumed lost: no successful heartbeat in ttl",
                    {{"work_id", work_id_}, {"ttl_ms", ttl_.count()}, {"error", error.what()}});
      lease_.finish(LeaseEnd::kAssumedLost);
      return;
    }
    logger_.warn("transient heartbeat failure",
                 {{"work_id", work_id_}, {"status", error.status()}, {"error", error.raw_body()}});
  } catch (const std::exception& error) {
    // No HTTP answer, or an answer that was not the API's: transient, bounded by the TTL.
    if (lease_.done().requested()) return;
    count("transient");
    if (clock_.now() - last_success_ > ttl_) {
      logger_.error("lease assumed lost: no successful heartbeat in ttl",
                    {{"work_id", work_id_}, {"ttl_ms", ttl_.count()}, {"error", error.what()}});
      lease_.finish(LeaseEnd::kAssumedLost);
      return;
    }
    logger_.warn("transient heartbeat failure", {{"work_id", work_id_}, {"error", error.what()}});
  }
}

}  // namespace perimeter::runner
