#include "runner/item_flow.h"

#include <thread>

#include "agentapi/api_error.h"

namespace perimeter::runner {

ItemFlow::ItemFlow(const RunnerConfig& config, agentapi::AgentApi& api, ToolsFactory tools,
                   ArchiveCommand& archive, StopSource& stop, const Clock& clock,
                   StoppableSleeper& sleeper, RandomSource& random, Logger logger,
                   RunnerMetrics* metrics, ItemFlowOptions options)
    : config_(config),
      api_(api),
      tools_factory_(std::move(tools)),
      archive_(archive),
      stop_(stop),
      clock_(clock),
      sleeper_(sleeper),
      random_(random),
      logger_(std::move(logger)),
      metrics_(metrics),
      options_(options) {}

ExitCode ItemFlow::run() {
  if (config_.secret_unusable) {
    logger_.warn(
        "work item carried a secret payload but no sessions token could be extracted; falling "
        "back to the environment key",
        {{"work_id", config_.work_id}});
  }
  Lease lease(stop_);
  HeartbeatLoop heartbeat(api_, config_.work_id, lease, clock_, sleeper_, logger_.child("lease"),
                          metrics_, options_.heartbeat);
  heartbeat.on_ttl([this](std::chrono::milliseconds ttl) {
    lease_ttl_ms_.store(ttl.count());
    std::lock_guard lock(runner_mutex_);
    if (runner_ != nullptr) runner_->set_send_retry_window(ttl);
  });
  // Before anything slow: a lease lapsing during the session fetch would let another worker
  // claim the item and serve the same session.
  std::thread heartbeat_thread([&heartbeat] { heartbeat.run(); });

  ExitCode code = kExitServed;
  try {
    code = serve(lease);
  } catch (const SessionMemoryError& error) {
    logger_.error("work item failed", {{"work_id", config_.work_id}, {"error", error.what()}});
    code = kExitApiRejected;
  } catch (const agentapi::ApiError& error) {
    logger_.error("work item failed", {{"work_id", config_.work_id},
                                       {"operation", error.operation()},
                                       {"status", error.status()},
                                       {"error", error.raw_body()}});
    code = kExitApiRejected;
  } catch (const std::exception& error) {
    logger_.error("work item failed", {{"work_id", config_.work_id}, {"error", error.what()}});
    code = kExitInternal;
  }
  // The heartbeat keeps the lease alive until here.
  lease.finish(LeaseEnd::kRunnerDone);
  heartbeat_thread.join();
  if (lease.lost()) {
    logger_.info("lease lost; released without stopping it", {{"work_id", config_.work_id},
                                                              {"session_id", config_.session_id},
                                                              {"reason", to_string(lease.end())}});
    return kExitLeaseLost;
  }
  force_stop();
  if (lease.end() == LeaseEnd::kHeartbeatRejected && code == kExitServed) code = kExitApiRejected;
  logger_.info("work item done", {{"work_id", config_.work_id},
                                  {"session_id", config_.session_id},
                                  {"lease_end", to_string(lease.end())},
                                  {"exit_code", static_cast<int>(code)}});
  return code;
}

ExitCode ItemFlow::serve(const Lease& lease) {
  const agentapi::Session session = api_.retrieve_session(config_.session_id);
  if (session.status == "terminated") {
    logger_.info("skipping the work item of a terminated session",
                 {{"session_id", config_.session_id}, {"work_id", config_.work_id}});
    return kExitServed;
  }
  if (stop_.requested()) return kExitServed;
  // Only with the session in hand can one that has no memory be told from one whose memory
  // cannot be mounted: the memory endpoints refuse the environment key.
  const auto resources = session.raw.find("resources");
  bool has_memory_store = false;
  if (resources != session.raw.end() && resources->is_array()) {
    for (const auto& resource : *resources) {
      has_memory_store |= resource.is_object() && resource.value("type", "") == "memory_store";
    }
  }
  if (config_.credential_source != "work_secret" && options_.memory_api != nullptr &&
      has_memory_store) {
    throw SessionMemoryError(
        "cannot mount the session's memories: the work item carried no sessions token (work_id=" +
        config_.work_id + ", session_id=" + config_.session_id +
        "); the memory endpoints reject the environment key, so the poller must issue a per-item "
        "`secret` carrying `sessions_token`, or set PERIMETER_MEMORY_SYNC_INTERVAL_MS=off to run "
        "without memory");
  }

  // The memory teardown runs after the skills' (declared first, so destroyed last), while the
  // heartbeat still holds the lease, as the SDK's `finally`.
  std::unique_ptr<SessionMemoryStores> stores;
  bool clean_end = false;
  struct MemoryTeardown {
    ItemFlow& flow;
    std::unique_ptr<SessionMemoryStores>& stores;
    const bool& clean_end;
    ~MemoryTeardown() {
      if (stores) flow.teardown_memory(*stores, clean_end);
    }
  } memory_teardown{*this, stores, clean_end};

  // Skills land in <workdir>/skills before the first call; a failure is logged, not fatal. The
  // guard removes them on every way out, while the heartbeat still holds the lease.
  SkillInstaller skills(api_, archive_, config_.workdir, logger_.child("skills"));
  struct CleanupSkills {
    SkillInstaller& skills;
    ~CleanupSkills() { skills.cleanup(); }
  } cleanup_skills{skills};
  try {
    skills.install(session);
  } catch (const std::exception& error) {
    logger_.warn("skill setup failed", {{"session_id", config_.session_id},
                                        {"work_id", config_.work_id},
                                        {"error", error.what()}});
  }

  ToolRoots roots;
  if (config_.credential_source == "work_secret" && options_.memory_api != nullptr) {
    SessionMemoryOptions memory_options;
    memory_options.workdir = config_.workdir;
    memory_options.sync_interval = options_.memory_sync_interval;
    stores = std::make_unique<SessionMemoryStores>(*options_.memory_api, memory_options, clock_,
                                                   logger_.child("memory"));
    // A store that cannot be materialised fails the item (after the teardown above).
    stores->download(session.raw);
    // A store mounted outside the workdir stays reachable; read-only stores still refuse writes.
    roots.allowed = stores->roots();
    roots.read_only = stores->read_only_roots();
  } else {
    logger_.debug("memory stores disabled for this item", {{"work_id", config_.work_id}});
  }

  std::unique_ptr<tools::ToolExecutor> tools = tools_factory_(roots);
  SessionRunnerOptions session_options = options_.session;
  if (stores) {
    SessionMemoryStores* memory = stores.get();
    session_options.after_call = [memory] { memory->sync_if_due(); };
  }
  SessionRunner runner(api_, config_.session_id, *tools, stop_, clock_, sleeper_, random_,
                       logger_.child("session"), metrics_, session_options);
  // A beat may have reported the TTL before the runner existed.
  if (const long long ttl = lease_ttl_ms_.load(); ttl > 0) {
    runner.set_send_retry_window(std::chrono::milliseconds(ttl));
  }
  set_runner(&runner);
  StopSource watchdog_done;
  std::thread watchdog([this, &runner, &watchdog_done] {
    while (!watchdog_done.requested() && !stop_.requested()) {
      if (runner.check_idle()) break;
      watchdog_done.wait_for(options_.watchdog_tick);
    }
  });
  SessionEnd end = SessionEnd::kStopped;
  try {
    end = runner.run();
  } catch (...) {
    watchdog_done.request();
    watchdog.join();
    set_runner(nullptr);
    tools->close();
    throw;
  }
  watchdog_done.request();
  watchdog.join();
  set_runner(nullptr);
  tools->close();
  logger_.info("session runner finished", {{"session_id", config_.session_id},
                                           {"end", to_string(end)},
                                           {"lease_end", to_string(lease.end())}});
  // Only a session that ended on its own (terminated, or idle after its turn) earns the last full
  // sync; a stop (SIGTERM, the lease) gets the flush alone, as the SDK's aborted controller.
  clean_end = end == SessionEnd::kTerminated || end == SessionEnd::kIdle;
  return end == SessionEnd::kStreamRejected ? kExitApiRejected : kExitServed;
}

void ItemFlow::teardown_memory(SessionMemoryStores& stores, bool clean_end) {
  const long long bound_ms = options_.memory_flush_timeout.count();
  try {
    if (clean_end && stores.finish(clock_.now() + options_.memory_flush_timeout)) {
      logger_.warn("final memory sync cut off after " + std::to_string(bound_ms) +
                       "ms; the flush that follows still uploads changed files",
                   {{"session_id", config_.session_id}, {"work_id", config_.work_id}});
    }
    if (stores.flush_writes(clock_.now() + options_.memory_flush_timeout)) {
      logger_.warn("memory flush cut off after " + std::to_string(bound_ms) +
                       "ms; changed files it had not uploaded yet are not saved",
                   {{"session_id", config_.session_id}, {"work_id", config_.work_id}});
    }
  } catch (const std::exception& error) {
    logger_.warn("memory sync at teardown failed",
                 {{"session_id", config_.session_id}, {"error", error.what()}});
  }
  try {
    stores.dispose();
  } catch (const std::exception& error) {
    logger_.warn("memory store cleanup failed", {{"session_id", config_.session_id},
                                                 {"work_id", config_.work_id},
                                                 {"error", error.what()}});
  }
}

void ItemFlow::set_runner(SessionRunner* runner) {
  std::lock_guard lock(runner_mutex_);
  runner_ = runner;
}

void ItemFlow::force_stop() {
  try {
    api_.stop(config_.work_id, /*force=*/true);
  } catch (const agentapi::ApiError& error) {
    if (error.status() != 409) {
      logger_.error(
          "force-stop on exit failed",
          {{"work_id", config_.work_id}, {"status", error.status()}, {"error", error.raw_body()}});
    }
  } catch (const std::exception& error) {
    logger_.error("force-stop on exit failed",
                  {{"work_id", config_.work_id}, {"error", error.what()}});
  }
}

}  // namespace perimeter::runner
