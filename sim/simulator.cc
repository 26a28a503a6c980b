#include "sim/simulator.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <functional>
#include <set>

#include "core/time_format.h"
#include "sim/skill_archive.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

constexpr std::string_view kNoHeartbeat = "NO_HEARTBEAT";
constexpr std::string_view kInterruptedText = "interrupted by the user";

json optional_time(const std::optional<std::chrono::system_clock::time_point>& t,
                   const std::function<std::string(std::chrono::system_clock::time_point)>& fmt) {
  return t ? json(fmt(*t)) : json(nullptr);
}

std::string text_of(const json& content) {
  std::string text;
  if (!content.is_array()) return text;
  for (const auto& block : content) {
    if (block.is_object() && block.value("type", "") == "text" && block.contains("text") &&
        block["text"].is_string()) {
      text += block["text"].get<std::string>();
    }
  }
  return text;
}

ApiReply not_found(std::string_view what, const std::string& id) {
  return error_reply(404, "not_found_error", std::string(what) + " `" + id + "` was not found");
}

ApiReply unauthorized(std::string_view why) {
  return error_reply(401, "authentication_error", why);
}

}  // namespace

Simulator::Simulator(SimulatorOptions options, Clock& clock, RandomSource& random)
    : options_(std::move(options)),
      clock_(clock),
      random_(random),
      memory_stores_([this](const char* prefix) { return new_id(prefix); },
                     [this] { return timestamp(clock_.wall_now()); }) {}

std::string Simulator::new_id(const char* prefix) {
  // A counter keeps ids unique even under a fake random source; the random part keeps them
  // unguessable across runs, as tokens should be.
  const auto high = static_cast<std::uint64_t>(random_.uniform01() * 4294967296.0);
  const auto low = static_cast<std::uint64_t>(random_.uniform01() * 4294967296.0);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%s%06llu%08llx%08llx", prefix,
                static_cast<unsigned long long>(++id_counter_),
                static_cast<unsigned long long>(high), static_cast<unsigned long long>(low));
  return buffer;
}

std::string Simulator::timestamp(std::chrono::system_clock::time_point t) const {
  return format_rfc3339_micros(t);
}

std::string Simulator::unique_heartbeat_stamp(const WorkItem& item) {
  // The worker echoes this value; two beats in the same microsecond must still differ.
  auto now = clock_.wall_now();
  std::string stamp = timestamp(now);
  while (item.last_heartbeat && *item.last_heartbeat >= stamp) {
    now += std::chrono::microseconds(1);
    stamp = timestamp(now);
  }
  return stamp;
}

std::string Simulator::encode_secret(const WorkItem& item, bool undecodable) const {
  if (undecodable) return "%%not-base64%%";
  json payload = {{"sessions_token", item.sessions_token}};
  if (!options_.api_base_url.empty()) payload["api_base_url"] = options_.api_base_url;
  return base64url_encode(payload.dump());
}

json Simulator::render_work(const WorkItem& item) const {
  auto fmt = [this](std::chrono::system_clock::time_point t) { return timestamp(t); };
  return {{"type", "work"},
          {"id", item.id},
          {"environment_id", item.environment_id},
          {"data", {{"type", item.data_type}, {"id", item.data_id}}},
          {"state", item.state},
          {"metadata", item.metadata},
          {"secret", nullptr},
          {"created_at", timestamp(item.created_at)},
          {"acknowledged_at", optional_time(item.acknowledged_at, fmt)},
          {"started_at", optional_time(item.started_at, fmt)},
          {"latest_heartbeat_at", optional_time(item.latest_heartbeat_at, fmt)},
          {"stop_requested_at", optional_time(item.stop_requested_at, fmt)},
          {"stopped_at", optional_time(item.stopped_at, fmt)}};
}

void Simulator::enter_queue(WorkItem& item) {
  item.queue_position = ++queue_counter_;
  environments_.at(item.environment_id).queued.emplace(item.queue_position, item.id);
}

void Simulator::set_state(WorkItem& item, const std::string& state) {
  if (item.state == state) return;
  if (item.state == "queued") {
    environments_.at(item.environment_id).queued.erase({item.queue_position, item.id});
  }
  if (state == "queued") enter_queue(item);
  item.transitions.push_back(item.state + "->" + state);
  item.state = state;
  const auto now = clock_.wall_now();
  if (state == "stopped") item.stopped_at = now;
  if (state == "stopping") item.stop_requested_at = now;
  bump();
  if (state == "stopped" && item.data_type == "session") on_item_stopped(item);
}

void Simulator::queue_session_item(Session& session, const std::string& because) {
  WorkItem item;
  item.id = new_id("work_");
  item.environment_id = session.environment_id;
  item.data_type = "session";
  item.data_id = session.id;
  item.sessions_token = new_id("sst_");
  item.created_at = clock_.wall_now();
  item.queued_because = because;
  token_to_work_[item.sessions_token] = item.id;
  environments_.at(session.environment_id).work_order.push_back(item.id);
  session.work_ids.push_back(item.id);
  WorkItem& stored = work_[item.id];
  stored = std::move(item);
  enter_queue(stored);
  // The admin enqueue wakes a poller itself; items queued by the session's own course do not
  // come from a request about that environment.
  if (because != "session_created") wakes_.environments.insert(session.environment_id);
  bump();
}

Simulator::WorkItem* Simulator::live_item(const Session& session) {
  for (auto id = session.work_ids.rbegin(); id != session.work_ids.rend(); ++id) {
    WorkItem& item = work_.at(*id);
    if (item.state != "stopped") return &item;
  }
  return nullptr;
}

void Simulator::on_item_stopped(WorkItem& item) {
  auto it = sessions_.find(item.data_id);
  if (it == sessions_.end()) return;
  Session& session = it->second;
  if (live_item(session) != nullptr) {
    item.ended = "released";  // another item holds the session already
    return;
  }
  if (turn_open(session)) {
    // Nobody is left to answer the turn's calls: the session waits for the user (an interrupt).
    item.ended = "failed";
    session.failed_at = clock_.now();
  } else {
    item.ended = "released";
    if (session.phase == AgentPhase::kTurnEnded) session.released_at = clock_.now();
  }
  run_scripted_user(session);
}

Simulator::Wakes Simulator::take_wakes() {
  std::lock_guard lock(mutex_);
  Wakes out;
  std::swap(out, wakes_);
  return out;
}

