#include "controllers/agentenvironment/session_poller.h"

#include <algorithm>
#include <set>
#include <utility>

#include "agentapi/agent_api_client.h"
#include "agentapi/api_error.h"
#include "agentapi/work_secret.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/thread_name.h"
#include "core/time_format.h"

namespace perimeter::agentenvironment {
namespace {

using std::chrono::milliseconds;

// The official poller's waits: 1-3 s after an empty poll; 1 s doubling to 60 s after errors.
constexpr milliseconds kEmptyPollMin{1000};
constexpr milliseconds kEmptyPollMax{3000};
// At capacity or suspended, look again at least this often even without a wake().
constexpr milliseconds kCapacityRecheck{1000};
// A rejected key is tried again after this long in case it was fixed on the API side; a new key
// in the Secret is tried at once.
constexpr milliseconds kRejectedRetry{std::chrono::minutes(5)};
// A created pod the informer has not shown after this long stops counting against the limit
// (it was deleted before the cache saw it).
constexpr std::chrono::minutes kRecentPodHorizon{2};

}  // namespace

SessionPoller::SessionPoller(PollerSettings settings, PollerDependencies deps, int threads)
    : deps_(std::move(deps)),
      threads_(std::max(1, threads)),
      environment_label_(settings.environment.namespace_ + "/" + settings.environment.name),
      settings_(std::move(settings)),
      backoff_({milliseconds(1000), milliseconds(60000), 2.0, 0.25}, deps_.random) {
  state_.reason = "Starting";
  state_.message = "waiting for the first poll";
}

SessionPoller::~SessionPoller() {
  stop();
}

void SessionPoller::start() {
  std::lock_guard lock(mutex_);
  if (!workers_.empty() || stopping_) return;
  workers_.resize(threads_);
  helper_running_.assign(threads_, false);
  workers_[0] = std::jthread([this](std::stop_token stop) { run(stop, 0); });
}

void SessionPoller::spread() {
  std::lock_guard lock(mutex_);
  if (stopping_ || workers_.empty()) return;
  for (int i = 1; i < threads_; ++i) {
    if (helper_running_[i]) continue;
    auto place = deps_.thread_budget ? deps_.thread_budget->try_take() : PollThreadBudget::Place();
    // The operator's other environments hold every extra thread: this one claims with fewer.
    if (deps_.thread_budget && !place) return;
    // A helper that ended has returned from run(): the join is immediate.
    if (workers_[i].joinable()) workers_[i].join();
    helper_running_[i] = true;
    // The place is held until the thread's run() returns.
    workers_[i] =
        std::jthread([this, i, held = std::move(place)](std::stop_token stop) { run(stop, i); });
  }
}

int SessionPoller::running_threads() const {
  std::lock_guard lock(mutex_);
  if (workers_.empty()) return 0;
  return 1 + static_cast<int>(std::count(helper_running_.begin(), helper_running_.end(), true));
}

void SessionPoller::request_stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& worker : workers_) {
      if (worker.joinable()) worker.request_stop();
    }
  }
  wake_cv_.notify_all();
}

void SessionPoller::stop() {
  request_stop();
  std::vector<std::jthread> workers;
  {
    std::lock_guard lock(mutex_);
    workers.swap(workers_);
  }
  // A thread may be inside a long-poll of at most block_ms + the client's margin, or a claim;
  // join waits.
  workers.clear();
  // Only now that no thread of this poller can set them again. A poller made since for the same
  // environment (deleted and made again at once) sets them anew at its next poll and stats.
  deps_.metrics.remove_poller_gauges(label());
}

void SessionPoller::update(PollerSettings settings) {
  {
    std::lock_guard lock(mutex_);
    const bool credentials_changed =
        settings.environment_key != settings_.environment_key ||
        settings.environment.api_base_url != settings_.environment.api_base_url ||
        settings.environment.environment_id != settings_.environment.environment_id ||
        settings.api_ca_pem != settings_.api_ca_pem;
    settings_ = std::move(settings);
    // The client (and its connections) is rebuilt only for a new key, URL, environment id or
    // trusted CAs.
    if (credentials_changed) ++settings_generation_;
    if (credentials_changed && state_.health == PollerHealth::kRejected) {
      rejected_until_ = {};  // try the new key or URL at once
      backoff_.reset();
    }
    if (state_.health == PollerHealth::kSpecRefused &&
        settings_.environment.generation != refused_generation_) {
      // A new spec may build objects the apiserver accepts: claim again.
      state_.health = PollerHealth::kStarting;
      state_.reason = "Starting";
      state_.message = "the spec changed; waiting for the next poll";
    }
    ++wake_generation_;
  }
  wake_cv_.notify_all();
}

void SessionPoller::wake() {
  {
    std::lock_guard lock(mutex_);
    ++wake_generation_;
  }
  wake_cv_.notify_all();
}

PollerState SessionPoller::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

std::shared_ptr<agentapi::AgentApi> SessionPoller::api() {
  std::lock_guard lock(mutex_);
  if (!api_ || api_generation_ != settings_generation_) {
    // Rebuilt on every settings change; threads still using the old client keep it alive.
    api_ = deps_.api_factory.make(settings_.environment.api_base_url,
                                  settings_.environment.environment_id, settings_.environment_key,
                                  settings_.api_ca_pem);
    api_generation_ = settings_generation_;
  }
  return api_;
}

SessionPoller::SlotReservation::~SlotReservation() {
  if (poller_ != nullptr) poller_->release_slot(created_pod_, warm_, holds_item_);
}

SessionPoller::SlotReservation::SlotReservation(SlotReservation&& other) noexcept
    : poller_(std::exchange(other.poller_, nullptr)),
      warm_(other.warm_),
      holds_item_(other.holds_item_),
      created_pod_(std::move(other.created_pod_)) {}

