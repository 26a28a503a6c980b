#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agentapi/agent_api.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "runner/audit_log.h"
#include "runner/idle_clock.h"
#include "runner/runner_metrics.h"
#include "runner/stop_source.h"
#include "tools/tool_executor.h"

namespace perimeter::runner {

struct SessionRunnerOptions {
  std::chrono::milliseconds max_idle{60'000};
  std::chrono::milliseconds stream_backoff_start{500};
  std::chrono::milliseconds stream_backoff_cap{10'000};
  std::chrono::milliseconds send_backoff_start{1'000};
  std::chrono::milliseconds send_backoff_cap{30'000};
  // Until the first heartbeat reports the lease TTL (the SDK's standalone default).
  std::chrono::milliseconds send_retry_window{5 * 60'000};
  int list_page_size = 1000;
  // One line per tool call, written before its result is sent; null writes none. Not owned.
  AuditLog* audit = nullptr;
  // After each tool call is dealt with (run and posted, denied, or left to its owner): where the
  // SDK's worker loop runs the memory stores' syncIfDue. Runs on the stream thread.
  std::function<void()> after_call;
};

// How the session runner ended.
enum class SessionEnd { kTerminated, kIdle, kStopped, kStreamRejected };
const char* to_string(SessionEnd end);

// The official SessionToolRunner: follows one session's events, runs its tool calls through a
// ToolExecutor and posts the results. Reconnects with backoff and reconciles from the event list
// so no call runs twice or is missed. Tools run inline on the stream thread, as in the SDK.
class SessionRunner {
 public:
  SessionRunner(agentapi::AgentApi& api, std::string session_id, tools::ToolExecutor& tools,
                StopSource& stop, const Clock& clock, StoppableSleeper& sleeper,
                RandomSource& random, Logger logger, RunnerMetrics* metrics = nullptr,
                SessionRunnerOptions options = {});

  // Serves the session until it terminates, the idle countdown runs out, or `stop` fires.
  SessionEnd run();
  // The lease TTL from each heartbeat: a result send is abandoned only once the lease may have
  // lapsed. Safe from any thread.
  void set_send_retry_window(std::chrono::milliseconds window) {
    send_window_ms_.store(window.count());
  }
  // Called by the watchdog: ends the run when the idle countdown has expired.
  bool check_idle();
  const IdleClock& idle_clock() const { return idle_; }

 private:
  void reconcile(std::string* resume_after);
  void ingest_history(const agentapi::SessionEvent& event,
                      std::vector<agentapi::SessionEvent>* pending);
  // Returns true when the runner must exit.
  bool handle_stream_event(const agentapi::SessionEvent& event);
  void route_tool_event(const agentapi::SessionEvent& event);
  void note_confirmation(const std::string& tool_use_id, const std::string& verdict);
  void apply_verdict(const agentapi::SessionEvent& event, const std::string& verdict);
  void execute(const agentapi::SessionEvent& event, bool confirmed);
  bool send_result(const nlohmann::json& result, const std::string& tool_use_id);
  // The line of a call that does not run here; once per call, however often it is routed.
  void audit_not_run(const agentapi::SessionEvent& event, AuditDecision decision,
                     const std::string& denied_by = "");
  bool in_terminated_thread(const agentapi::SessionEvent& event) const;
  void release_terminated_holds();
  std::chrono::milliseconds jittered(std::chrono::milliseconds start, std::chrono::milliseconds cap,
                                     int attempt);

  agentapi::AgentApi& api_;
  std::string session_id_;
  tools::ToolExecutor& tools_;
  StopSource& stop_;
  const Clock& clock_;
  StoppableSleeper& sleeper_;
  RandomSource& random_;
  Logger logger_;
  RunnerMetrics* metrics_;
  SessionRunnerOptions options_;
  IdleClock idle_;
  std::atomic<long long> send_window_ms_;
  std::atomic<bool> idle_expired_{false};
  std::atomic<bool> terminated_{false};

  std::set<std::string> seen_;
  std::set<std::string> answered_;
  std::map<std::string, std::string> verdicts_;
  std::map<std::string, agentapi::SessionEvent> awaiting_;
  std::set<std::string> terminated_threads_;
  std::set<std::string> audited_not_run_;
};

}  // namespace perimeter::runner