// ---------------------------------------------------------------- admin

json Simulator::create_environment(const std::string& name, const std::string& key) {
  std::lock_guard lock(mutex_);
  Environment env;
  env.id = new_id("env_");
  env.name = name.empty() ? env.id : name;
  env.key = key.empty() ? new_id("envkey_") : key;
  environments_[env.id] = env;
  return {{"type", "environment"}, {"id", env.id}, {"name", env.name}, {"key", env.key}};
}

ApiReply Simulator::enqueue_session(const std::string& environment_id, Scenario scenario) {
  std::lock_guard lock(mutex_);
  auto env = environments_.find(environment_id);
  if (env == environments_.end()) return not_found("environment", environment_id);
  const auto now = clock_.wall_now();
  Session session;
  session.id = new_id("sesn_");
  session.environment_id = environment_id;
  session.created_at = session.updated_at = now;
  session.records.resize(scenario.steps.size());
  for (const ScenarioSkill& declared : scenario.skills) {
    Skill skill;
    skill.id = new_id("skill_");
    skill.version_id = new_id("skillver_");
    skill.name = declared.name;
    skill.environment_id = environment_id;
    skill.created_at = now;
    std::vector<ArchiveFile> files;
    for (const auto& file : declared.files)
      files.push_back({file.path, file.content, file.executable});
    skill.archive = make_tar_archive(declared.name, files);
    session.skill_ids.push_back(skill.id);
    skills_[skill.id] = std::move(skill);
  }
  if (scenario.turns.empty()) {
    // Built in code rather than parsed: one turn of every step.
    ScenarioTurn turn;
    turn.prompt = "Run the scripted scenario.";
    turn.final_message = "Scenario complete.";
    turn.step_count = scenario.steps.size();
    scenario.turns.push_back(std::move(turn));
  }
  session.scenario = std::move(scenario);
  const std::string session_id = session.id;
  Session& stored = sessions_[session_id];
  stored = std::move(session);
  // A fresh store per enqueue, so two runs of one scenario never share memories.
  for (const ScenarioMemoryStore& declared : stored.scenario.memory_stores) {
    std::vector<std::pair<std::string, std::string>> memories;
    for (const auto& memory : declared.memories) memories.emplace_back(memory.path, memory.content);
    stored.memory_stores.push_back(
        {memory_stores_.create_store(declared.name, environment_id, memories), &declared});
  }
  queue_session_item(stored, "session_created");
  stored.work_id = stored.work_ids.front();
  // The user's prompt starts the session, as it does on the hosted side.
  advance_agent(stored);
  run_scripted_user(stored);
  bump();
  return json_reply(201, {{"work_id", stored.work_id}, {"session_id", session_id}});
}

ApiReply Simulator::enqueue_healthcheck(const std::string& environment_id) {
  std::lock_guard lock(mutex_);
  auto env = environments_.find(environment_id);
  if (env == environments_.end()) return not_found("environment", environment_id);
  WorkItem item;
  item.id = new_id("work_");
  item.environment_id = environment_id;
  item.data_type = "healthcheck";
  item.data_id = new_id("hc_");
  item.sessions_token = new_id("sst_");
  item.created_at = clock_.wall_now();
  token_to_work_[item.sessions_token] = item.id;
  env->second.work_order.push_back(item.id);
  json reply = {{"work_id", item.id}};
  WorkItem& stored = work_[item.id];
  stored = std::move(item);
  enter_queue(stored);
  bump();
  return json_reply(201, reply);
}

json Simulator::render_results(const Session& session) const {
  json steps = json::array();
  bool all_matched = true;
  for (std::size_t i = 0; i < session.scenario.steps.size(); ++i) {
    const ScenarioStep& step = session.scenario.steps[i];
    const StepRecord& record = session.records[i];
    json expected = json::object();
    if (step.expect.is_error) expected["is_error"] = *step.expect.is_error;
    if (step.expect.text) expected["text"] = *step.expect.text;
    if (step.expect.contains) expected["contains"] = *step.expect.contains;
    if (step.expect.no_result) expected["no_result"] = true;
    if (step.expect.interrupted) expected["interrupted"] = true;
    std::string mismatch;
    if (record.tool_use_id.empty()) {
      mismatch = "the agent has not reached this step";
    } else if (step.expect.interrupted) {
      if (record.result_received) {
        mismatch = "the call was answered, not interrupted";
      } else if (!record.interrupted) {
        mismatch = "the call has not been interrupted";
      }
    } else if (step.expect.no_result) {
      if (record.results_received > 0) mismatch = "a result arrived for a call that never runs";
    } else if (!record.result_received) {
      mismatch = record.interrupted ? "interrupted before a result arrived" : "no result received";
    } else if (record.results_received > 1) {
      mismatch = "the call was answered " + std::to_string(record.results_received) + " times";
    } else if (step.expect.is_error && *step.expect.is_error != record.is_error) {
      mismatch = "is_error is " + std::string(record.is_error ? "true" : "false");
    } else if (step.expect.text && *step.expect.text != record.text) {
      mismatch = "text differs";
    } else if (step.expect.contains &&
               record.text.find(*step.expect.contains) == std::string::npos) {
      mismatch = "text does not contain the expected substring";
    }
    all_matched = all_matched && mismatch.empty();
    json received = nullptr;
    if (record.result_received) {
      received = {
          {"is_error", record.is_error}, {"text", record.text}, {"content", record.content}};
    }
    std::size_t turn = 0;
    while (turn + 1 < session.scenario.turns.size() &&
           i >= session.scenario.turns[turn + 1].first_step) {
      ++turn;
    }
    steps.push_back({{"index", i},
                     {"turn", turn + 1},
                     {"tool", step.tool},
                     {"custom", step.custom},
                     {"tool_use_id", record.tool_use_id},
                     {"permission", to_string(step.permission)},
                     {"confirmation", step.permission == Permission::kAsk
                                          ? json(step.confirm_allow ? "allow" : "deny")
                                          : json(nullptr)},
                     {"expected", expected},
                     {"received", received},
                     {"interrupted", record.interrupted},
                     {"matched", mismatch.empty()},
                     {"mismatch", mismatch}});
  }
  const bool finished = session.phase == AgentPhase::kFinished;
  return {{"type", "session_results"},
          {"session_id", session.id},
          {"work_id", session.work_id},
          {"work_ids", session.work_ids},
          {"scenario", session.scenario.name},
          {"status", session.status},
          {"turn", session.turn + 1},
          {"turns", session.scenario.turns.size()},
          {"finished", finished},
          {"all_matched", finished && all_matched && session.unexpected.empty()},
          {"steps", steps},
          {"unexpected", session.unexpected}};
}