std::optional<SessionPoller::SlotReservation> SessionPoller::reserve_slot(bool cold_only) {
  // One count at a time: a count drops the pods its census shows from the recent ones, which is
  // only right for counts whose census was taken after it. Two interleaved, the one holding the
  // older census could count a pod the cache just delivered in neither list.
  std::lock_guard counting(counting_mutex_);
  std::unique_lock lock(mutex_);
  const std::string ns = settings_.environment.namespace_;
  const std::string name = settings_.environment.name;
  std::vector<std::string> recent;
  for (const auto& [pod, created_at] : recently_created_) recent.push_back(pod);
  lock.unlock();
  // The census reads the informer cache, which takes its own locks: not under ours. Which recent
  // pods the cache shows is asked first: a pod arriving in between is then counted twice (once
  // as recent, once by the census) for this pass, never zero times.
  std::set<std::string> seen;
  for (const auto& pod : recent) {
    if (deps_.census.cached(ns, pod)) seen.insert(pod);
  }
  const std::size_t unfinished = deps_.census.unfinished(ns, name);
  const std::set<std::string> ready_warm = cold_only ? std::set<std::string>{} : ready_warm_names();
  lock.lock();
  const auto now = deps_.clock.now();
  for (auto it = recently_created_.begin(); it != recently_created_.end();) {
    it = (seen.count(it->first) > 0 || now - it->second > kRecentPodHorizon)
             ? recently_created_.erase(it)
             : std::next(it);
  }
  const std::size_t available_warm = cold_only ? 0 : available_warm_locked(ready_warm, now);
  const auto in_use = static_cast<int>(unfinished + recently_created_.size()) + reserved_;
  const bool at_capacity = in_use >= settings_.environment.max_concurrent_sessions;
  deps_.metrics.active_sessions.Add({{"environment", label()}})
      .Set(static_cast<double>(unfinished + recently_created_.size()));
  // A ready warm pod first: it serves the item sooner, and turns a pod already counted into the
  // session's, so it is allowed at the limit too.
  if (reserved_warm_ < available_warm) {
    ++reserved_warm_;
    return SlotReservation(this, /*warm=*/true);
  }
  if (at_capacity) return std::nullopt;
  ++reserved_;
  return SlotReservation(this);
}

std::vector<WarmPodRef> SessionPoller::assignable_warm_pods() {
  std::string ns, name, template_hash;
  {
    std::lock_guard lock(mutex_);
    ns = settings_.environment.namespace_;
    name = settings_.environment.name;
    template_hash = settings_.warm_template_hash;
  }
  // A pod of an earlier runner template is not the spec's runner: the pool replaces it.
  std::vector<WarmPodRef> pods = deps_.census.ready_warm_pods(ns, name);
  std::erase_if(pods, [&](const WarmPodRef& pod) { return pod.template_hash != template_hash; });
  return pods;
}

std::set<std::string> SessionPoller::ready_warm_names() {
  std::set<std::string> names;
  for (auto& pod : assignable_warm_pods()) names.insert(std::move(pod.name));
  return names;
}

std::size_t SessionPoller::available_warm_locked(const std::set<std::string>& ready_warm,
                                                 Clock::TimePoint now) {
  // A warm pod this poller assigned stays out of the count until the cache shows it assigned
  // (no longer ready), so two passes do not count on one pod.
  for (auto it = recently_assigned_.begin(); it != recently_assigned_.end();) {
    it = (ready_warm.count(it->first) == 0 || now - it->second > kRecentPodHorizon)
             ? recently_assigned_.erase(it)
             : std::next(it);
  }
  std::size_t available = 0;
  for (const auto& pod : ready_warm) available += recently_assigned_.count(pod) == 0;
  return available;
}

void SessionPoller::prefer_warm(SlotReservation& slot) {
  {
    std::lock_guard lock(mutex_);
    slot.holds_item_ = true;
    if (slot.warm_) {
      if (warm_given_up_ == 0) {
        ++warm_with_item_;
        return;
      }
      // Its pod went to a pass that had an item first; it holds that pass's slot (counted in
      // reserved_ already), and may still find another ready pod below.
      --warm_given_up_;
      slot.warm_ = false;
    }
  }
  std::lock_guard counting(counting_mutex_);
  const auto ready_warm = ready_warm_names();
  if (ready_warm.empty()) return;
  std::lock_guard lock(mutex_);
  const std::size_t available = available_warm_locked(ready_warm, deps_.clock.now());
  // Every ready pod is some item's already.
  if (warm_with_item_ >= available) return;
  if (reserved_warm_ < available) {
    // A pod no pass holds: the slot under the limit goes back, the warm pod is counted already.
    --reserved_;
    ++reserved_warm_;
  } else {
    // Passes still waiting hold every ready pod; one of them gives its pod up for this item,
    // which is here now, and takes this slot instead: the counts stay as they are.
    ++warm_given_up_;
  }
  slot.warm_ = true;
  ++warm_with_item_;
}

SessionPoller::SlotReservation SessionPoller::take_slot() {
  std::lock_guard lock(mutex_);
  ++reserved_;
  return SlotReservation(this);
}

void SessionPoller::release_slot(const std::string& created_pod, bool warm, bool holds_item) {
  std::lock_guard lock(mutex_);
  if (warm && !holds_item && warm_given_up_ > 0) {
    // A pass still waiting ends with no item: it is the one that gave its pod up.
    --warm_given_up_;
    --reserved_;
  } else if (warm) {
    --reserved_warm_;
    if (holds_item) --warm_with_item_;
  } else {
    --reserved_;
  }
  if (!created_pod.empty()) recently_created_[created_pod] = deps_.clock.now();
}

void SessionPoller::set_state(PollerHealth health, const std::string& reason,
                              const std::string& message) {
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    changed = state_.health != health || state_.reason != reason;
    state_.health = health;
    state_.reason = reason;
    state_.message = message;
    if (health == PollerHealth::kPolling) state_.last_success = deps_.clock.wall_now();
  }
  if (changed && deps_.on_state_change) deps_.on_state_change();
}

