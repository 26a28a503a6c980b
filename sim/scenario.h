#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::sim {

// The permission the hosted service evaluated for a tool call, carried on agent.tool_use as
// `evaluated_permission`: allow runs, ask waits for a user.tool_confirmation, deny never runs.
enum class Permission { kAllow, kAsk, kDeny };
std::string_view to_string(Permission permission);

// What a scenario step expects the worker to send back for its tool call. Every field that is set
// must hold; `no_result` means the worker must not answer at all (a denied call).
struct ExpectedResult {
  std::optional<bool> is_error;
  std::optional<std::string> text;      // the result's text blocks joined, exactly
  std::optional<std::string> contains;  // a substring of that text
  bool no_result = false;
  // The call is left unanswered and a user.interrupt ends its turn (after its work item failed).
  bool interrupted = false;
};

// Another writer changes a memory store while the session runs (another session, the console):
// applied when the step's call is emitted, before the worker sees the call.
struct RemoteMemoryChange {
  std::string store;                   // the scenario's store name
  std::string path;                    // the memory's path, starting with `/`
  std::optional<std::string> content;  // nullopt: the memory is deleted
};

struct ScenarioStep {
  std::string tool;
  bool custom = false;  // agent.custom_tool_use rather than a built-in agent.tool_use
  nlohmann::json input = nlohmann::json::object();
  Permission permission = Permission::kAllow;
  bool confirm_allow = true;  // for `ask`: what the scripted user answers
  // The platform stops the work item serving the session while this call is open (at that item's
  // next heartbeat, which answers `stopping`): the item fails with the turn unfinished.
  bool stop_item = false;
  ExpectedResult expect;
  std::vector<RemoteMemoryChange> remote_memory;
};

// When the scripted user sends a later turn's message, counted from the previous turn's end.
enum class TurnTrigger {
  kEndTurn,   // `delay` after the previous turn ended idle (end_turn or an interrupt)
  kReleased,  // `delay` after that, once no work item holds the session (its worker let go)
  kAdmin,     // only when asked: POST /admin/sessions/{id}/next_turn
};
std::string_view to_string(TurnTrigger trigger);

// One exchange: the user's message, the agent's tool calls, its closing message and the idle
// (end_turn) that hands the session back to the user.
struct ScenarioTurn {
  std::string prompt;
  std::string final_message;
  std::size_t first_step = 0;  // index into Scenario::steps
  std::size_t step_count = 0;
  // For every turn but the first (which starts when the session is enqueued).
  std::chrono::milliseconds delay{0};
  TurnTrigger after = TurnTrigger::kEndTurn;
};

// A skill the session's agent carries: the worker downloads it as an archive into its workdir.
struct ScenarioSkill {
  std::string name;
  struct File {
    std::string path;
    std::string content;
    bool executable = false;
  };
  std::vector<File> files;
};

// A memory store attached to the session (`resources` of type memory_store). Each enqueue of the
// scenario creates the store afresh with these memories, so two runs never share one.
struct ScenarioMemoryStore {
  std::string name;
  std::optional<std::string> mount_path;  // unset: null, the worker's `<workdir>/memory/<name>`
  bool read_only = false;
  std::string description;
  std::optional<std::string> instructions;
  struct Memory {
    std::string path;
    std::string content;
  };
  std::vector<Memory> memories;
};

// A scripted agent and its user: the turns of one session, the tool calls each makes, in order,
// and what each should get back. A scenario without `turns` is one turn.
struct Scenario {
  std::string name;
  // Emit session.status_terminated after the last turn's end_turn (the conformance runs need a
  // clean end); false leaves the session idle, as a real session stays until archived.
  bool terminate = true;
  std::vector<ScenarioStep> steps;  // every turn's steps, turn after turn
  std::vector<ScenarioTurn> turns;  // at least one
  std::vector<ScenarioSkill> skills;
  std::vector<ScenarioMemoryStore> memory_stores;
  // When a work item fails with a turn unfinished, the scripted user sends user.interrupt this
  // long after (which ends the turn and queues the session's work again); unset: it never does.
  std::optional<std::chrono::milliseconds> interrupt_after_failure;
};

class ScenarioError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses a scenario from YAML (or JSON, which YAML contains). Throws ScenarioError naming the
// offending step and field.
Scenario parse_scenario(std::string_view text);

// A memory path as the memory API takes it: `/`, then components that are neither empty nor `.`
// or `..`, no NUL, at most 1024 bytes.
bool valid_memory_path(const std::string& path);

// Converts a YAML node to JSON: quoted scalars stay strings; plain scalars become null, bool,
// integer or number when they read as one.
nlohmann::json yaml_text_to_json(std::string_view text);

}  // namespace perimeter::sim