ApiReply Simulator::session_results(const std::string& session_id) const {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return not_found("session", session_id);
  return json_reply(200, render_results(it->second));
}

ApiReply Simulator::environment_results(const std::string& environment_id) const {
  std::lock_guard lock(mutex_);
  auto env = environments_.find(environment_id);
  if (env == environments_.end()) return not_found("environment", environment_id);
  json sessions = json::array();
  for (const auto& work_id : env->second.work_order) {
    const WorkItem& item = work_.at(work_id);
    if (item.data_type != "session") continue;
    sessions.push_back(render_results(sessions_.at(item.data_id)));
  }
  return json_reply(200, {{"type", "environment_results"}, {"data", sessions}});
}

ApiReply Simulator::work_admin_view(const std::string& work_id) const {
  std::lock_guard lock(mutex_);
  auto it = work_.find(work_id);
  if (it == work_.end()) return not_found("work", work_id);
  const WorkItem& item = it->second;
  json history = json::array();
  for (const auto& beat : item.lease_history) {
    history.push_back({{"expected", beat.expected},
                       {"returned", beat.returned.empty() ? json(nullptr) : json(beat.returned)},
                       {"status", beat.status},
                       {"state", beat.state}});
  }
  json view = render_work(item);
  view["lease_history"] = history;
  view["transitions"] = item.transitions;
  view["ttl_seconds"] = item.ttl.count();
  return json_reply(200, view);
}

json Simulator::render_session_admin(const Session& session) const {
  static constexpr const char* kPhases[] = {"not_started", "running", "awaiting_result",
                                            "turn_ended", "finished"};
  json items = json::array();
  json holder = nullptr;
  for (const auto& id : session.work_ids) {
    const WorkItem& item = work_.at(id);
    if (item.state != "stopped") holder = id;
    items.push_back({{"work_id", id},
                     {"state", item.state},
                     {"queued_because", item.queued_because},
                     {"ended", item.ended.empty() ? json(nullptr) : json(item.ended)},
                     {"created_at", timestamp(item.created_at)}});
  }
  const auto now = clock_.now();
  auto millis_until = [now](Clock::TimePoint at) {
    return std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(at - now).count());
  };
  json next_turn = nullptr;
  if (session.phase == AgentPhase::kTurnEnded) {
    const ScenarioTurn& next = session.scenario.turns[session.turn + 1];
    std::optional<Clock::TimePoint> from;
    if (next.after == TurnTrigger::kEndTurn) from = session.turn_ended_at;
    if (next.after == TurnTrigger::kReleased) from = session.released_at;
    next_turn = {{"turn", session.turn + 2},
                 {"after", to_string(next.after)},
                 {"delay_ms", next.delay.count()},
                 {"due_in_ms", from ? json(millis_until(*from + next.delay)) : json(nullptr)}};
  }
  json awaiting = nullptr;
  if (const ScenarioStep* step = awaited_step(session)) {
    awaiting = {{"index", session.step},
                {"tool", step->tool},
                {"tool_use_id", session.records[session.step].tool_use_id},
                {"stop_item", step->stop_item}};
  }
  // What each attached store holds now, and every change it saw.
  json stores = json::array();
  for (const auto& attached : session.memory_stores) {
    json view = memory_stores_.admin_view(attached.store_id);
    view["access"] = attached.declared->read_only ? "read_only" : "read_write";
    stores.push_back(std::move(view));
  }
  json interrupt = nullptr;
  if (session.failed_at && session.scenario.interrupt_after_failure && turn_open(session)) {
    interrupt = {{"due_in_ms",
                  millis_until(*session.failed_at + *session.scenario.interrupt_after_failure)}};
  }
  return {{"type", "session_admin"},
          {"session", render_session(session)},
          {"scenario", session.scenario.name},
          {"turn", session.turn + 1},
          {"turns", session.scenario.turns.size()},
          {"phase", kPhases[static_cast<int>(session.phase)]},
          {"awaiting", awaiting},
          {"holder", holder},
          {"failed", session.failed_at.has_value() && turn_open(session)},
          {"next_turn", next_turn},
          {"scripted_interrupt", interrupt},
          {"items", items},
          {"memory_stores", stores}};
}

ApiReply Simulator::session_admin_view(const std::string& session_id) const {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return not_found("session", session_id);
  return json_reply(200, render_session_admin(it->second));
}

ApiReply Simulator::send_next_turn(const std::string& session_id) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return not_found("session", session_id);
  Session& session = it->second;
  if (session.phase != AgentPhase::kTurnEnded) {
    return error_reply(409, "conflict_error",
                       "session `" + session_id + "` has no turn waiting for the user (" +
                           (session.status == "terminated" ? "terminated"
                            : turn_open(session)           ? "a turn is open"
                                                           : "every turn is done") +
                           ")");
  }
  start_next_turn(session);
  run_scripted_user(session);
  return json_reply(200, render_session_admin(session));
}

ApiReply Simulator::terminate_session(const std::string& session_id) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return not_found("session", session_id);
  Session& session = it->second;
  if (session.status == "terminated") {
    return error_reply(409, "conflict_error", "session `" + session_id + "` is terminated");
  }
  if (session.phase == AgentPhase::kAwaitResult && !session.records[session.step].result_received) {
    session.records[session.step].interrupted = true;
  }
  set_session_status(session, "terminated", nullptr);
  session.phase = AgentPhase::kFinished;
  run_scripted_user(session);  // forgets whatever the scripted user still had to do
  wakes_.sessions.insert(session_id);
  return json_reply(200, render_session(session));
}

// ---------------------------------------------------------------- auth

std::optional<ApiReply> Simulator::check_environment_key(const std::string& environment_id,
                                                         const std::string& token) const {
  auto env = environments_.find(environment_id);
  // An unknown environment and a wrong key look alike to the caller only when there is no key.
  if (token.empty()) return unauthorized("missing bearer credential");
  if (env == environments_.end()) return not_found("environment", environment_id);
  if (env->second.key != token) return unauthorized("invalid environment key");
  return std::nullopt;
}