PollOutcome SessionPoller::fail_poll(const std::string& reason, const std::string& metric_reason,
                                     const std::string& message, bool rejected) {
  deps_.metrics.polls_total.Add({{"environment", label()}, {"result", "error"}}).Increment();
  deps_.metrics.poll_errors_total.Add({{"environment", label()}, {"reason", metric_reason}})
      .Increment();
  deps_.logger.warn("poll failed",
                    {{"environment", label()}, {"reason", reason}, {"error", message}});
  if (rejected) {
    std::lock_guard lock(mutex_);
    rejected_until_ = deps_.clock.now() + kRejectedRetry;
  }
  set_state(rejected ? PollerHealth::kRejected : PollerHealth::kFailing, reason, message);
  return rejected ? PollOutcome::kRejected : PollOutcome::kFailed;
}

PollOutcome SessionPoller::poll_once() {
  PollerSettings settings;
  {
    std::lock_guard lock(mutex_);
    if (state_.health == PollerHealth::kSpecRefused) return PollOutcome::kRejected;
  }
  start_unstarted();
  {
    std::lock_guard lock(mutex_);
    if (state_.health == PollerHealth::kRejected && deps_.clock.now() < rejected_until_) {
      return PollOutcome::kRejected;
    }
    if (state_.health == PollerHealth::kSpecRefused) return PollOutcome::kRejected;
    settings = settings_;
  }
  if (settings.environment.suspend) return PollOutcome::kSuspended;
  // Held until this pass ends; the pod it creates counts against the limit from then on.
  auto slot = reserve_slot();
  if (!slot) {
    last_poll_empty_ = false;  // items may be queued that no poll sees
    return PollOutcome::kAtCapacity;
  }

  std::optional<agentapi::WorkItem> item;
  const auto api_client = api();
  try {
    agentapi::PollOptions options;
    options.block_ms = settings.environment.poll_block_ms;
    options.reclaim_older_than_ms = settings.environment.reclaim_older_than_ms;
    options.worker_id = settings.worker_id;
    item = api_client->poll(options);
  } catch (const agentapi::ApiError& e) {
    const int status = e.status();
    const std::string detail = "work-queue poll answered HTTP " + std::to_string(status) + ": " +
                               (e.api_message().empty() ? e.raw_body() : e.api_message());
    if (status == 401 || status == 403) {
      return fail_poll("KeyRejected", status == 401 ? "unauthorized" : "forbidden", detail, true);
    }
    if (status == 404) return fail_poll("EnvironmentNotFound", "not_found", detail, true);
    if (e.fatal()) return fail_poll("RequestRejected", "client_error", detail, true);
    if (status == 429) return fail_poll("RateLimited", "rate_limited", detail, false);
    return fail_poll("ServerError", "server_error", detail, false);
  } catch (const agentapi::ProtocolError& e) {
    return fail_poll("InvalidResponse", "invalid_response", e.what(), false);
  } catch (const agentapi::TransportError& e) {
    return fail_poll("Unreachable", "transport", e.what(), false);
  }
  const PollTime polled_at{deps_.clock.now(), deps_.clock.wall_now()};
  {
    std::lock_guard lock(mutex_);
    backoff_.reset();
  }
  set_state(PollerHealth::kPolling, "Polling", "the work queue answers");
  deps_.metrics.last_successful_poll_timestamp_seconds.Add({{"environment", label()}})
      .Set(std::chrono::duration<double>(polled_at.wall.time_since_epoch()).count());
  last_poll_empty_ = !item.has_value();
  if (!item) {
    deps_.metrics.polls_total.Add({{"environment", label()}, {"result", "empty"}}).Increment();
    {
      std::lock_guard lock(mutex_);
      if (state_.stats && state_.stats->depth > 0) stats_stale_ = true;
    }
    return PollOutcome::kEmpty;
  }
  deps_.metrics.polls_total.Add({{"environment", label()}, {"result", "work"}}).Increment();
  {
    // Suspended or stopped (the resource was deleted, leadership lost) while this long-poll was
    // waiting: leave the item unacknowledged, and the queue hands it out again after the reclaim
    // window, to us once resumed or to another worker. Claiming it now could strand it.
    std::lock_guard lock(mutex_);
    if (settings_.environment.suspend || stopping_) {
      deps_.logger.info("no longer claiming; leaving the polled item to the queue",
                        {{"environment", label()}, {"work_id", item->id}});
      return PollOutcome::kSuspended;
    }
  }
  if (item->data_type != "session") {
    slot.reset();
    answer_healthcheck(*item);
    return PollOutcome::kClaimed;
  }
  prefer_warm(*slot);
  return claim(*item, polled_at, *slot);
}

bool SessionPoller::release_pod(const std::string& ns, const std::string& pod_name,
                                const std::string& work_id) {
  try {
    deps_.objects.release_pod(ns, pod_name);
    deps_.metrics.pods_released_total.Add({{"environment", label()}, {"result", "released"}})
        .Increment();
    return true;
  } catch (const std::exception& e) {
    deps_.metrics.pods_released_total.Add({{"environment", label()}, {"result", "error"}})
        .Increment();
    deps_.metrics.claim_errors_total
        .Add({{"environment", label()}, {"step", "release"}, {"reason", "kubernetes"}})
        .Increment();
    deps_.logger.warn(
        "could not release the runner pod's scheduling gate",
        {{"environment", label()}, {"work_id", work_id}, {"pod", pod_name}, {"error", e.what()}});
    return false;
  }
}

