#include "proxy/route_context.h"

#include <mutex>

namespace perimeter::mcpguard {
namespace {

// A server listing more distinct names than this is not describing its tools; the label set
// stays bounded and later names count as "(unlisted)".
constexpr std::size_t kMaxListedTools = 4096;

}  // namespace

RouteContext::RouteContext(std::string name, std::shared_ptr<const RoutePolicy> policy,
                           GuardMetrics& metrics, AuditSink& audit_sink, const Clock& clock,
                           Logger logger)
    : name_(std::move(name)),
      policy_(std::move(policy)),
      metrics_(metrics),
      audit_sink_(audit_sink),
      clock_(clock),
      logger_(std::move(logger)),
      server_requests_(kMaxPendingServerRequests) {}

void RouteContext::write_unanswered(std::vector<PendingServerRequests::Entry>& entries,
                                    std::string_view reason) {
  if (entries.empty()) return;
  const auto policy = this->policy();
  const auto now = std::chrono::steady_clock::now();
  for (auto& entry : entries) {
    entry.record.outcome = "no_response";
    entry.record.duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - entry.sent).count();
    audit_sink_.write_line(render_audit_line(entry.record, policy->audit));
    metrics_.server_request_unanswered(name_, reason);
  }
}

void RouteContext::server_request_sent(AuditRecord record, std::string_view metric_method) {
  std::vector<PendingServerRequests::Entry> evicted;
  const auto session = record.session;
  const auto id = record.id;
  server_requests_.add(
      session, id, {std::move(record), std::chrono::steady_clock::now(), metric_method}, &evicted);
  write_unanswered(evicted, "evicted");
}

bool RouteContext::server_request_answered(const std::optional<std::string>& session,
                                           const nlohmann::json& id,
                                           std::optional<std::int64_t> error_code,
                                           nlohmann::json result, std::uint64_t bytes_in) {
  auto entry = server_requests_.take(session, id);
  if (!entry) return false;
  const auto policy = this->policy();
  entry->record.outcome = error_code ? "error" : "result";
  entry->record.rpc_error_code = error_code;
  entry->record.bytes_in = bytes_in;
  if (policy->audit.level == AuditLevel::kFull) entry->record.result = std::move(result);
  entry->record.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - entry->sent)
                                  .count();
  audit_sink_.write_line(render_audit_line(entry->record, policy->audit));
  return true;
}

void RouteContext::expire_server_requests() {
  std::vector<PendingServerRequests::Entry> expired;
  server_requests_.take_older_than(
      std::chrono::steady_clock::now() - policy()->limits.upstream_reply_timeout, &expired);
  write_unanswered(expired, "expired");
}

void RouteContext::flush_server_requests() {
  std::vector<PendingServerRequests::Entry> all;
  server_requests_.take_all(&all);
  write_unanswered(all, "shutdown");
}

void RouteContext::remember_listed_tools(const nlohmann::json& response) {
  if (!response.is_object()) return;
  const auto result = response.find("result");
  if (result == response.end() || !result->is_object()) return;
  const auto tools = result->find("tools");
  if (tools == result->end() || !tools->is_array()) return;
  std::unique_lock lock(listed_tools_mutex_);
  for (const auto& tool : *tools) {
    if (listed_tools_.size() >= kMaxListedTools) return;
    if (!tool.is_object()) continue;
    const auto name = tool.find("name");
    if (name != tool.end() && name->is_string()) listed_tools_.insert(name->get<std::string>());
  }
}

std::string_view RouteContext::tool_label(std::string_view tool) const {
  std::shared_lock lock(listed_tools_mutex_);
  const auto found = listed_tools_.find(std::string(tool));
  // The set only grows, so a view into one of its strings stays valid.
  return found == listed_tools_.end() ? std::string_view("(unlisted)") : std::string_view(*found);
}

std::shared_ptr<const RoutePolicy> make_route_policy(const GuardConfig& config,
                                                     const RouteConfig& route,
                                                     const RoutePolicy* previous,
                                                     const Clock& clock) {
  auto policy = std::make_shared<RoutePolicy>();
  policy->route = route;
  policy->limits = config.limits;
  policy->audit = config.audit;
  if (route.rate_limit) {
    if (previous != nullptr && previous->rate_limiter && previous->route.rate_limit &&
        *previous->route.rate_limit == *route.rate_limit) {
      policy->rate_limiter = previous->rate_limiter;
    } else {
      policy->rate_limiter = std::make_shared<TokenBucket>(route.rate_limit->requests_per_second,
                                                           route.rate_limit->burst, clock);
    }
  }
  if (route.upstream.tls) policy->upstream_tls = make_upstream_tls_context(route);
  return policy;
}

}  // namespace perimeter::mcpguard