std::optional<ApiReply> Simulator::check_work_access(const std::string& environment_id,
                                                     const std::string& work_id,
                                                     const std::string& token,
                                                     bool environment_key_only) const {
  if (token.empty()) return unauthorized("missing bearer credential");
  auto env = environments_.find(environment_id);
  if (env == environments_.end()) return not_found("environment", environment_id);
  const bool is_key = env->second.key == token;
  auto by_token = token_to_work_.find(token);
  const bool is_item_token =
      !environment_key_only && by_token != token_to_work_.end() && by_token->second == work_id;
  if (!is_key && !is_item_token) {
    return unauthorized("the credential is neither the environment key nor this item's token");
  }
  auto item = work_.find(work_id);
  if (item == work_.end() || item->second.environment_id != environment_id) {
    return not_found("work", work_id);
  }
  return std::nullopt;
}

std::optional<ApiReply> Simulator::authorize_session(const std::string& session_id,
                                                     const std::string& token) const {
  std::lock_guard lock(mutex_);
  if (token.empty()) return unauthorized("missing bearer credential");
  auto session = sessions_.find(session_id);
  auto by_token = token_to_work_.find(token);
  if (by_token != token_to_work_.end()) {
    const WorkItem& item = work_.at(by_token->second);
    if (session == sessions_.end()) return not_found("session", session_id);
    if (item.data_id != session_id) {
      return unauthorized("this sessions token belongs to another session");
    }
    return std::nullopt;
  }
  // The environment key is the fallback credential for workers without a per-item token.
  for (const auto& [id, env] : environments_) {
    if (env.key != token) continue;
    if (session == sessions_.end()) return not_found("session", session_id);
    if (session->second.environment_id != id) {
      return unauthorized("the environment key does not cover this session");
    }
    return std::nullopt;
  }
  return unauthorized("invalid sessions token");
}

// ---------------------------------------------------------------- leases

void Simulator::expire_lease_locked(WorkItem& item) {
  const bool leased =
      item.state == "starting" || item.state == "active" || item.state == "stopping";
  if (!leased || clock_.now() < item.lease_expires_at) return;
  if (item.state == "stopping") {
    set_state(item, "stopped");
    return;
  }
  // A lapsed lease puts the item back on the queue for another worker, without its old lease.
  item.transitions.push_back("lease_expired");
  set_state(item, "queued");
  item.last_heartbeat.reset();
  item.acknowledged_at.reset();
  item.claimed_at.reset();
  item.claimed_by.clear();
}

void Simulator::expire_leases_locked() {
  for (auto& [id, item] : work_) expire_lease_locked(item);
}

void Simulator::tick() {
  std::lock_guard lock(mutex_);
  expire_leases_locked();
  const std::vector<std::string> pending(scripted_pending_.begin(), scripted_pending_.end());
  for (const auto& id : pending) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) {
      scripted_pending_.erase(id);
      continue;
    }
    run_scripted_user(it->second);
  }
}

std::uint64_t Simulator::generation() const {
  std::lock_guard lock(mutex_);
  return generation_;
}

// ---------------------------------------------------------------- work API

ApiReply Simulator::poll(const std::string& environment_id, const std::string& token,
                         const std::string& worker_id,
                         std::optional<std::int64_t> reclaim_older_than_ms, bool undecodable_secret,
                         bool reissue_secret_on_reclaim) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_environment_key(environment_id, token)) return *denied;
  if (reclaim_older_than_ms && *reclaim_older_than_ms < 0) {
    return error_reply(400, "invalid_request_error",
                       "reclaim_older_than_ms must be a non-negative integer");
  }
  Environment& env = environments_.at(environment_id);
  const auto now = clock_.now();
  if (!worker_id.empty()) env.pollers_seen[worker_id] = now;
  const auto reclaim_after = reclaim_older_than_ms
                                 ? std::chrono::milliseconds(*reclaim_older_than_ms)
                                 : options_.default_reclaim_older_than;
  for (const auto& [position, work_id] : env.queued) {
    WorkItem& item = work_.at(work_id);
    if (item.claimed_at && now - *item.claimed_at < reclaim_after) continue;
    if (item.claimed_at) {
      item.transitions.push_back("reclaimed");
      if (reissue_secret_on_reclaim) {
        token_to_work_.erase(item.sessions_token);
        item.sessions_token = new_id("sst_");
        token_to_work_[item.sessions_token] = item.id;
      }
    }
    item.claimed_at = now;
    item.claimed_by = worker_id;
    json rendered = render_work(item);
    rendered["secret"] = encode_secret(item, undecodable_secret);
    bump();
    return json_reply(200, rendered);
  }
  return json_reply(200, nullptr);
}

ApiReply Simulator::ack(const std::string& environment_id, const std::string& work_id,
                        const std::string& token) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_work_access(environment_id, work_id, token, true)) return *denied;
  expire_lease_locked(work_.at(work_id));
  WorkItem& item = work_.at(work_id);
  if (item.state != "queued") {
    return error_reply(409, "conflict_error",
                       "work `" + work_id + "` is " + item.state + ", not queued");
  }
  if (!item.claimed_at) {
    return error_reply(409, "conflict_error", "work `" + work_id + "` has not been polled");
  }
  item.acknowledged_at = clock_.wall_now();
  set_state(item, "starting");
  // The lease starts at the ack: a worker that never heartbeats loses the item after one TTL.
  item.ttl = options_.default_lease_ttl;
  item.lease_expires_at = clock_.now() + item.ttl;
  return json_reply(200, render_work(item));
}

