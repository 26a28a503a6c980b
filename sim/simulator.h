#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/base64.h"  // base64url_encode: work secrets
#include "core/clock.h"
#include "core/random.h"
#include "sim/api_reply.h"
#include "sim/memory_stores.h"
#include "sim/scenario.h"

namespace perimeter::sim {

// Choices the published documentation leaves open; docs/simulator.md lists each.
struct SimulatorOptions {
  std::chrono::seconds default_lease_ttl{60};
  std::chrono::seconds min_lease_ttl{5};
  std::chrono::seconds max_lease_ttl{600};
  std::chrono::milliseconds default_reclaim_older_than{5000};
  std::chrono::seconds workers_polling_window{30};
  int default_page_size = 20;
  int max_page_size = 1000;
  // Written into each work secret as api_base_url when set.
  std::string api_base_url;
};

// One heartbeat as the server saw it: what the worker expected and what the server answered.
struct LeaseRecord {
  std::string expected;
  std::string returned;  // the new last_heartbeat; empty when refused
  int status = 200;
  std::string state;
};

// The whole simulated service: environments, work queues with leases, sessions with event logs
// and scripted agents. Thread-safe (one lock); time comes only from the injected Clock, so the
// state machine is tested deterministically. Every API method returns the HTTP reply the real
// service would give; none of them throws on client input.
class Simulator {
 public:
  Simulator(SimulatorOptions options, Clock& clock, RandomSource& random);

  // ---- admin ----
  // Creates an environment; a key is generated when none is given.
  nlohmann::json create_environment(const std::string& name, const std::string& key = "");
  ApiReply enqueue_session(const std::string& environment_id, Scenario scenario);
  ApiReply enqueue_healthcheck(const std::string& environment_id);
  ApiReply session_results(const std::string& session_id) const;
  ApiReply environment_results(const std::string& environment_id) const;
  ApiReply work_admin_view(const std::string& work_id) const;
  // A session as the simulator sees it: its turns, every work item it has had and why each was
  // queued, which one holds it now, what the scripted user will do next.
  ApiReply session_admin_view(const std::string& session_id) const;
  // The scripted user sends the next turn's message now, whatever its trigger (409 while a turn
  // is open or when none is left).
  ApiReply send_next_turn(const std::string& session_id);
  // The user ends the session: session.status_terminated, as archiving does (409 if it has).
  ApiReply terminate_session(const std::string& session_id);

  // ---- the work API; `token` is the bearer credential from the Authorization header ----
  // Returns the item (with its one-time secret) or JSON null when nothing is claimable.
  ApiReply poll(const std::string& environment_id, const std::string& token,
                const std::string& worker_id, std::optional<std::int64_t> reclaim_older_than_ms,
                bool undecodable_secret = false, bool reissue_secret_on_reclaim = false);
  ApiReply ack(const std::string& environment_id, const std::string& work_id,
               const std::string& token);
  ApiReply heartbeat(const std::string& environment_id, const std::string& work_id,
                     const std::string& token, const std::string& expected_last_heartbeat,
                     std::optional<std::int64_t> desired_ttl_seconds);
  ApiReply stop(const std::string& environment_id, const std::string& work_id,
                const std::string& token, bool force);
  ApiReply retrieve_work(const std::string& environment_id, const std::string& work_id,
                         const std::string& token);
  ApiReply update_work_metadata(const std::string& environment_id, const std::string& work_id,
                                const std::string& token, const nlohmann::json& metadata);
  ApiReply list_work(const std::string& environment_id, const std::string& token, int limit,
                     const std::string& page);
  ApiReply stats(const std::string& environment_id, const std::string& token);
  // Simulates another worker taking the lease: the next heartbeat's expectation cannot match.
  bool steal_lease(const std::string& work_id);

  // ---- skills: /v1/skills/{skill_id}/versions/{version}[/content] ----
  ApiReply retrieve_skill_version(const std::string& skill_id, const std::string& version,
                                  const std::string& token);
  // The version's archive (a tar of `<name>/...`), as application/x-tar.
  ApiReply skill_content(const std::string& skill_id, const std::string& version,
                         const std::string& token);

