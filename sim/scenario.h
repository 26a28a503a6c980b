#pragma once

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
};

struct ScenarioStep {
  std::string tool;
  bool custom = false;  // agent.custom_tool_use rather than a built-in agent.tool_use
  nlohmann::json input = nlohmann::json::object();
  Permission permission = Permission::kAllow;
  bool confirm_allow = true;  // for `ask`: what the scripted user answers
  ExpectedResult expect;
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

// A scripted agent: the tool calls one session makes, in order, and what each should get back.
struct Scenario {
  std::string name;
  std::string prompt = "Run the scripted scenario.";
  std::string final_message = "Scenario complete.";
  // Emit session.status_terminated after the final end_turn (the conformance runs need a clean
  // end); false leaves the session idle, as a real session stays until archived.
  bool terminate = true;
  std::vector<ScenarioStep> steps;
  std::vector<ScenarioSkill> skills;
};

class ScenarioError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses a scenario from YAML (or JSON, which YAML contains). Throws ScenarioError naming the
// offending step and field.
Scenario parse_scenario(std::string_view text);

// Converts a YAML node to JSON: quoted scalars stay strings; plain scalars become null, bool,
// integer or number when they read as one.
nlohmann::json yaml_text_to_json(std::string_view text);

}  // namespace perimeter::sim