ApiReply Simulator::heartbeat(const std::string& environment_id, const std::string& work_id,
                              const std::string& token, const std::string& expected,
                              std::optional<std::int64_t> desired_ttl_seconds) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_work_access(environment_id, work_id, token, false)) return *denied;
  if (expected.empty()) {
    return error_reply(400, "invalid_request_error",
                       "expected_last_heartbeat is required (NO_HEARTBEAT on the first beat)");
  }
  if (desired_ttl_seconds && *desired_ttl_seconds <= 0) {
    return error_reply(400, "invalid_request_error", "desired_ttl_seconds must be positive");
  }
  expire_lease_locked(work_.at(work_id));
  WorkItem& item = work_.at(work_id);
  auto lease_state = [&item](bool extended) {
    return json{
        {"last_heartbeat", item.last_heartbeat ? json(*item.last_heartbeat) : json(nullptr)},
        {"lease_extended", extended},
        {"state", item.state},
        {"ttl_seconds", item.ttl.count()}};
  };
  LeaseRecord record{expected, "", 200, item.state};
  if (item.state == "queued") {
    record.status = 412;
    item.lease_history.push_back(record);
    return error_reply(
        412, "invalid_request_error", "work `" + work_id + "` is not leased (it is queued)",
        {{"error_code", "heartbeat_precondition_failed"}, {"current_state", lease_state(false)}});
  }
  const bool finishing = item.state == "stopping" || item.state == "stopped";
  // The server does not compare while the item is winding down: the worker only needs to learn
  // that it should stop.
  if (!finishing) {
    const bool first = !item.last_heartbeat.has_value();
    const bool matches = first ? expected == kNoHeartbeat : expected == *item.last_heartbeat;
    if (!matches) {
      record.status = 412;
      item.lease_history.push_back(record);
      return error_reply(
          412, "invalid_request_error",
          "expected_last_heartbeat does not match: another worker holds the lease",
          {{"error_code", "heartbeat_precondition_failed"}, {"current_state", lease_state(true)}});
    }
  }
  if (item.data_type == "session" && (item.state == "starting" || item.state == "active")) {
    // A scenario's stop_item: the platform stops the item serving the open call, and this beat
    // is how its worker learns it.
    auto session = sessions_.find(item.data_id);
    const ScenarioStep* awaited =
        session == sessions_.end() ? nullptr : awaited_step(session->second);
    if (awaited != nullptr && awaited->stop_item) {
      item.transitions.push_back("stopped_by_scenario");
      set_state(item, "stopping");
    }
  }
  if (desired_ttl_seconds) {
    const auto clamped = std::clamp<std::int64_t>(
        *desired_ttl_seconds, options_.min_lease_ttl.count(), options_.max_lease_ttl.count());
    item.ttl = std::chrono::seconds(clamped);
  } else if (item.ttl.count() == 0) {
    item.ttl = options_.default_lease_ttl;
  }
  bool extended = false;
  if (item.state != "stopped") {
    item.last_heartbeat = unique_heartbeat_stamp(item);
    item.latest_heartbeat_at = clock_.wall_now();
    item.lease_expires_at = clock_.now() + item.ttl;
    extended = item.state != "stopping";
    if (item.state == "starting") {
      item.started_at = clock_.wall_now();
      set_state(item, "active");
    }
  }
  record.returned = item.last_heartbeat.value_or("");
  record.state = item.state;
  item.lease_history.push_back(record);
  return json_reply(
      200, {{"type", "work_heartbeat"},
            {"last_heartbeat", item.last_heartbeat ? json(*item.last_heartbeat) : json(nullptr)},
            {"lease_extended", extended},
            {"state", item.state},
            {"ttl_seconds", item.ttl.count()}});
}

bool Simulator::steal_lease(const std::string& work_id) {
  std::lock_guard lock(mutex_);
  auto it = work_.find(work_id);
  if (it == work_.end() || it->second.state != "active") return false;
  WorkItem& item = it->second;
  item.last_heartbeat = unique_heartbeat_stamp(item);
  item.transitions.push_back("lease_stolen");
  return true;
}

ApiReply Simulator::stop(const std::string& environment_id, const std::string& work_id,
                         const std::string& token, bool force) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_work_access(environment_id, work_id, token, false)) return *denied;
  expire_lease_locked(work_.at(work_id));
  WorkItem& item = work_.at(work_id);
  if (item.state == "stopped") {
    return error_reply(409, "conflict_error", "work `" + work_id + "` is already stopped");
  }
  if (!item.stop_requested_at) item.stop_requested_at = clock_.wall_now();
  // Nobody holds an unacknowledged item, so there is no worker to wind it down gracefully.
  if (force || item.state == "queued") {
    set_state(item, "stopped");
  } else {
    set_state(item, "stopping");
  }
  return json_reply(200, render_work(item));
}

ApiReply Simulator::retrieve_work(const std::string& environment_id, const std::string& work_id,
                                  const std::string& token) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_work_access(environment_id, work_id, token, false)) return *denied;
  expire_lease_locked(work_.at(work_id));
  return json_reply(200, render_work(work_.at(work_id)));
}

ApiReply Simulator::update_work_metadata(const std::string& environment_id,
                                         const std::string& work_id, const std::string& token,
                                         const json& metadata) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_work_access(environment_id, work_id, token, false)) return *denied;
  if (!metadata.is_object()) {
    return error_reply(400, "invalid_request_error", "metadata must be an object");
  }
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string() && !value.is_null()) {
      return error_reply(400, "invalid_request_error",
                         "metadata." + key + " must be a string, or null to delete it");
    }
  }
  WorkItem& item = work_.at(work_id);
  for (const auto& [key, value] : metadata.items()) {
    if (value.is_null()) {
      item.metadata.erase(key);
    } else {
      item.metadata[key] = value;
    }
  }
  bump();
  return json_reply(200, render_work(item));
}

ApiReply Simulator::list_work(const std::string& environment_id, const std::string& token,
                              int limit, const std::string& page) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_environment_key(environment_id, token)) return *denied;
  if (limit <= 0) limit = options_.default_page_size;
  if (limit > options_.max_page_size) {
    return error_reply(400, "invalid_request_error",
                       "limit must be at most " + std::to_string(options_.max_page_size));
  }
  expire_leases_locked();
  const auto& order = environments_.at(environment_id).work_order;
  std::size_t start = 0;
  if (!page.empty()) {
    auto it = std::find(order.begin(), order.end(), page);
    if (it == order.end()) return error_reply(400, "invalid_request_error", "unknown page cursor");
    start = static_cast<std::size_t>(it - order.begin());
  }
  json data = json::array();
  std::size_t i = start;
  for (; i < order.size() && data.size() < static_cast<std::size_t>(limit); ++i) {
    data.push_back(render_work(work_.at(order[i])));
  }
  return json_reply(
      200, {{"data", data}, {"next_page", i < order.size() ? json(order[i]) : json(nullptr)}});
}

