#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "core/clock.h"
#include "core/log.h"
#include "core/token_bucket.h"
#include "proxy/audit.h"
#include "proxy/guard_config.h"
#include "proxy/guard_metrics.h"
#include "proxy/server_requests.h"
#include "proxy/upstream_stream.h"

namespace perimeter::mcpguard {

// What one config generation says about a route. Immutable once published: a request takes the
// snapshot current when it starts and keeps it, so a reload never changes an exchange midway.
struct RoutePolicy {
  RouteConfig route;
  LimitsConfig limits;
  AuditConfig audit;
  std::shared_ptr<TokenBucket> rate_limiter;  // null when the route has no rate limit
  // The TLS client settings of an https upstream (null for http), with the CA file as read
  // when this config was loaded.
  std::shared_ptr<ssl::context> upstream_tls;
};

// A route for the life of the process: its name, the policy in force, and what its server has
// listed as tools. Shared by its listener and every session on it.
class RouteContext {
 public:
  static constexpr std::size_t kMaxPendingServerRequests = 1024;

  RouteContext(std::string name, std::shared_ptr<const RoutePolicy> policy, GuardMetrics& metrics,
               AuditSink& audit_sink, const Clock& clock, Logger logger);

  const std::string& name() const { return name_; }
  std::shared_ptr<const RoutePolicy> policy() const { return policy_.load(); }
  // Publishes the policy of a reloaded config; exchanges already running keep theirs.
  void set_policy(std::shared_ptr<const RoutePolicy> policy) { policy_.store(std::move(policy)); }

  // Remembers the names of a tools/list result (before filtering), so the `tool` label of
  // requests_total takes only names the server itself listed.
  void remember_listed_tools(const nlohmann::json& response);
  // `tool` as a metric label: the name when the server listed it, else "(unlisted)".
  std::string_view tool_label(std::string_view tool) const;

  // Requests the server sent on a stream (sampling, elicitation, roots): each one's audit line is
  // written when the client's answer is seen (server_request_answered), or with `no_response`
  // when it is evicted (more than kMaxPendingServerRequests pending), expires (older than the
  // route's upstream_reply_timeout) or the guard shuts down.
  void server_request_sent(AuditRecord record, std::string_view metric_method);
  // The client's response `id` in `session` (`error_code`: the error's code, if it is one;
  // `result`: the response's result or error, for level full). False when no request of the
  // server's is pending under that key.
  bool server_request_answered(const std::optional<std::string>& session, const nlohmann::json& id,
                               std::optional<std::int64_t> error_code, nlohmann::json result,
                               std::uint64_t bytes_in);
  // Writes the lines of requests older than upstream_reply_timeout.
  void expire_server_requests();
  // Writes the lines of every request still pending (the guard is stopping).
  void flush_server_requests();
  std::size_t pending_server_requests() const { return server_requests_.size(); }

  GuardMetrics& metrics() const { return metrics_; }
  AuditSink& audit_sink() const { return audit_sink_; }
  const Clock& clock() const { return clock_; }
  const Logger& logger() const { return logger_; }

 private:
  void write_unanswered(std::vector<PendingServerRequests::Entry>& entries,
                        std::string_view reason);

  std::string name_;
  std::atomic<std::shared_ptr<const RoutePolicy>> policy_;
  GuardMetrics& metrics_;
  AuditSink& audit_sink_;
  const Clock& clock_;
  Logger logger_;
  PendingServerRequests server_requests_;
  mutable std::shared_mutex listed_tools_mutex_;
  std::unordered_set<std::string> listed_tools_;  // guarded by listed_tools_mutex_
};

// The policy snapshot for `route` under `config` (a new rate limiter only when the route's rate
// limit changed, so a reload does not refill every bucket; the CA file of an https upstream read
// again). Throws std::runtime_error when an https upstream's CA file cannot be used.
std::shared_ptr<const RoutePolicy> make_route_policy(const GuardConfig& config,
                                                     const RouteConfig& route,
                                                     const RoutePolicy* previous,
                                                     const Clock& clock);

}  // namespace perimeter::mcpguard