int SessionPoller::release_acknowledged_pods() {
  std::string ns, name;
  {
    std::lock_guard lock(mutex_);
    ns = settings_.environment.namespace_;
    name = settings_.environment.name;
  }
  int released = 0;
  for (const auto& [pod_name, work_id] : deps_.census.gated(ns, name)) {
    std::string state;
    try {
      state = api()->retrieve_work(work_id).state;
    } catch (const agentapi::ApiError& e) {
      // An item the queue no longer knows can never be acknowledged: let the runner start and
      // report it, rather than leave a pod Pending for ever.
      if (e.status() != 404) {
        deps_.logger.warn("cannot tell whether a gated pod's item was acknowledged",
                          {{"environment", label()}, {"work_id", work_id}, {"error", e.what()}});
        continue;
      }
      state = "unknown to the queue";
    } catch (const std::exception& e) {
      deps_.logger.warn("cannot tell whether a gated pod's item was acknowledged",
                        {{"environment", label()}, {"work_id", work_id}, {"error", e.what()}});
      continue;
    }
    if (state == "queued") continue;  // mid-claim, or left to the reclaim
    deps_.logger.info(
        "releasing a runner pod whose item was acknowledged",
        {{"environment", label()}, {"work_id", work_id}, {"pod", pod_name}, {"item_state", state}});
    if (release_pod(ns, pod_name, work_id)) ++released;
  }
  return released;
}

PollOutcome SessionPoller::claim(const agentapi::WorkItem& item, PollTime polled_at,
                                 SlotReservation& slot) {
  PollerSettings settings;
  {
    std::lock_guard lock(mutex_);
    settings = settings_;
  }
  const auto& env = settings.environment;
  const nlohmann::json log_fields = {
      {"environment", label()}, {"work_id", item.id}, {"session_id", item.data_id}};
  deps_.metrics.sessions_claimed_total.Add({{"environment", label()}}).Increment();

  // A secret the runner cannot use makes a pod that can only fail; Perimeter never hands the
  // environment key to a pod, so the item cannot be served here. Stop it so the queue does not
  // hand it out forever, and say so.
  if (!item.secret || item.secret->empty()) {
    claim_error(item, "decode", "missing_secret", "the poll response carried no secret");
    try {
      api()->ack(item.id);
      api()->stop(item.id, true);
    } catch (const std::exception& e) {
      deps_.logger.warn("stopping an unservable item failed",
                        {{"work_id", item.id}, {"error", e.what()}});
    }
    return PollOutcome::kFailed;
  }
  try {
    agentapi::decode_work_secret(*item.secret);
  } catch (const agentapi::SecretError& e) {
    claim_error(item, "decode", "undecodable_secret", e.what());
    try {
      api()->ack(item.id);
      api()->stop(item.id, true);
    } catch (const std::exception& stop_error) {
      deps_.logger.warn("stopping an unservable item failed",
                        {{"work_id", item.id}, {"error", stop_error.what()}});
    }
    return PollOutcome::kFailed;
  }

  ClaimedSession session{item.id, item.data_id, *item.secret,
                         format_rfc3339_micros(polled_at.wall)};
  try {
    const auto written =
        deps_.objects.ensure_secret(build_session_secret(env, session, deps_.egress));
    if (!written) {
      // This claim outlived the reclaim window and the item went out again: the later claim
      // holds the secret the queue re-issued, and finishes the item.
      deps_.logger.info("a later claim of this item has written its Secret; leaving it the item",
                        log_fields);
      return PollOutcome::kClaimed;
    }
    session.secret = *written;  // the pod records it, for retention's delete
  } catch (const ObjectRefused& e) {
    return refuse_spec(item, env.generation, "secret", e.what());
  } catch (const std::exception& e) {
    claim_error(item, "secret", "kubernetes", e.what());
    return PollOutcome::kFailed;
  }
  // The claims sweep judges a Secret by when a claim last wrote it, and spares it for twice the
  // reclaim window plus a margin (docs/claiming.md); a claim this slow gives the item up rather
  // than acknowledge it. The queue hands the item out again.
  const auto elapsed = deps_.clock.now() - polled_at.steady;
  if (elapsed >= milliseconds(env.reclaim_older_than_ms)) {
    claim_error(item, "ack", "claim_too_slow",
                "the claim took " +
                    std::to_string(std::chrono::duration_cast<milliseconds>(elapsed).count()) +
                    " ms, longer than reclaimOlderThanMs; the queue hands the item out again");
    return PollOutcome::kFailed;
  }
  // An item the queue handed out again while a warm pod an earlier claim (perhaps of an earlier
  // process) assigned it has not finished: that pod serves it, so the ack only, no second pod. A
  // pod that finished is a lost attempt: the item came back after its lease lapsed, and is
  // claimed anew.
  if (const auto assigned = deps_.census.assigned_pod(env.namespace_, item.id);
      assigned && !assigned->finished) {
    if (!acknowledge(item)) return PollOutcome::kFailed;
    deps_.logger.info("the item is assigned to a warm pod already; acknowledged it",
                      {{"environment", label()}, {"work_id", item.id}, {"pod", assigned->name}});
    return PollOutcome::kClaimed;
  }
  if (slot.warm()) {
    // The ack before the assignment, as a cold claim acks before its pod: the assignment is what
    // hands the item to the runner (the pod's event wakes its held request at once), and a runner
    // that heartbeats an item not yet acknowledged gets 412 and ends. A failed ack assigns
    // nothing: the queue hands the item out again and the retry, meeting its Secret, acks.
    if (!acknowledge(item)) return PollOutcome::kFailed;
    if (auto outcome = claim_warm(item, env, session, polled_at)) return *outcome;
    // Acknowledged, and every ready warm pod went elsewhere (the pool removed it, it ended): the
    // item is owed a pod, a cold one, in a free slot or else in the one the lost pod held.
    deps_.logger.info("the ready warm pods went elsewhere; starting a cold pod for the item",
                      log_fields);
    auto cold = reserve_slot(/*cold_only=*/true);
    SlotReservation cold_slot = cold ? std::move(*cold) : take_slot();
    return start_pod(env, session, polled_at.steady, cold_slot);
  }
  return claim_cold(item, env, session, polled_at, slot);
}

