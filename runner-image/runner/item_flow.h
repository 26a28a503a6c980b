#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "agentapi/agent_api.h"
#include "agentapi/memory_api.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "runner/lease.h"
#include "runner/memory_stores.h"
#include "runner/runner_config.h"
#include "runner/runner_metrics.h"
#include "runner/session_runner.h"
#include "runner/skills.h"
#include "runner/stop_source.h"
#include "tools/tool_executor.h"

namespace perimeter::runner {

// The process exit codes (docs/runner.md).
enum ExitCode : int {
  kExitServed = 0,       // served to the end, or stopped on request; the item was stopped
  kExitConfig = 2,       // the env contract is incomplete or there is no credential
  kExitLeaseLost = 3,    // another worker holds the lease (412) or it lapsed: item left alone
  kExitApiRejected = 4,  // the API refused us for good (fatal 4xx) or the session fetch failed
  kExitInternal = 5,     // a bug: an exception nobody expected
};

struct ItemFlowOptions {
  SessionRunnerOptions session;
  HeartbeatTiming heartbeat;
  // How often the watchdog checks the idle countdown.
  std::chrono::milliseconds watchdog_tick{100};
  // The memory store calls (the item's sessions token), or null: memory stores off, as the SDK
  // worker with `memorySyncIntervalMs: null`. Not owned.
  agentapi::MemoryApi* memory_api = nullptr;
  std::chrono::milliseconds memory_sync_interval = kDefaultMemorySyncInterval;
  // The bound on the final sync, and again on the flush, at teardown.
  std::chrono::milliseconds memory_flush_timeout = kMemoryFlushTimeout;
};

// Directories outside the workdir the file tools may reach, and those write/edit refuse (the
// session's memory stores, read-only ones).
struct ToolRoots {
  std::vector<std::string> allowed;
  std::vector<std::string> read_only;
};
using ToolsFactory = std::function<std::unique_ptr<tools::ToolExecutor>(const ToolRoots&)>;

// One claimed work item, served as the official worker's #handleItem: the heartbeat on its own
// thread first, then the session fetch, then the session runner; on exit force-stop unless the
// lease was lost. `stop` is also the graceful-shutdown trigger (SIGTERM).
class ItemFlow {
 public:
  ItemFlow(const RunnerConfig& config, agentapi::AgentApi& api, ToolsFactory tools,
           ArchiveCommand& archive, StopSource& stop, const Clock& clock, StoppableSleeper& sleeper,
           RandomSource& random, Logger logger, RunnerMetrics* metrics = nullptr,
           ItemFlowOptions options = {});

  ExitCode run();

 private:
  ExitCode serve(const Lease& lease);
  void force_stop();
  void set_runner(SessionRunner* runner);
  // The SDK's memory teardown: the final sync after a clean end, the push-only flush, each bounded
  // by memory_flush_timeout; then the folders are removed. Never throws.
  void teardown_memory(SessionMemoryStores& stores, bool clean_end);

  const RunnerConfig& config_;
  agentapi::AgentApi& api_;
  ToolsFactory tools_factory_;
  ArchiveCommand& archive_;
  StopSource& stop_;
  const Clock& clock_;
  StoppableSleeper& sleeper_;
  RandomSource& random_;
  Logger logger_;
  RunnerMetrics* metrics_;
  ItemFlowOptions options_;
  // The heartbeat thread forwards the lease TTL to the runner while it exists.
  std::mutex runner_mutex_;
  SessionRunner* runner_ = nullptr;
  std::atomic<long long> lease_ttl_ms_{0};
};

}  // namespace perimeter::runner