  // ---- the session API ----
  ApiReply retrieve_session(const std::string& session_id, const std::string& token);
  ApiReply list_events(const std::string& session_id, const std::string& token, int limit,
                       const std::string& page);
  ApiReply send_events(const std::string& session_id, const std::string& token,
                       const nlohmann::json& body);
  // For the SSE stream: nullopt when the caller may stream, else the error reply.
  std::optional<ApiReply> authorize_session(const std::string& session_id,
                                            const std::string& token) const;
  struct StreamedEvent {
    std::string id;
    std::string type;
    std::string data;
  };
  // Events after the one whose id is `last_event_id` (all of them when empty or unknown).
  std::vector<StreamedEvent> events_after(const std::string& session_id,
                                          const std::string& last_event_id) const;
  bool session_terminated(const std::string& session_id) const;
  // Counts an event stream opened on the session; returns its ordinal (1 for the first).
  int note_stream_opened(const std::string& session_id);

  // Time-driven transitions (lease expiry, the scripted user's later messages and interrupts);
  // cheap, called by the server's timer.
  void tick();
  // Grows on every change a waiting long-poll or stream could care about.
  std::uint64_t generation() const;
  // Environments that got work and sessions that got events without a request of their own
  // asking (a turn sent by the timer, an item queued when another stopped), since the last call:
  // the server wakes their long-polls and streams.
  struct Wakes {
    std::set<std::string> environments;
    std::set<std::string> sessions;
  };
  Wakes take_wakes();

  // ---- memory stores: /v1/memory_stores/{store}/memories[/{memory}] ----
  // Only a sessions token of a live item (not stopped) whose session has the store attached; the
  // environment key is refused (401), writes to a store attached read-only too (403).
  ApiReply list_memories(const std::string& store_id, const std::string& token,
                         const std::string& view, int limit, const std::string& page,
                         const std::string& path_prefix);
  ApiReply retrieve_memory(const std::string& store_id, const std::string& memory_id,
                           const std::string& token, const std::string& view);
  ApiReply create_memory(const std::string& store_id, const std::string& token,
                         const nlohmann::json& body, const std::string& view);
  ApiReply update_memory(const std::string& store_id, const std::string& memory_id,
                         const std::string& token, const nlohmann::json& body,
                         const std::string& view);
  ApiReply delete_memory(const std::string& store_id, const std::string& memory_id,
                         const std::string& token,
                         const std::optional<std::string>& expected_content_sha256);
  // What a store holds now and every change it saw (admin).
  ApiReply memory_store_admin_view(const std::string& store_id) const;

  const SimulatorOptions& options() const { return options_; }

 private:
  struct WorkItem {
    std::string id;
    std::string environment_id;
    std::string data_type;  // session | healthcheck
    std::string data_id;
    std::string state = "queued";
    nlohmann::json metadata = nlohmann::json::object();
    std::string sessions_token;
    std::chrono::system_clock::time_point created_at;
    std::optional<std::chrono::system_clock::time_point> acknowledged_at, started_at,
        latest_heartbeat_at, stop_requested_at, stopped_at;
    // Poll claim (not yet acked): who and when, for reclaim.
    std::optional<Clock::TimePoint> claimed_at;
    std::string claimed_by;
    // Lease.
    std::optional<std::string> last_heartbeat;
    std::chrono::seconds ttl{0};
    Clock::TimePoint lease_expires_at{};
    std::vector<LeaseRecord> lease_history;
    std::vector<std::string> transitions;
    std::uint64_t queue_position = 0;
    // Session items: why the item was queued (session_created, user_message, user_interrupt) and,
    // once stopped, how it left the session (released at a turn's end or after the last, or
    // failed with a turn unfinished).
    std::string queued_because;
    std::string ended;
  };
  // kTurnEnded: idle at end_turn with more turns to come; kFinished: the last turn is over.
  enum class AgentPhase { kNotStarted, kNextStep, kAwaitResult, kTurnEnded, kFinished };
  struct StepRecord {
    std::string tool_use_id;
    bool result_received = false;
    bool interrupted = false;  // left unanswered when a user.interrupt ended its turn
    int results_received = 0;
    bool is_error = false;
    nlohmann::json content;
    std::string text;
  };
  struct Session {
    std::string id;
    std::string environment_id;
    std::string work_id;                // the first item's
    std::vector<std::string> work_ids;  // every item, in the order they were queued
    std::string status = "idle";
    std::chrono::system_clock::time_point created_at, updated_at;
    Scenario scenario;
    std::vector<StepRecord> records;
    std::size_t step = 0;
    std::size_t turn = 0;  // the current turn, or the last one that ended
    AgentPhase phase = AgentPhase::kNotStarted;
    // Clock times for the scripted user: when the current turn ended, when the item holding the
    // session let go after that, when an item failed with the turn open.
    std::optional<Clock::TimePoint> turn_ended_at, released_at, failed_at;
    std::vector<nlohmann::json> events;
    std::map<std::string, std::size_t> event_index;  // event id -> position
    std::vector<nlohmann::json> unexpected;          // results the scenario did not ask for
    std::vector<std::string> skill_ids;
    struct MemoryAttachment {
      std::string store_id;
      const ScenarioMemoryStore* declared = nullptr;  // into `scenario`
    };
    std::vector<MemoryAttachment> memory_stores;
    int streams_opened = 0;
  };
  struct Skill {
    std::string id;
    std::string version_id;
    std::string name;
    std::string environment_id;
    std::string archive;
    std::chrono::system_clock::time_point created_at;
  };
  struct Environment {
    std::string id;
    std::string name;
    std::string key;
    std::vector<std::string> work_order;                   // creation order
    std::map<std::string, Clock::TimePoint> pollers_seen;  // worker id -> last poll
    // Items in state queued, in the order they entered it: what a poll scans.
    std::set<std::pair<std::uint64_t, std::string>> queued;
  };

