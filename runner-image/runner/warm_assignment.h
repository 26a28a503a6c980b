#pragma once

// A warm runner's wait for its work item (docs/warm-pool.md): the pod starts before any session
// exists, long-polls the operator's assignment service with the token the operator minted for
// this pod alone, and once it holds an assignment runs exactly as a cold runner does, from the
// same env contract with the assignment's three values in place of the per-session variables.

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "agentapi/http_transport.h"
#include "core/backoff.h"
#include "core/log.h"
#include "core/random.h"
#include "runner/runner_config.h"
#include "runner/runner_metrics.h"
#include "runner/stop_source.h"

namespace perimeter::runner {

// Where and how a warm runner asks for its assignment. Holds the token: never log this struct.
struct WarmConfig {
  // PERIMETER_WARM_ASSIGNMENT_URL: https://<service>.<namespace>.svc:<port> (no path).
  std::string assignment_url{};
  // The contents of PERIMETER_WARM_TOKEN_FILE (the pod's own Secret), surrounding space trimmed.
  std::string token{};
  // The contents of PERIMETER_WARM_CA_FILE: the CA that signed the assignment service's
  // certificate, the only CA trusted for it.
  std::string ca_pem{};
};

// Reads the three variables; nullopt when PERIMETER_WARM_ASSIGNMENT_URL is absent (a cold pod).
// Throws ConfigError when the URL is not https:// or a file is missing, unreadable or empty.
// Messages never hold the token.
std::optional<WarmConfig> load_warm_config(const EnvLookup& env);

// What a cold runner reads from ANTHROPIC_WORK_ID, ANTHROPIC_SESSION_ID and
// ANTHROPIC_WORK_SECRET. Holds the work secret: never log it.
struct WarmAssignment {
  std::string work_id{};
  std::string session_id{};
  std::string work_secret{};
};

// `env` with the assignment's values in place of the three per-session variables, so that
// load_runner_config resolves a warm runner's config by the same rules as a cold one's.
EnvLookup with_assignment(EnvLookup env, WarmAssignment assignment);

// The operator refused this pod's token (401, 403) or has already handed out and confirmed its
// assignment (410): there is nothing to wait for.
class AssignmentRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WarmAssignmentTiming {
  // Above the service's hold (20 s), so a request ends with the server's empty answer, not our
  // timeout.
  std::chrono::milliseconds request_timeout{30'000};
  // After a failed request (no answer, 5xx, an answer that does not parse).
  BackoffPolicy retry{std::chrono::milliseconds(200), std::chrono::milliseconds(5'000), 2.0, 0.2};
};

// The assignment protocol, client side:
//   GET  {url}/v1/assignment           Authorization: Bearer <token>
//                                      Perimeter-Assignment-Nonce: <this process's nonce>
//        200 {"work_id","session_id","work_secret","delivered"} | 204 nothing yet, ask again |
//        401/403/410
//   POST {url}/v1/assignment/confirm   Authorization: Bearer <token>, {"work_id": "..."}
//        204 confirmed (again, for the same work id) | 401/403/409/410
// The token must open nothing once the runner holds its assignment, before the session (and the
// agent's commands, which could read the token's file) starts. The operator records the delivery
// on the pod before it answers ("delivered": true) and from then on answers only a request with
// the same nonce (the same runner, after a lost answer), which lives in this process's memory
// alone. An operator of an earlier version answers without "delivered" and records it on the
// confirm, which the runner then sends.
class WarmAssignmentClient {
 public:
  WarmAssignmentClient(WarmConfig config, agentapi::HttpTransport& transport,
                       StoppableSleeper& sleeper, RandomSource& random, Logger logger,
                       RunnerMetrics* metrics, WarmAssignmentTiming timing = {});

  // Waits for this pod's assignment and confirms it. nullopt when `stop` fired first. Throws
  // AssignmentRefused. Failed requests are retried with backoff and jitter, for as long as it
  // takes: the operator replaces a warm pod that waits too long, not the runner.
  std::optional<WarmAssignment> wait(StopSource& stop);

  static constexpr std::string_view kNonceHeader = "Perimeter-Assignment-Nonce";

 private:
  enum class Outcome { kDone, kRetry };
  Outcome fetch(StopSource& stop, std::optional<WarmAssignment>* assignment);
  Outcome confirm(StopSource& stop, const WarmAssignment& assignment);
  void back_off(StopSource& stop, Backoff& backoff, const std::string& why);

  WarmConfig config_;
  agentapi::HttpTransport& transport_;
  StoppableSleeper& sleeper_;
  RandomSource& random_;
  Logger logger_;
  RunnerMetrics* metrics_;
  WarmAssignmentTiming timing_;
  // 32 random bytes as hex, sent with every fetch; never logged.
  std::string nonce_;
  // The last assignment's answer said its delivery is recorded: no confirm to send.
  bool delivered_ = false;
};

}  // namespace perimeter::runner