ApiReply Simulator::stats(const std::string& environment_id, const std::string& token) {
  std::lock_guard lock(mutex_);
  if (auto denied = check_environment_key(environment_id, token)) return *denied;
  expire_leases_locked();
  Environment& env = environments_.at(environment_id);
  const auto now = clock_.now();
  std::int64_t depth = 0;
  std::int64_t pending = 0;
  std::optional<std::chrono::system_clock::time_point> oldest;
  for (const auto& [position, work_id] : env.queued) {
    const WorkItem& item = work_.at(work_id);
    ++depth;
    if (item.claimed_at) ++pending;
    if (!oldest || item.created_at < *oldest) oldest = item.created_at;
  }
  std::int64_t workers = 0;
  for (auto it = env.pollers_seen.begin(); it != env.pollers_seen.end();) {
    if (now - it->second > options_.workers_polling_window) {
      it = env.pollers_seen.erase(it);
    } else {
      ++workers;
      ++it;
    }
  }
  return json_reply(200, {{"type", "work_queue_stats"},
                          {"depth", depth},
                          {"pending", pending},
                          {"oldest_queued_at", oldest ? json(timestamp(*oldest)) : json(nullptr)},
                          {"workers_polling", workers}});
}

// ---------------------------------------------------------------- sessions

json Simulator::render_session(const Session& session) const {
  json skills = json::array();
  for (const auto& id : session.skill_ids) {
    skills.push_back({{"type", "custom"}, {"skill_id", id}, {"version", "latest"}});
  }
  json resources = json::array();
  for (const auto& attached : session.memory_stores) {
    const ScenarioMemoryStore& declared = *attached.declared;
    resources.push_back(
        {{"type", "memory_store"},
         {"memory_store_id", attached.store_id},
         {"name", declared.name},
         {"description", declared.description},
         {"instructions", declared.instructions ? json(*declared.instructions) : json(nullptr)},
         {"mount_path", declared.mount_path ? json(*declared.mount_path) : json(nullptr)},
         {"access", declared.read_only ? "read_only" : "read_write"}});
  }
  return {{"type", "session"},
          {"id", session.id},
          {"status", session.status},
          {"environment_id", session.environment_id},
          {"title", session.scenario.name},
          {"created_at", timestamp(session.created_at)},
          {"updated_at", timestamp(session.updated_at)},
          {"archived_at", nullptr},
          {"metadata", json::object()},
          {"resources", resources},
          {"vault_ids", json::array()},
          {"outcome_evaluations", json::array()},
          {"budget", nullptr},
          {"stats", json::object()},
          {"usage", json::object()},
          {"agent",
           {{"type", "agent"},
            {"id", "agent_simulated"},
            {"name", "scripted agent: " + session.scenario.name},
            {"skills", skills},
            {"tools", json::array({{{"type", "agent_toolset_20260401"}}})}}}};
}

ApiReply Simulator::retrieve_session(const std::string& session_id, const std::string& token) {
  if (auto denied = authorize_session(session_id, token)) return *denied;
  std::lock_guard lock(mutex_);
  return json_reply(200, render_session(sessions_.at(session_id)));
}

ApiReply Simulator::list_events(const std::string& session_id, const std::string& token, int limit,
                                const std::string& page) {
  if (auto denied = authorize_session(session_id, token)) return *denied;
  std::lock_guard lock(mutex_);
  if (limit <= 0) limit = options_.default_page_size;
  if (limit > options_.max_page_size) {
    return error_reply(400, "invalid_request_error",
                       "limit must be at most " + std::to_string(options_.max_page_size));
  }
  const Session& session = sessions_.at(session_id);
  std::size_t start = 0;
  if (!page.empty()) {
    auto it = session.event_index.find(page);
    if (it == session.event_index.end()) {
      return error_reply(400, "invalid_request_error", "unknown page cursor");
    }
    start = it->second;
  }
  json data = json::array();
  std::size_t i = start;
  for (; i < session.events.size() && data.size() < static_cast<std::size_t>(limit); ++i) {
    data.push_back(session.events[i]);
  }
  const json next = i < session.events.size() ? json(session.events[i]["id"]) : json(nullptr);
  return json_reply(200, {{"data", data}, {"next_page", next}});
}

std::vector<Simulator::StreamedEvent> Simulator::events_after(
    const std::string& session_id, const std::string& last_event_id) const {
  std::lock_guard lock(mutex_);
  std::vector<StreamedEvent> out;
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return out;
  const Session& session = it->second;
  std::size_t start = 0;
  if (!last_event_id.empty()) {
    auto index = session.event_index.find(last_event_id);
    if (index != session.event_index.end()) start = index->second + 1;
  }
  for (std::size_t i = start; i < session.events.size(); ++i) {
    const json& event = session.events[i];
    out.push_back({event["id"].get<std::string>(), event["type"].get<std::string>(), event.dump()});
  }
  return out;
}

int Simulator::note_stream_opened(const std::string& session_id) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? 0 : ++it->second.streams_opened;
}

bool Simulator::session_terminated(const std::string& session_id) const {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  return it == sessions_.end() || it->second.status == "terminated";
}

ApiReply Simulator::send_events(const std::string& session_id, const std::string& token,
                                const json& body) {
  if (auto denied = authorize_session(session_id, token)) return *denied;
  std::lock_guard lock(mutex_);
  Session& session = sessions_.at(session_id);
  if (!body.is_object() || !body.contains("events") || !body["events"].is_array() ||
      body["events"].empty()) {
    return error_reply(400, "invalid_request_error", "body must be {\"events\": [ ... ]}");
  }
  if (session.status == "terminated") {
    return error_reply(400, "invalid_request_error", "session `" + session_id + "` is terminated");
  }
  // Validate the whole batch before applying any of it.
  for (std::size_t i = 0; i < body["events"].size(); ++i) {
    const json& event = body["events"][i];
    const std::string where = "events[" + std::to_string(i) + "]";
    if (!event.is_object() || !event.contains("type") || !event["type"].is_string()) {
      return error_reply(400, "invalid_request_error", where + ".type must be a string");
    }
    const std::string type = event["type"];
    if (type == "user.tool_result" || type == "user.custom_tool_result") {
      const char* id_field = type == "user.tool_result" ? "tool_use_id" : "custom_tool_use_id";
      if (!event.contains(id_field) || !event[id_field].is_string()) {
        return error_reply(400, "invalid_request_error",
                           where + "." + id_field + " must be a string");
      }
      if (event.contains("content") && !event["content"].is_array()) {
        return error_reply(400, "invalid_request_error", where + ".content must be a list");
      }
      if (event.contains("is_error") && !event["is_error"].is_boolean()) {
        return error_reply(400, "invalid_request_error", where + ".is_error must be a boolean");
      }
    } else if (type != "user.message" && type != "user.interrupt" &&
               type != "user.tool_confirmation") {
      std::string message = where;
      message.append(".type `").append(type).append("` cannot be sent by a client");
      return error_reply(400, "invalid_request_error", message);
    }
  }
  json sent = json::array();
  for (const json& event : body["events"]) {
    const std::string type = event["type"];
    if (type == "user.tool_result" || type == "user.custom_tool_result") {
      ApiReply refused = accept_result(session, event, type == "user.custom_tool_result");
      if (refused.status != 200) return refused;
    } else {
      append_event(session, event);
    }
    sent.push_back(session.events.back());
    if (type == "user.interrupt") apply_interrupt(session);
  }
  advance_agent(session);
  run_scripted_user(session);
  return json_reply(200, {{"data", sent}});
}

