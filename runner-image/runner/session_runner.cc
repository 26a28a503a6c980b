#include "runner/session_runner.h"

#include <algorithm>
#include <cmath>

#include "agentapi/api_error.h"
#include "core/backoff.h"

namespace perimeter::runner {

using nlohmann::json;

namespace {

std::string string_field(const json& object, const char* name) {
  if (!object.is_object()) return "";
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string stop_reason_type(const agentapi::SessionEvent& event) {
  auto it = event.raw.find("stop_reason");
  return it != event.raw.end() ? string_field(*it, "type") : "";
}

const nlohmann::json& input_of(const agentapi::SessionEvent& event) {
  static const nlohmann::json kNull;
  const auto input = event.raw.find("input");
  return input != event.raw.end() ? *input : kNull;
}

bool is_tool_call(const std::string& type) {
  return type == "agent.tool_use" || type == "agent.custom_tool_use";
}

std::string describe(const std::exception& error) {
  if (const auto* api = dynamic_cast<const agentapi::ApiError*>(&error)) {
    return std::string(api->what()) + " (status " + std::to_string(api->status()) + ")";
  }
  return error.what();
}

}  // namespace

const char* to_string(SessionEnd end) {
  switch (end) {
    case SessionEnd::kTerminated:
      return "terminated";
    case SessionEnd::kIdle:
      return "idle";
    case SessionEnd::kStopped:
      return "stopped";
    case SessionEnd::kStreamRejected:
      return "stream_rejected";
  }
  return "unknown";
}

SessionRunner::SessionRunner(agentapi::AgentApi& api, std::string session_id,
                             tools::ToolExecutor& tools, StopSource& stop, const Clock& clock,
                             StoppableSleeper& sleeper, RandomSource& random, Logger logger,
                             RunnerMetrics* metrics, SessionRunnerOptions options)
    : api_(api),
      session_id_(std::move(session_id)),
      tools_(tools),
      stop_(stop),
      clock_(clock),
      sleeper_(sleeper),
      random_(random),
      logger_(std::move(logger)),
      metrics_(metrics),
      options_(options),
      idle_(clock, options.max_idle),
      send_window_ms_(options.send_retry_window.count()) {}

bool SessionRunner::check_idle() {
  if (!idle_.expired()) return false;
  if (!idle_expired_.exchange(true)) {
    logger_.info("session idle after its turn ended; stopping",
                 {{"session_id", session_id_}, {"max_idle_ms", options_.max_idle.count()}});
  }
  stop_.request();
  return true;
}

std::chrono::milliseconds SessionRunner::jittered(std::chrono::milliseconds start,
                                                  std::chrono::milliseconds cap, int attempt) {
  // The SDK's applyJitter: trim up to 25% off, so runners that failed together spread out.
  const auto base = Backoff::base_delay({start, cap, 2.0, 0.0}, attempt);
  const double trimmed = static_cast<double>(base.count()) * (1.0 - random_.uniform01() * 0.25);
  return std::chrono::milliseconds(static_cast<long long>(std::llround(trimmed)));
}

SessionEnd SessionRunner::run() {
  logger_.info("session tool runner starting", {{"session_id", session_id_}});
  int attempt = 0;
  auto finished = [this]() -> std::optional<SessionEnd> {
    if (terminated_.load()) return SessionEnd::kTerminated;
    if (idle_expired_.load()) return SessionEnd::kIdle;
    if (stop_.requested()) return SessionEnd::kStopped;
    return std::nullopt;
  };
  while (!stop_.requested()) {
    try {
      // History first, then the stream from the last listed event: what happens in between is
      // delivered by the stream, and `seen`/`answered` drop what shows up in both.
      std::string resume_after;
      reconcile(&resume_after);
      if (auto end = finished()) return *end;
      api_.stream_events(
          session_id_, resume_after,
          [this, &attempt](const agentapi::SessionEvent& event) {
            attempt = 0;
            if (handle_stream_event(event)) return false;
            return !check_idle() && !stop_.requested();
          },
          stop_.flag());
      if (auto end = finished()) return *end;
      logger_.warn("stream ended, reconnecting", {{"session_id", session_id_}});
    } catch (const agentapi::ApiError& error) {
      if (auto end = finished()) return *end;
      if (error.fatal()) {
        logger_.error(
            "permanent stream failure, shutting down",
            {{"session_id", session_id_}, {"status", error.status()}, {"error", error.raw_body()}});
        stop_.request();
        return SessionEnd::kStreamRejected;
      }
      logger_.warn("stream disconnected, reconnecting",
                   {{"session_id", session_id_}, {"error", describe(error)}});
    } catch (const std::exception& error) {
      if (auto end = finished()) return *end;
      logger_.warn("stream disconnected, reconnecting",
                   {{"session_id", session_id_}, {"error", describe(error)}});
    }
    if (metrics_) metrics_->stream_reconnect();
    const auto delay = std::min(
        Backoff::base_delay({options_.stream_backoff_start, options_.stream_backoff_cap, 2.0, 0.0},
                            attempt),
        options_.stream_backoff_cap);
    ++attempt;
    logger_.info("stream reconnect backoff",
                 {{"session_id", session_id_}, {"backoff_ms", delay.count()}});
    sleeper_.sleep_for(delay, stop_);
  }
  return finished().value_or(SessionEnd::kStopped);
}

void SessionRunner::reconcile(std::string* resume_after) {
  std::vector<agentapi::SessionEvent> pending;
  bool last_ended_turn = false;
  std::string last_id;
  try {
    std::string page;
    do {
      agentapi::EventPage listed = api_.list_events(session_id_, options_.list_page_size, page);
      for (const agentapi::SessionEvent& event : listed.data) {
        ingest_history(event, &pending);
        if (!is_idle_neutral(event.type))
          last_ended_turn = ends_turn(event.type, stop_reason_type(event));
        if (!event.id.empty()) last_id = event.id;
      }
      page = listed.next_page.value_or("");
    } while (!page.empty() && !stop_.requested());
  } catch (const std::exception& error) {
    if (stop_.requested()) return;
    logger_.warn("reconcile list failed",
                 {{"session_id", session_id_}, {"error", describe(error)}});
    // Undo the speculative `seen` entries so the live stream (which then replays everything) or
    // the next pass can pick them up.
    for (const auto& event : pending) seen_.erase(event.id);
    idle_.note_history_read(false);
    release_terminated_holds();
    resume_after->clear();
    return;
  }
  *resume_after = last_id;
  idle_.note_history_read(true);
  release_terminated_holds();
  std::vector<agentapi::SessionEvent> unanswered;
  for (auto& event : pending) {
    if (!answered_.contains(event.id)) unanswered.push_back(event);
  }
  // Tools run inline below: a countdown left armed from before the reconnect must not fire.
  idle_.disarm();
  for (const auto& event : unanswered) {
    if (stop_.requested()) return;
    route_tool_event(event);
  }
  // A held call whose tool_use fell outside the listed window: apply its verdict here.
  std::vector<agentapi::SessionEvent> held;
  for (const auto& [id, event] : awaiting_) held.push_back(event);
  for (const auto& event : held) {
    auto verdict = verdicts_.find(event.id);
    if (verdict != verdicts_.end()) apply_verdict(event, verdict->second);
  }
  const bool outstanding = std::any_of(unanswered.begin(), unanswered.end(), [this](const auto& e) {
    return !answered_.contains(e.id) && !in_terminated_thread(e) && !awaiting_.contains(e.id);
  });
  if (last_ended_turn && !outstanding) {
    idle_.arm();
  } else {
    idle_.disarm();
  }
}

void SessionRunner::ingest_history(const agentapi::SessionEvent& event,
                                   std::vector<agentapi::SessionEvent>* pending) {
  const json& raw = event.raw;
  if (is_tool_call(event.type)) {
    // Seen, so a replay on the stream is not run twice; whether it still needs running is decided
    // by `answered`, so a call whose result post failed is retried on the next pass.
    seen_.insert(event.id);
    if (!answered_.contains(event.id)) pending->push_back(event);
  } else if (event.type == "user.tool_result") {
    answered_.insert(string_field(raw, "tool_use_id"));
  } else if (event.type == "user.custom_tool_result") {
    answered_.insert(string_field(raw, "custom_tool_use_id"));
  } else if (event.type == "user.tool_confirmation") {
    const std::string id = string_field(raw, "tool_use_id");
    if (!answered_.contains(id)) verdicts_[id] = string_field(raw, "result");
  } else if (event.type == "session.thread_status_terminated") {
    terminated_threads_.insert(string_field(raw, "session_thread_id"));
  } else if (event.type == "session.status_terminated" || event.type == "session.deleted") {
    // The stream resumes after the history, so it would never deliver this again; the SDK sees
    // it on its stream, which replays from the start.
    logger_.info("session terminated", {{"session_id", session_id_}});
    terminated_.store(true);
    stop_.request();
  }
}

bool SessionRunner::handle_stream_event(const agentapi::SessionEvent& event) {
  const json& raw = event.raw;
  idle_.note_event(event.type, stop_reason_type(event));
  if (is_tool_call(event.type)) {
    if (!seen_.contains(event.id)) {
      seen_.insert(event.id);
      route_tool_event(event);
    }
  } else if (event.type == "user.tool_confirmation") {
    note_confirmation(string_field(raw, "tool_use_id"), string_field(raw, "result"));
  } else if (event.type == "user.tool_result") {
    answered_.insert(string_field(raw, "tool_use_id"));
  } else if (event.type == "user.custom_tool_result") {
    answered_.insert(string_field(raw, "custom_tool_use_id"));
  } else if (event.type == "session.thread_status_terminated") {
    terminated_threads_.insert(string_field(raw, "session_thread_id"));
    release_terminated_holds();
  } else if (event.type == "session.status_terminated" || event.type == "session.deleted") {
    logger_.info("session terminated", {{"session_id", session_id_}});
    terminated_.store(true);
    stop_.request();
    return true;
  }
  return false;
}

bool SessionRunner::in_terminated_thread(const agentapi::SessionEvent& event) const {
  const std::string thread = string_field(event.raw, "session_thread_id");
  return !thread.empty() && terminated_threads_.contains(thread);
}

void SessionRunner::release_terminated_holds() {
  for (auto it = awaiting_.begin(); it != awaiting_.end();) {
    if (!in_terminated_thread(it->second)) {
      ++it;
      continue;
    }
    logger_.info("session thread terminated; not executing",
                 {{"session_id", session_id_}, {"tool_use_id", it->first}});
    const std::string id = it->first;
    audit_not_run(it->second, AuditDecision::kAbandoned);
    it = awaiting_.erase(it);
    idle_.abandon(id);
  }
}

void SessionRunner::route_tool_event(const agentapi::SessionEvent& event) {
  if (in_terminated_thread(event)) {
    logger_.debug("session thread terminated; not executing",
                  {{"session_id", session_id_}, {"tool_use_id", event.id}});
    audit_not_run(event, AuditDecision::kAbandoned);
    return;
  }
  const auto permission_field = event.raw.find("evaluated_permission");
  const bool has_permission = permission_field != event.raw.end() && !permission_field->is_null();
  const std::string permission = has_permission && permission_field->is_string()
                                     ? permission_field->get<std::string>()
                                     : (has_permission ? "<not a string>" : "");
  // A server-side deny overrides any recorded verdict.
  std::optional<std::string> verdict;
  if (permission == "deny") {
    verdict = "deny";
  } else if (auto it = verdicts_.find(event.id); it != verdicts_.end()) {
    verdict = it->second;
  }
  if (!verdict) {
    if (!has_permission || permission == "allow") {
      execute(event, false);
    } else if (!awaiting_.contains(event.id)) {
      // ask, or a permission this version does not know: fail closed and wait for the user.
      logger_.info("tool call awaiting confirmation; holding",
                   {{"session_id", session_id_},
                    {"tool", string_field(event.raw, "name")},
                    {"tool_use_id", event.id}});
      awaiting_.emplace(event.id, event);
      idle_.block(event.id);
    }
    return;
  }
  apply_verdict(event, *verdict);
}

void SessionRunner::note_confirmation(const std::string& tool_use_id, const std::string& verdict) {
  verdicts_[tool_use_id] = verdict;
  auto held = awaiting_.find(tool_use_id);
  // Nothing held: a later route of that call resolves with the recorded verdict.
  if (held == awaiting_.end()) return;
  const agentapi::SessionEvent event = held->second;
  apply_verdict(event, verdict);
}

void SessionRunner::apply_verdict(const agentapi::SessionEvent& event, const std::string& verdict) {
  const bool was_held = awaiting_.erase(event.id) > 0;
  const std::string name = string_field(event.raw, "name");
  if (verdict == "allow") {
    logger_.info("tool call confirmed",
                 {{"session_id", session_id_}, {"tool", name}, {"tool_use_id", event.id}});
    if (!was_held) idle_.block(event.id);
    try {
      execute(event, true);
    } catch (...) {
      idle_.unblock(event.id);
      throw;
    }
    idle_.unblock(event.id);
    return;
  }
  // deny, or any verdict but an explicit allow: never run; the denial resolves it server-side.
  if (was_held) idle_.unblock(event.id);
  answered_.insert(event.id);
  // A server-side deny is the policy's; any other refusal is the user's confirmation.
  const bool by_policy = string_field(event.raw, "evaluated_permission") == "deny";
  audit_not_run(event, AuditDecision::kDenied, by_policy ? "policy" : "user");
  if (metrics_) metrics_->tool_call("denied");
  logger_.info("tool call denied; not executing",
               {{"session_id", session_id_}, {"tool", name}, {"tool_use_id", event.id}});
  if (options_.after_call) options_.after_call();
}

void SessionRunner::execute(const agentapi::SessionEvent& event, bool confirmed) {
  if (answered_.contains(event.id)) return;
  const std::string name = string_field(event.raw, "name");
  if (!tools_.owns(name)) {
    // Another client of this session owns it (typically the app's custom tools): post nothing and
    // leave the id pending for its owner.
    logger_.info("tool not owned by this runner; leaving the tool_use_id pending for its owner",
                 {{"session_id", session_id_}, {"tool", name}, {"tool_use_id", event.id}});
    if (confirmed) idle_.disarm();
    if (metrics_) metrics_->tool_call("unowned");
    audit_not_run(event, AuditDecision::kNotOwned);
    if (options_.after_call) options_.after_call();
    return;
  }
  logger_.info("executing tool",
               {{"session_id", session_id_}, {"tool", name}, {"tool_use_id", event.id}});
  const json& input = input_of(event);
  const auto started = clock_.now();
  const tools::ToolResult outcome = tools_.execute(name, input);
  if (options_.audit != nullptr) {
    // Before the send: the trail is complete even when the result never reaches the API.
    AuditRecord record;
    record.tool_use_id = event.id;
    record.tool = name;
    record.event_type = event.type;
    record.input = input;
    record.decision = confirmed ? AuditDecision::kAskedAndConfirmed : AuditDecision::kAllowed;
    record.outcome = outcome.timed_out ? "timeout" : outcome.is_error ? "error" : "ok";
    record.exit_code = outcome.exit_code;
    record.duration = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - started);
    for (const auto& block : outcome.content) record.output += block.text;
    options_.audit->record(record);
  }
  json result = outcome.to_json();
  if (event.type == "agent.custom_tool_use") {
    result["type"] = "user.custom_tool_result";
    result["custom_tool_use_id"] = event.id;
  } else {
    result["type"] = "user.tool_result";
    result["tool_use_id"] = event.id;
  }
  const bool posted = send_result(result, event.id);
  if (metrics_) metrics_->tool_call(!posted ? "unposted" : outcome.is_error ? "error" : "ok");
  if (options_.after_call) options_.after_call();
}

void SessionRunner::audit_not_run(const agentapi::SessionEvent& event, AuditDecision decision,
                                  const std::string& denied_by) {
  if (options_.audit == nullptr || !audited_not_run_.insert(event.id).second) return;
  AuditRecord record;
  record.tool_use_id = event.id;
  record.tool = string_field(event.raw, "name");
  record.event_type = event.type;
  record.input = input_of(event);
  record.decision = decision;
  record.denied_by = denied_by;
  record.outcome = decision == AuditDecision::kDenied ? "denied" : "not_executed";
  options_.audit->record(record);
}

bool SessionRunner::send_result(const json& result, const std::string& tool_use_id) {
  const auto start = clock_.now();
  int attempt = 0;
  std::string last_error;
  while (true) {
    ++attempt;
    if (stop_.requested()) return false;
    try {
      api_.send_events(session_id_, json::array({result}));
      answered_.insert(tool_use_id);
      return true;
    } catch (const std::exception& error) {
      last_error = describe(error);
      const auto* api_error = dynamic_cast<const agentapi::ApiError*>(&error);
      // Only a permanent 4xx short-circuits; 408/409/429 get the remaining window.
      if (api_error != nullptr && api_error->fatal()) break;
      const auto elapsed =
          std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - start);
      const auto remaining = std::chrono::milliseconds(send_window_ms_.load()) - elapsed;
      if (remaining.count() <= 0) break;
      const auto wait = std::min(
          jittered(options_.send_backoff_start, options_.send_backoff_cap, attempt - 1), remaining);
      if (metrics_) metrics_->result_send_retry();
      logger_.warn("tool result send failed; retrying", {{"tool_use_id", tool_use_id},
                                                         {"attempt", attempt},
                                                         {"backoff_ms", wait.count()},
                                                         {"error", last_error}});
      sleeper_.sleep_for(wait, stop_);
    }
  }
  logger_.error("failed to send tool result",
                {{"tool_use_id", tool_use_id}, {"attempts", attempt}, {"error", last_error}});
  return false;
}

}  // namespace perimeter::runner