  std::string new_id(const char* prefix);
  std::string timestamp(std::chrono::system_clock::time_point t) const;
  std::string unique_heartbeat_stamp(const WorkItem& item);
  nlohmann::json render_work(const WorkItem& item) const;
  nlohmann::json render_session(const Session& session) const;
  nlohmann::json render_results(const Session& session) const;
  std::string encode_secret(const WorkItem& item, bool undecodable) const;

  // Auth: nullopt when allowed, else the 401/404 reply.
  std::optional<ApiReply> check_environment_key(const std::string& environment_id,
                                                const std::string& token) const;
  std::optional<ApiReply> check_work_access(const std::string& environment_id,
                                            const std::string& work_id, const std::string& token,
                                            bool environment_key_only) const;
  // Skills: the credential must belong to the skill's environment (its key or an item's token).
  const Skill* find_skill_locked(const std::string& skill_id, const std::string& version,
                                 const std::string& token, ApiReply* error) const;
  // Lease expiry is checked per item on every call that touches the item, and for every item by
  // tick() (the server runs it every 250 ms), list and stats.
  void expire_lease_locked(WorkItem& item);
  void expire_leases_locked();
  void set_state(WorkItem& item, const std::string& state);
  void enter_queue(WorkItem& item);
  void bump() { ++generation_; }
  // A new item for the session (new id and sessions token, same session), on the queue.
  void queue_session_item(Session& session, const std::string& because);
  // The session's item that is not stopped (queued, starting, active or stopping), if any.
  WorkItem* live_item(const Session& session);
  // A session item reached `stopped`: it released the session or failed it.
  void on_item_stopped(WorkItem& item);

  // The scripted agent.
  void append_event(Session& session, nlohmann::json event);
  void set_session_status(Session& session, const std::string& status, nlohmann::json stop_reason);
  void advance_agent(Session& session);
  ApiReply accept_result(Session& session, const nlohmann::json& event, bool custom);
  bool turn_open(const Session& session) const;
  // After the idle that ends a turn: the next turn waits for the scripted user, or the session is
  // finished (and terminated when the scenario says so).
  void end_turn(Session& session);
  nlohmann::json render_session_admin(const Session& session) const;
  // The user's message for the session's next turn; queues an item if none holds the session.
  void start_next_turn(Session& session);
  // A user.interrupt was appended: an open turn ends (its open call unanswered), and the session's
  // work is queued again when no item holds it.
  void apply_interrupt(Session& session);
  // What the scripted user does when its time comes: interrupt after a failure, send a turn.
  void run_scripted_user(Session& session);
  // The caller may use the memory store (`write`: change it); sets `actor` to the item's id.
  std::optional<ApiReply> authorize_memory_locked(const std::string& store_id,
                                                  const std::string& token, bool write,
                                                  std::string* actor) const;
  // The step the agent waits on, when it waits on one.
  const ScenarioStep* awaited_step(const Session& session) const;

  SimulatorOptions options_;
  Clock& clock_;
  RandomSource& random_;
  mutable std::mutex mutex_;
  std::uint64_t generation_ = 0;
  std::uint64_t id_counter_ = 0;
  std::uint64_t queue_counter_ = 0;
  std::map<std::string, Environment> environments_;
  std::map<std::string, WorkItem> work_;
  std::map<std::string, Session> sessions_;
  std::map<std::string, std::string> token_to_work_;  // sessions token -> work id
  std::map<std::string, Skill> skills_;
  // Sessions whose scripted user has something left to do on a timer.
  std::set<std::string> scripted_pending_;
  Wakes wakes_;
  MemoryStores memory_stores_;
};

}  // namespace perimeter::sim