// ---------------------------------------------------------------- skills

const Simulator::Skill* Simulator::find_skill_locked(const std::string& skill_id,
                                                     const std::string& version,
                                                     const std::string& token,
                                                     ApiReply* error) const {
  if (token.empty()) {
    *error = unauthorized("missing bearer credential");
    return nullptr;
  }
  auto it = skills_.find(skill_id);
  if (it == skills_.end()) {
    *error = not_found("skill", skill_id);
    return nullptr;
  }
  const Skill& skill = it->second;
  bool allowed = environments_.at(skill.environment_id).key == token;
  if (auto by_token = token_to_work_.find(token); by_token != token_to_work_.end()) {
    allowed = allowed || work_.at(by_token->second).environment_id == skill.environment_id;
  }
  if (!allowed) {
    *error = unauthorized("the credential does not cover this skill");
    return nullptr;
  }
  if (version != "latest" && version != skill.version_id) {
    *error = not_found("skill version", version);
    return nullptr;
  }
  return &skill;
}

ApiReply Simulator::retrieve_skill_version(const std::string& skill_id, const std::string& version,
                                           const std::string& token) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  const Skill* skill = find_skill_locked(skill_id, version, token, &error);
  if (skill == nullptr) return error;
  return json_reply(200, {{"type", "skill_version"},
                          {"id", skill->version_id},
                          {"skill_id", skill->id},
                          {"name", skill->name},
                          {"description", "scenario skill " + skill->name},
                          {"created_at", timestamp(skill->created_at)}});
}

ApiReply Simulator::skill_content(const std::string& skill_id, const std::string& version,
                                  const std::string& token) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  const Skill* skill = find_skill_locked(skill_id, version, token, &error);
  if (skill == nullptr) return error;
  ApiReply reply;
  reply.body = skill->archive;
  reply.content_type = "application/x-tar";
  return reply;
}

// ---------------------------------------------------------------- the scripted agent

void Simulator::append_event(Session& session, json event) {
  event["id"] = new_id("sevt_");
  event["processed_at"] = timestamp(clock_.wall_now());
  session.event_index[event["id"].get<std::string>()] = session.events.size();
  session.events.push_back(std::move(event));
  session.updated_at = clock_.wall_now();
  bump();
}

void Simulator::set_session_status(Session& session, const std::string& status, json stop_reason) {
  session.status = status;
  json event = {{"type", "session.status_" + status}};
  if (!stop_reason.is_null()) event["stop_reason"] = std::move(stop_reason);
  append_event(session, std::move(event));
}

ApiReply Simulator::accept_result(Session& session, const json& event, bool custom) {
  const std::string id = event[custom ? "custom_tool_use_id" : "tool_use_id"];
  for (std::size_t i = 0; i < session.records.size(); ++i) {
    StepRecord& record = session.records[i];
    if (record.tool_use_id != id) continue;
    const ScenarioStep& step = session.scenario.steps[i];
    ++record.results_received;
    if (step.custom != custom) {
      session.unexpected.push_back(
          {{"reason", "result type does not match the call"}, {"event", event}});
      return error_reply(400, "invalid_request_error",
                         "`" + id + "` is a " + (step.custom ? "custom " : "") +
                             "tool call; answer it with " +
                             (step.custom ? "user.custom_tool_result" : "user.tool_result"));
    }
    if (step.expect.no_result) {
      session.unexpected.push_back({{"reason", "result for a denied call"}, {"event", event}});
      return error_reply(400, "invalid_request_error",
                         "tool call `" + id + "` was denied and must not be answered");
    }
    if (record.interrupted) {
      session.unexpected.push_back(
          {{"reason", "result for an interrupted call"}, {"event", event}});
      return error_reply(400, "invalid_request_error",
                         "tool call `" + id + "` was interrupted and can no longer be answered");
    }
    if (record.result_received) {
      session.unexpected.push_back({{"reason", "duplicate result"}, {"event", event}});
      return error_reply(400, "invalid_request_error",
                         "tool call `" + id + "` has already been answered");
    }
    record.result_received = true;
    record.is_error = event.value("is_error", false);
    record.content = event.value("content", json::array());
    record.text = text_of(record.content);
    append_event(session, event);
    if (session.phase == AgentPhase::kAwaitResult && session.step == i) {
      ++session.step;
      session.phase = AgentPhase::kNextStep;
      set_session_status(session, "running", nullptr);
    }
    return json_reply(200, nullptr);
  }
  session.unexpected.push_back({{"reason", "unknown tool_use_id"}, {"event", event}});
  return error_reply(400, "invalid_request_error",
                     "`" + id + "` does not name a tool call of this session");
}