bool SessionPoller::acknowledge(const agentapi::WorkItem& item) {
  try {
    api()->ack(item.id);
  } catch (const std::exception& e) {
    claim_error(item, "ack", "api", e.what());
    return false;
  }
  stats_stale_ = true;  // the queue is one shorter
  return true;
}

void SessionPoller::claim_error(const agentapi::WorkItem& item, const std::string& step,
                                const std::string& reason, const std::string& message) {
  deps_.metrics.claim_errors_total
      .Add({{"environment", label()}, {"step", step}, {"reason", reason}})
      .Increment();
  deps_.logger.warn(
      "claim failed",
      {{"environment", label()}, {"work_id", item.id}, {"step", step}, {"error", message}});
  deps_.record_event(
      "Warning", "ClaimFailed",
      "session " + item.data_id + " (work " + item.id + "): " + step + ": " + message);
}

std::optional<PollOutcome> SessionPoller::claim_warm(const agentapi::WorkItem& item,
                                                     const AgentEnvironment& env,
                                                     const ClaimedSession& session,
                                                     PollTime polled_at) {
  const std::string secret_name = runner_object_name(session.work_id);
  // The pods whose runners are waiting right now first, in the census's order otherwise: a pod
  // whose runner died looks ready until the kubelet reports it, and its item would wait out a
  // lease. For those, the assignment records the delivery too.
  std::vector<WarmPodRef> pods = assignable_warm_pods();
  if (deps_.warm_pod_waiting_nonce) {
    for (auto& pod : pods)
      pod.waiting_nonce_sha256 = deps_.warm_pod_waiting_nonce(pod.uid).value_or("");
    std::stable_partition(pods.begin(), pods.end(),
                          [](const WarmPodRef& pod) { return !pod.waiting_nonce_sha256.empty(); });
  }
  for (const auto& pod : pods) {
    {
      std::lock_guard lock(mutex_);
      if (recently_assigned_.count(pod.name) > 0 || !assigning_.insert(pod.name).second) continue;
    }
    bool won = false;
    try {
      won = deps_.objects.assign_warm_pod(env.namespace_, pod, session, secret_name,
                                          env.runner.active_deadline_seconds);
    } catch (const std::exception& e) {
      {
        std::lock_guard lock(mutex_);
        assigning_.erase(pod.name);
      }
      // Acknowledged, and the patch may have landed although its answer did not: no cold pod now,
      // which could double the item. The claims sweep asks the apiserver for the item's warm pod
      // and makes a cold one only when there is none (docs/claiming.md).
      claim_error(item, "assign", "kubernetes", e.what());
      return PollOutcome::kFailed;
    }
    {
      std::lock_guard lock(mutex_);
      assigning_.erase(pod.name);
      if (won) recently_assigned_[pod.name] = deps_.clock.now();
    }
    if (!won) {
      deps_.metrics.warm_assignment_conflicts_total.Add({{"environment", label()}}).Increment();
      continue;
    }
    if (deps_.hand_over_warm_pod) {
      deps_.hand_over_warm_pod(WarmHandOver{pod.uid,
                                            {session.work_id, session.session_id, secret_name},
                                            session.work_secret,
                                            pod.waiting_nonce_sha256});
    }
    deps_.metrics.observe_claim(
        label(), "warm",
        std::chrono::duration<double>(deps_.clock.now() - polled_at.steady).count());
    deps_.logger.info("assigned the session to a warm pod", {{"environment", label()},
                                                             {"work_id", session.work_id},
                                                             {"session_id", session.session_id},
                                                             {"pod", pod.name}});
    return PollOutcome::kClaimed;
  }
  return std::nullopt;
}

PollOutcome SessionPoller::claim_cold(const agentapi::WorkItem& item, const AgentEnvironment& env,
                                      const ClaimedSession& session, PollTime polled_at,
                                      SlotReservation& slot) {
  // Once per generation of the spec, a dry run: a pod the apiserver refuses as this spec builds
  // it is found while its item can still go back to the queue.
  bool checked = false;
  {
    std::lock_guard lock(mutex_);
    checked = checked_generation_ == env.generation;
  }
  if (!checked) {
    try {
      deps_.objects.check_pod(build_runner_pod(env, session, deps_.egress));
    } catch (const ObjectRefused& e) {
      return refuse_spec(item, env.generation, "pod", e.what());
    } catch (const std::exception& e) {
      // The dry run is an early warning, not a gate: an apiserver that cannot answer it (an
      // admission webhook with side effects refuses dry runs) still gets the real create, and a
      // refusal there is handled after the ack.
      deps_.logger.warn("could not check the runner pod this spec builds with a dry run",
                        {{"environment", label()}, {"error", e.what()}});
    }
    std::lock_guard lock(mutex_);
    checked_generation_ = env.generation;
  }
  // A failed ack makes no pod: the queue hands the item out again and the retry, meeting its
  // Secret, acks. An ack that reached the queue although its answer did not is found by the
  // claims sweep.
  if (!acknowledge(item)) return PollOutcome::kFailed;
  // Acknowledged: the lease has started, so the runner may start and heartbeat it at once.
  return start_pod(env, session, polled_at.steady, slot);
}

