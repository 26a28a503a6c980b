#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/operator_metrics.h"
#include "controllers/agentenvironment/session_workspace.h"
#include "core/clock.h"
#include "core/log.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {

// What the hosted API says of a session, for its workspace: still there (any status but
// terminated), terminated, gone (404), or no answer.
enum class SessionFate { kLive, kTerminated, kGone, kUnknown };

// What one survey found of an environment's workspace claims, for status and requeue.
struct WorkspaceFigures {
  std::size_t total = 0;
  std::size_t pending = 0;  // not bound yet
  std::size_t in_use = 0;   // a live pod of the session, or an item waiting for one
  std::size_t idle = 0;     // bound, no pod: kept for the session's next message
  // When the next claim's retention ends, or a pending one is due its warning.
  std::optional<Clock::Duration> next_check;
};

// Keeps an environment's session workspaces (PersistentVolumeClaims) to the spec's retention,
// from the claims' cache: a claim no live pod of its session uses is stamped idle; one idle for
// idleRetentionSeconds, or whose session the API says is terminated (or no longer knows), is
// deleted with its uid and resourceVersion as preconditions, so a claim a new item stamped since
// stays. Also keeps each claim's owner as whenEnvironmentDeleted says, and warns once of a claim
// that does not bind. docs/workspaces.md.
class WorkspaceRetention {
 public:
  struct Dependencies {
    runtime::Store& claims;  // workspace claim informer cache
    runtime::Store& pods;    // runner pod informer cache
    SessionWorkspaces& workspaces;
    OperatorMetrics& metrics;
    Clock& clock;
    Logger logger;
  };
  // A Kubernetes Event on the AgentEnvironment: type, reason, message.
  using EventSink = std::function<void(const std::string&, const std::string&, const std::string&)>;
  struct Options {
    // How often the API is asked about an idle claim's session.
    std::chrono::seconds session_check{60};
    // A claim not bound after this long gets one Warning Event.
    std::chrono::seconds unbound_warning{30};
    // A claim an item stamped this recently counts as in use until the cache shows that item's
    // pod: the pod is made a moment after the stamp, and the cache shows it a moment later. Past
    // this the claim is judged without it (a pod whose retention removed it at once is never
    // shown again), so a terminated session's claim is not kept for long.
    std::chrono::seconds recent_claim{30};
  };

  WorkspaceRetention(Dependencies deps, Options options);

  // One pass over `env`'s claims. `busy_sessions`: sessions with an item the poller holds for a
  // pod not made yet (their workspace is about to be used). `session_fate` asks the API; null:
  // not asked this pass. Events go to `record_event`.
  WorkspaceFigures survey(const AgentEnvironment& env, const std::set<std::string>& busy_sessions,
                          const std::function<SessionFate(const std::string&)>& session_fate,
                          const EventSink& record_event);
  // The environment is gone (or no longer served): forget what was remembered of its claims.
  void forget(const std::string& environment_key);

 private:
  struct SessionPods {
    bool live = false;        // a pod of the session has not finished
    bool claim_seen = false;  // the pod of the claim that stamped `claimed_at` is cached
  };
  SessionPods pods_of(const AgentEnvironment& env, const std::string& session_id,
                      const std::string& claimed_at) const;

  // What is remembered of one environment's claims, by claim uid; only claims the last survey
  // saw are kept.
  struct Remembered {
    std::set<std::string> warned_unbound;
    std::map<std::string, Clock::TimePoint> session_checked;  // last API check
  };

  Dependencies deps_;
  Options options_;
  std::mutex mutex_;
  std::map<std::string, Remembered> remembered_;  // by "namespace/name" of the environment
};

}  // namespace perimeter::agentenvironment