void Simulator::advance_agent(Session& session) {
  if (session.phase == AgentPhase::kNotStarted) {
    append_event(session,
                 {{"type", "user.message"},
                  {"content",
                   json::array({{{"type", "text"}, {"text", session.scenario.turns[0].prompt}}})}});
    set_session_status(session, "running", nullptr);
    session.phase = AgentPhase::kNextStep;
  }
  while (session.phase == AgentPhase::kNextStep) {
    const ScenarioTurn& turn = session.scenario.turns[session.turn];
    if (session.step >= turn.first_step + turn.step_count) {
      append_event(session,
                   {{"type", "agent.message"},
                    {"content", json::array({{{"type", "text"}, {"text", turn.final_message}}})}});
      set_session_status(session, "idle", {{"type", "end_turn"}});
      end_turn(session);
      return;
    }
    const ScenarioStep& step = session.scenario.steps[session.step];
    // Another writer changes the session's stores before the worker sees this call.
    for (const RemoteMemoryChange& change : step.remote_memory) {
      for (const auto& attached : session.memory_stores) {
        if (attached.declared->name == change.store) {
          memory_stores_.apply_remote_change(attached.store_id, change.path, change.content);
        }
      }
    }
    json call = {{"type", step.custom ? "agent.custom_tool_use" : "agent.tool_use"},
                 {"name", step.tool},
                 {"input", step.input}};
    if (!step.custom) call["evaluated_permission"] = to_string(step.permission);
    append_event(session, call);
    const std::string tool_use_id = session.events.back()["id"];
    session.records[session.step].tool_use_id = tool_use_id;
    if (step.permission == Permission::kDeny) {
      // Denied by policy: nothing runs and the agent carries on without a result.
      ++session.step;
      continue;
    }
    set_session_status(session, "idle",
                       {{"type", "requires_action"}, {"event_ids", json::array({tool_use_id})}});
    if (step.permission == Permission::kAsk) {
      // The scripted user answers the confirmation request straight away.
      append_event(session, {{"type", "user.tool_confirmation"},
                             {"tool_use_id", tool_use_id},
                             {"result", step.confirm_allow ? "allow" : "deny"}});
      set_session_status(session, "running", nullptr);
      if (!step.confirm_allow) {
        ++session.step;
        continue;
      }
    }
    session.phase = AgentPhase::kAwaitResult;
  }
}

}  // namespace perimeter::sim

namespace perimeter::sim {

bool Simulator::turn_open(const Session& session) const {
  return session.status != "terminated" &&
         (session.phase == AgentPhase::kNextStep || session.phase == AgentPhase::kAwaitResult);
}

const ScenarioStep* Simulator::awaited_step(const Session& session) const {
  if (session.phase != AgentPhase::kAwaitResult || session.status == "terminated") return nullptr;
  if (session.records[session.step].result_received) return nullptr;
  return &session.scenario.steps[session.step];
}

void Simulator::end_turn(Session& session) {
  session.failed_at.reset();
  if (session.turn + 1 >= session.scenario.turns.size()) {
    if (session.scenario.terminate) set_session_status(session, "terminated", nullptr);
    session.phase = AgentPhase::kFinished;
    return;
  }
  session.phase = AgentPhase::kTurnEnded;
  session.turn_ended_at = clock_.now();
  session.released_at.reset();
  if (live_item(session) == nullptr) session.released_at = session.turn_ended_at;
}

void Simulator::start_next_turn(Session& session) {
  ++session.turn;
  session.turn_ended_at.reset();
  session.released_at.reset();
  session.failed_at.reset();
  const ScenarioTurn& turn = session.scenario.turns[session.turn];
  session.step = turn.first_step;
  append_event(session, {{"type", "user.message"},
                         {"content", json::array({{{"type", "text"}, {"text", turn.prompt}}})}});
  set_session_status(session, "running", nullptr);
  session.phase = AgentPhase::kNextStep;
  // A message to a session no worker holds queues its work again: a new item (new id, new
  // sessions token) for the same session.
  if (live_item(session) == nullptr) queue_session_item(session, "user_message");
  advance_agent(session);
  wakes_.sessions.insert(session.id);
}

void Simulator::apply_interrupt(Session& session) {
  if (!turn_open(session)) return;  // nothing is running: the interrupt is only recorded
  const ScenarioTurn& turn = session.scenario.turns[session.turn];
  if (session.phase == AgentPhase::kAwaitResult && !session.records[session.step].result_received) {
    StepRecord& record = session.records[session.step];
    record.interrupted = true;
    // The open call is closed in the log, so that a worker reconciling from the history (the
    // official one lists it on every start) does not run it again on the session's next item.
    const bool custom = session.scenario.steps[session.step].custom;
    append_event(session,
                 {{"type", custom ? "user.custom_tool_result" : "user.tool_result"},
                  {custom ? "custom_tool_use_id" : "tool_use_id", record.tool_use_id},
                  {"is_error", true},
                  {"content", json::array({{{"type", "text"}, {"text", kInterruptedText}}})}});
  }
  session.step = turn.first_step + turn.step_count;
  const bool ends_session =
      session.turn + 1 >= session.scenario.turns.size() && session.scenario.terminate;
  // After a failed item nobody holds the session: the interrupt queues its work again.
  if (!ends_session && live_item(session) == nullptr) {
    queue_session_item(session, "user_interrupt");
  }
  set_session_status(session, "idle", {{"type", "end_turn"}});
  end_turn(session);
  wakes_.sessions.insert(session.id);
}

void Simulator::run_scripted_user(Session& session) {
  const auto now = clock_.now();
  for (bool acted = true; acted;) {
    acted = false;
    if (session.status == "terminated") break;
    const auto& interrupt_after = session.scenario.interrupt_after_failure;
    if (session.failed_at && interrupt_after && turn_open(session) &&
        live_item(session) == nullptr && now >= *session.failed_at + *interrupt_after) {
      append_event(session, {{"type", "user.interrupt"}});
      apply_interrupt(session);
      acted = true;
      continue;
    }
    if (session.phase == AgentPhase::kTurnEnded) {
      const ScenarioTurn& next = session.scenario.turns[session.turn + 1];
      std::optional<Clock::TimePoint> from;
      if (next.after == TurnTrigger::kEndTurn) from = session.turn_ended_at;
      if (next.after == TurnTrigger::kReleased) from = session.released_at;
      if (from && now >= *from + next.delay) {
        start_next_turn(session);
        acted = true;
      }
    }
  }
  const bool waits =
      session.status != "terminated" &&
      (session.phase == AgentPhase::kTurnEnded ||
       (session.failed_at && session.scenario.interrupt_after_failure && turn_open(session)));
  if (waits) {
    scripted_pending_.insert(session.id);
  } else {
    scripted_pending_.erase(session.id);
  }
}

}  // namespace perimeter::sim