PollOutcome SessionPoller::start_pod(const AgentEnvironment& env, const ClaimedSession& session,
                                     std::optional<Clock::TimePoint> polled_at,
                                     SlotReservation& slot) {
  const nlohmann::json log_fields = {
      {"environment", label()}, {"work_id", session.work_id}, {"session_id", session.session_id}};
  ClaimedSession unstarted = session;
  unstarted.work_secret.clear();  // the Secret holds it; the poller keeps no copy
  bool created = false;
  // A session whose workspace is its own claim: this start holds the session against the other
  // poll threads (and the sweep) from its check to its pod.
  bool holds_session = false;
  const auto let_go = [&] {
    if (!holds_session) return;
    std::lock_guard lock(mutex_);
    starting_sessions_.erase(session.session_id);
    holds_session = false;
  };
  try {
    if (env.runner.workspace_claim) {
      {
        std::lock_guard lock(mutex_);
        holds_session = starting_sessions_.insert(session.session_id).second;
      }
      std::optional<std::string> wait =
          holds_session ? prepare_workspace(env, session)
                        : std::optional<std::string>("another start of the session is under way");
      if (wait) {
        let_go();
        // Acknowledged and owed a pod, which cannot start yet: kept like a pod that could not be
        // made, tried again at every pass, counted against the limit (docs/claiming.md).
        slot.count_pod(runner_object_name(session.work_id));
        bool first = false;
        {
          std::lock_guard lock(mutex_);
          unstarted_[session.work_id] = unstarted;
          first = waiting_for_workspace_.insert(session.work_id).second;
        }
        if (first) {
          deps_.metrics.workspace_waits_total.Add({{"environment", label()}}).Increment();
          deps_.logger.info("the session's workspace is in use; the item waits",
                            {{"environment", label()},
                             {"work_id", session.work_id},
                             {"session_id", session.session_id},
                             {"reason", *wait}});
          deps_.record_event("Normal", "WaitingForWorkspace",
                             "session " + session.session_id + " (work " + session.work_id +
                                 "): " + *wait + "; its pod starts when the workspace is free");
        }
        return PollOutcome::kClaimed;
      }
    }
    created = deps_.objects.ensure_pod(build_runner_pod(env, session, deps_.egress));
    let_go();
  } catch (const std::exception& e) {
    let_go();
    // The item is acknowledged: its pod is tried again at every pass until it exists (and by the
    // claims sweep should this process end first). A pod the spec cannot make waits for a spec
    // that can. Until the informer shows it, it counts against the limit: a create whose answer
    // was lost may have made it, and the item is owed it either way.
    slot.count_pod(runner_object_name(session.work_id));
    {
      std::lock_guard lock(mutex_);
      unstarted_[session.work_id] = unstarted;
    }
    if (dynamic_cast<const ObjectRefused*>(&e) != nullptr) {
      agentapi::WorkItem item;
      item.id = session.work_id;
      item.data_id = session.session_id;
      return refuse_spec(item, env.generation, "pod", e.what());
    }
    deps_.metrics.claim_errors_total
        .Add({{"environment", label()}, {"step", "pod"}, {"reason", "kubernetes"}})
        .Increment();
    deps_.logger.warn(
        "could not create the runner pod of an acknowledged item; trying again",
        {{"environment", label()}, {"work_id", session.work_id}, {"error", e.what()}});
    deps_.record_event("Warning", "ClaimFailed",
                       "session " + session.session_id + " (work " + session.work_id +
                           "): pod: " + e.what() + "; the item is acknowledged and tried again");
    return PollOutcome::kFailed;
  }
  {
    std::lock_guard lock(mutex_);
    unstarted_.erase(session.work_id);
    waiting_for_workspace_.erase(session.work_id);
  }
  slot.count_pod(runner_object_name(session.work_id));
  if (!created) {
    deps_.logger.info("runner pod already existed", log_fields);
    return PollOutcome::kClaimed;
  }
  deps_.metrics.sessions_started_total.Add({{"environment", label()}}).Increment();
  if (polled_at) {
    const double seconds = std::chrono::duration<double>(deps_.clock.now() - *polled_at).count();
    deps_.metrics.observe_claim(label(), "cold", seconds);
    deps_.metrics.claim_to_pod_created_seconds
        .Add({{"environment", label()}},
             prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                     2.5, 5, 10})
        .Observe(seconds);
  } else {
    // A pod made after its claim's pass (a create that failed then, or the claims sweep after a
    // restart): the claim is counted now, without a latency.
    deps_.metrics.claims_total.Add({{"environment", label()}, {"kind", "cold"}}).Increment();
  }
  deps_.logger.info("runner pod created", log_fields);
  return PollOutcome::kClaimed;
}

std::optional<std::string> SessionPoller::prepare_workspace(const AgentEnvironment& env,
                                                            const ClaimedSession& session) {
  if (deps_.workspaces == nullptr) {
    throw std::logic_error("a workspace claim is asked for, and the poller has no workspaces");
  }
  // The apiserver, not the cache: a pod an earlier leader made a moment ago must count. A pod
  // that has finished runs nothing, so the next one may mount the workspace.
  const auto live =
      deps_.workspaces->live_pods(env, session.session_id, runner_object_name(session.work_id));
  if (!live.empty()) return "pod " + live.front() + " of the session has not ended yet";
  try {
    if (deps_.workspaces->ensure_claim(
            build_workspace_claim(env, session.session_id, session.claimed_at))) {
      deps_.metrics.workspaces_created_total.Add({{"environment", label()}}).Increment();
      deps_.logger.info("created the session's workspace claim",
                        {{"environment", label()},
                         {"session_id", session.session_id},
                         {"claim", workspace_claim_name(session.session_id)}});
    }
  } catch (const WorkspaceBusy& e) {
    return e.what();
  }
  return std::nullopt;
}

std::set<std::string> SessionPoller::sessions_owed_pods() const {
  std::lock_guard lock(mutex_);
  std::set<std::string> sessions;
  for (const auto& [work_id, session] : unstarted_) sessions.insert(session.session_id);
  return sessions;
}

SessionFate SessionPoller::session_fate(const std::string& session_id) {
  try {
    return api()->retrieve_session(session_id).status == "terminated" ? SessionFate::kTerminated
                                                                      : SessionFate::kLive;
  } catch (const agentapi::ApiError& e) {
    if (e.status() == 404) return SessionFate::kGone;
    deps_.logger.warn("cannot tell whether a session with a workspace is terminated",
                      {{"environment", label()}, {"session_id", session_id}, {"error", e.what()}});
  } catch (const std::exception& e) {
    deps_.logger.warn("cannot tell whether a session with a workspace is terminated",
                      {{"environment", label()}, {"session_id", session_id}, {"error", e.what()}});
  }
  return SessionFate::kUnknown;
}

void SessionPoller::start_unstarted() {
  std::vector<ClaimedSession> waiting;
  AgentEnvironment env;  // the current spec: one the apiserver refused may have been fixed
  {
    std::lock_guard lock(mutex_);
    if (unstarted_.empty()) return;
    for (const auto& [work_id, session] : unstarted_) waiting.push_back(session);
    env = settings_.environment;
  }
  for (const auto& session : waiting) {
    // Counts against the limit like any pod; an acknowledged item starts even above it.
    SlotReservation slot = take_slot();
    if (start_pod(env, session, std::nullopt, slot) != PollOutcome::kClaimed) return;
  }
}

PodlessClaim SessionPoller::start_if_acknowledged(const std::string& work_id,
                                                  const std::string& claimed_at) {
  AgentEnvironment env;
  {
    std::lock_guard lock(mutex_);
    env = settings_.environment;
  }
  // A warm claim's Secret is named after its item and its pod is not: the pod is found by its
  // assignment. Finished or not, it holds the item; a finished one's item comes back to the
  // queue after its lease lapses, and is claimed anew.
  if (const auto assigned = deps_.census.assigned_pod(env.namespace_, work_id)) {
    return PodlessClaim::kStarted;
  }
  agentapi::WorkItem item;
  try {
    item = api()->retrieve_work(work_id);
  } catch (const agentapi::ApiError& e) {
    if (e.status() == 404) return PodlessClaim::kOver;
    deps_.logger.warn("cannot tell whether a claim without a pod was acknowledged",
                      {{"environment", label()}, {"work_id", work_id}, {"error", e.what()}});
    return PodlessClaim::kUnknown;
  } catch (const std::exception& e) {
    deps_.logger.warn("cannot tell whether a claim without a pod was acknowledged",
                      {{"environment", label()}, {"work_id", work_id}, {"error", e.what()}});
    return PodlessClaim::kUnknown;
  }
  if (item.state == "queued") return PodlessClaim::kQueued;  // mid-claim, or left to the reclaim
  if (item.state == "stopped") return PodlessClaim::kOver;
  // Acknowledged (by a claim that ended before its pod, perhaps in an earlier process): the pod
  // is made now. Had another worker taken the item instead, the runner's first heartbeat meets
  // that worker's lease, gets 412, and runs nothing.
  // A warm claim assigns its pod right after its ack, so the apiserver may show an assignment
  // the cache does not yet: asked there before a cold pod could double the item. (The sweep
  // spares a Secret for twice the reclaim window, far longer than that step takes.)
  try {
    if (const auto warm = deps_.objects.find_assigned_pod(env.namespace_, env.name, work_id)) {
      deps_.logger.info("an acknowledged claim's item is assigned to a warm pod",
                        {{"environment", label()}, {"work_id", work_id}, {"pod", *warm}});
      return PodlessClaim::kStarted;
    }
  } catch (const std::exception& e) {
    deps_.logger.warn("cannot tell whether an acknowledged claim's item went to a warm pod",
                      {{"environment", label()}, {"work_id", work_id}, {"error", e.what()}});
    return PodlessClaim::kUnknown;
  }
  deps_.logger.info("starting the runner pod of an acknowledged claim",
                    {{"environment", label()}, {"work_id", work_id}, {"item_state", item.state}});
  SlotReservation slot = take_slot();
  const ClaimedSession session{work_id, item.data_id, "", claimed_at};
  return start_pod(env, session, std::nullopt, slot) == PollOutcome::kClaimed
             ? PodlessClaim::kStarted
             : PodlessClaim::kUnknown;
}

PollOutcome SessionPoller::refuse_spec(const agentapi::WorkItem& item, std::int64_t generation,
                                       const std::string& step, const std::string& message) {
  // Refused before the ack (the Secret, the pod's dry run), the item goes back to the queue after
  // the reclaim window, to us once the spec is fixed, or to another worker; refused after it,
  // the poller keeps the item and makes its pod once the spec changes.
  deps_.metrics.claim_errors_total
      .Add({{"environment", label()}, {"step", step}, {"reason", "refused"}})
      .Increment();
  const std::string what = step == "pod" ? "runner pod" : "session Secret";
  deps_.logger.warn("the apiserver refuses the " + what + " this spec builds; claiming stops",
                    {{"environment", label()}, {"work_id", item.id}, {"error", message}});
  deps_.record_event("Warning", "ClaimFailed",
                     "session " + item.data_id + " (work " + item.id + "): " + step + ": " +
                         message + "; no session is claimed until the spec changes");
  {
    std::lock_guard lock(mutex_);
    // A newer spec arrived while this claim ran: it may build objects the apiserver accepts.
    if (settings_.environment.generation != generation) return PollOutcome::kFailed;
    refused_generation_ = generation;
  }
  set_state(PollerHealth::kSpecRefused,
            step == "pod" ? "RunnerPodRejected" : "SessionSecretRejected",
            "the apiserver refused the " + what + " this spec builds: " + message +
                "; no session is claimed until the spec changes");
  return PollOutcome::kRejected;
}

void SessionPoller::answer_healthcheck(const agentapi::WorkItem& item) {
  // As the official worker does for an item that is not a session: acknowledge, take the lease
  // with a first heartbeat, then force-stop it; 409 on stop means it is stopped already.
  std::string credential;
  PollerSettings settings;
  {
    std::lock_guard lock(mutex_);
    settings = settings_;
  }
  credential = settings.environment_key;
  try {
    api()->ack(item.id);
    if (item.secret) {
      try {
        credential = agentapi::decode_work_secret(*item.secret).sessions_token;
      } catch (const agentapi::SecretError&) {
        // The official worker falls back to the environment key here; the operator holds it.
      }
    }
    auto scoped = deps_.api_factory.make(settings.environment.api_base_url,
                                         settings.environment.environment_id, credential,
                                         settings.api_ca_pem);
    scoped->heartbeat(item.id, std::string(agentapi::kNoHeartbeat), std::nullopt,
                      milliseconds(10000));
    try {
      scoped->stop(item.id, true);
    } catch (const agentapi::ApiError& e) {
      if (e.status() != 409) throw;
    }
    deps_.metrics.healthchecks_total.Add({{"environment", label()}, {"result", "ok"}}).Increment();
    deps_.logger.info("answered a health check", {{"environment", label()}, {"work_id", item.id}});
  } catch (const std::exception& e) {
    deps_.metrics.healthchecks_total.Add({{"environment", label()}, {"result", "error"}})
        .Increment();
    deps_.logger.warn("health check failed",
                      {{"environment", label()}, {"work_id", item.id}, {"error", e.what()}});
  }
}

void SessionPoller::refresh_stats() {
  try {
    const auto stats = api()->stats();
    deps_.metrics.queue_depth.Add({{"environment", label()}}).Set(static_cast<double>(stats.depth));
    deps_.metrics.queue_pending.Add({{"environment", label()}})
        .Set(static_cast<double>(stats.pending));
    bool changed = false;
    {
      std::lock_guard lock(mutex_);
      // A new depth is worth a status update; the same one is not.
      changed = !state_.stats || state_.stats->depth != stats.depth ||
                state_.stats->pending != stats.pending;
      state_.stats = stats;
      // An answer proves the queue is reachable even while no poll is made (at capacity).
      if (state_.health == PollerHealth::kStarting) {
        state_.health = PollerHealth::kPolling;
        state_.reason = "Polling";
        state_.message = "the work queue answers";
        changed = true;
      }
    }
    if (changed && deps_.on_state_change) deps_.on_state_change();
  } catch (const std::exception& e) {
    deps_.logger.debug("queue stats failed", {{"environment", label()}, {"error", e.what()}});
  }
}

std::chrono::milliseconds SessionPoller::delay_after(PollOutcome outcome) {
  switch (outcome) {
    case PollOutcome::kClaimed:
      return milliseconds(0);
    case PollOutcome::kEmpty: {
      // A warm pool is there to serve an item the moment it arrives, which needs the long-poll
      // held when it does: the next one at once (one poll a second, block_ms being 999) rather
      // than after the reference loop's 1-3 s, which would be most of the wait.
      {
        std::lock_guard lock(mutex_);
        const auto& pool = settings_.environment.warm_pool;
        if (pool && pool->max_ready > 0) return milliseconds(0);
      }
      const double span = static_cast<double>((kEmptyPollMax - kEmptyPollMin).count());
      return kEmptyPollMin + milliseconds(static_cast<long long>(span * deps_.random.uniform01()));
    }
    case PollOutcome::kAtCapacity:
    case PollOutcome::kSuspended:
    case PollOutcome::kRejected:
      return kCapacityRecheck;
    case PollOutcome::kFailed: {
      std::lock_guard lock(mutex_);
      deps_.metrics.poll_retries_total.Add({{"environment", label()}}).Increment();
      return backoff_.next();
    }
  }
  return kCapacityRecheck;
}

bool SessionPoller::stats_due(Clock::TimePoint last_refresh) const {
  // Every kStatsInterval, and within kStatsAfterChange of a claim or of a poll that found the
  // queue empty, so status does not show a queue that has already drained. A queue the figures
  // and the last poll both show empty is asked every kQuietStatsInterval (the queue counts the
  // workers seen in the last 30 s): an idle environment makes one long-poll at a time and little
  // else.
  constexpr auto kStatsInterval = std::chrono::seconds(5);
  constexpr auto kQuietStatsInterval = std::chrono::seconds(30);
  constexpr auto kStatsAfterChange = std::chrono::seconds(1);
  bool quiet = last_poll_empty_.load();
  {
    std::lock_guard lock(mutex_);
    quiet = quiet && state_.stats && state_.stats->depth == 0 && state_.stats->pending == 0;
  }
  const auto since = deps_.clock.now() - last_refresh;
  return since >= (quiet ? kQuietStatsInterval : kStatsInterval) ||
         (stats_stale_.load() && since >= kStatsAfterChange);
}

void SessionPoller::run(std::stop_token stop, int index) {
  name_this_thread("poll/" + std::to_string(index));
  std::optional<Clock::TimePoint> last_stats;
  while (!stop.stop_requested()) {
    PollOutcome outcome;
    try {
      outcome = poll_once();
    } catch (const std::exception& e) {
      // A bug must not silently kill the poller: log it and back off like any failure.
      deps_.logger.error("poll loop error", {{"environment", label()}, {"error", e.what()}});
      outcome = PollOutcome::kFailed;
    }
    // After the pass, so the first figures already count this worker among those polling.
    if (index == 0 && (!last_stats || stats_due(*last_stats))) {
      stats_stale_ = false;
      refresh_stats();
      last_stats = deps_.clock.now();
    }
    if (outcome == PollOutcome::kClaimed) {
      spread();  // the queue had work: it may have more
    } else if (index > 0) {
      // Helpers poll only while there is work; an idle environment holds one long-poll.
      std::lock_guard lock(mutex_);
      helper_running_[index] = false;
      return;
    }
    const auto delay = delay_after(outcome);
    if (delay.count() == 0) continue;
    std::unique_lock lock(mutex_);
    const auto seen = wake_generation_;
    // Capacity and settings changes cut the wait short; errors and empty polls wait it out.
    const bool interruptible = outcome == PollOutcome::kAtCapacity ||
                               outcome == PollOutcome::kSuspended ||
                               outcome == PollOutcome::kRejected;
    wake_cv_.wait_for(lock, stop, delay, [&] { return interruptible && wake_generation_ != seen; });
  }
}

}  // namespace perimeter::agentenvironment
