#include "sim/scenario.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string_view>

namespace perimeter::sim {
namespace {

// Builds an error message in one allocation.
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) out.append(part);
  return out;
}

nlohmann::json scalar_to_json(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted: always a string
  if (text.empty() || text == "~" || text == "null") return nullptr;
  if (text == "true" || text == "True") return true;
  if (text == "false" || text == "False") return false;
  char* end = nullptr;
  errno = 0;
  const long long integer = std::strtoll(text.c_str(), &end, 10);
  if (errno == 0 && end != text.c_str() && *end == '\0') return integer;
  errno = 0;
  const double number = std::strtod(text.c_str(), &end);
  if (errno == 0 && end != text.c_str() && *end == '\0') return number;
  return text;
}

nlohmann::json to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json array = nlohmann::json::array();
      for (const auto& item : node) array.push_back(to_json(item));
      return array;
    }
    case YAML::NodeType::Map: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& entry : node) object[entry.first.as<std::string>()] = to_json(entry.second);
      return object;
    }
  }
  return nullptr;
}

std::string require_string(const nlohmann::json& object, const char* key,
                           const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string() || it->get<std::string>().empty()) {
    throw ScenarioError(where + ": `" + key + "` must be a non-empty string");
  }
  return it->get<std::string>();
}

std::string optional_string(const nlohmann::json& object, const char* key, std::string fallback,
                            const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) throw ScenarioError(where + ": `" + key + "` must be a string");
  return it->get<std::string>();
}

bool optional_bool(const nlohmann::json& object, const char* key, bool fallback,
                   const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw ScenarioError(where + ": `" + key + "` must be true or false");
  return it->get<bool>();
}

std::optional<std::chrono::milliseconds> optional_millis(const nlohmann::json& object,
                                                         const char* key,
                                                         const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0) {
    throw ScenarioError(where + ": `" + key + "` must be a whole number of milliseconds, >= 0");
  }
  return std::chrono::milliseconds(it->get<std::int64_t>());
}

ExpectedResult parse_expectation(const nlohmann::json& step, const std::string& where) {
  ExpectedResult expect;
  auto it = step.find("expect");
  if (it == step.end() || it->is_null()) return expect;
  if (!it->is_object()) throw ScenarioError(where + ": `expect` must be a mapping");
  const std::string at = where + ".expect";
  for (const auto& [key, value] : it->items()) {
    if (key == "is_error") {
      if (!value.is_boolean()) throw ScenarioError(at + ": `is_error` must be true or false");
      expect.is_error = value.get<bool>();
    } else if (key == "text") {
      if (!value.is_string()) throw ScenarioError(at + ": `text` must be a string");
      expect.text = value.get<std::string>();
    } else if (key == "contains") {
      if (!value.is_string()) throw ScenarioError(at + ": `contains` must be a string");
      expect.contains = value.get<std::string>();
    } else if (key == "no_result") {
      if (!value.is_boolean()) throw ScenarioError(at + ": `no_result` must be true or false");
      expect.no_result = value.get<bool>();
    } else if (key == "interrupted") {
      if (!value.is_boolean()) throw ScenarioError(at + ": `interrupted` must be true or false");
      expect.interrupted = value.get<bool>();
    } else {
      throw ScenarioError(cat({at, ": unknown field `", key, "`"}));
    }
  }
  return expect;
}

bool valid_relative_path(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::string part =
        path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return path.find('\0') == std::string::npos;
}

ScenarioStep parse_step(const nlohmann::json& node, const std::string& where) {
  if (!node.is_object()) throw ScenarioError(where + ": must be a mapping");
  ScenarioStep step;
  step.tool = require_string(node, "tool", where);
  step.custom = optional_bool(node, "custom", false, where);
  if (auto input = node.find("input"); input != node.end() && !input->is_null()) {
    if (!input->is_object()) throw ScenarioError(where + ": `input` must be a mapping");
    step.input = *input;
  }
  const std::string permission = optional_string(node, "permission", "allow", where);
  if (permission == "allow") {
    step.permission = Permission::kAllow;
  } else if (permission == "ask") {
    step.permission = Permission::kAsk;
  } else if (permission == "deny") {
    step.permission = Permission::kDeny;
  } else {
    throw ScenarioError(
        cat({where, ": `permission` must be allow, ask or deny, not `", permission, "`"}));
  }
  const std::string confirm = optional_string(node, "confirm", "allow", where);
  if (confirm != "allow" && confirm != "deny") {
    throw ScenarioError(cat({where, ": `confirm` must be allow or deny, not `", confirm, "`"}));
  }
  step.confirm_allow = confirm == "allow";
  step.stop_item = optional_bool(node, "stop_item", false, where);
  if (auto changes = node.find("remote_memory"); changes != node.end() && !changes->is_null()) {
    if (!changes->is_array()) throw ScenarioError(where + ": `remote_memory` must be a list");
    for (std::size_t i = 0; i < changes->size(); ++i) {
      const nlohmann::json& change = (*changes)[i];
      const std::string at = where + " remote_memory " + std::to_string(i + 1);
      if (!change.is_object()) throw ScenarioError(at + ": must be a mapping");
      for (const auto& [key, value] : change.items()) {
        if (key != "store" && key != "path" && key != "content" && key != "delete") {
          throw ScenarioError(cat({at, ": unknown field `", key, "`"}));
        }
      }
      RemoteMemoryChange parsed;
      parsed.store = require_string(change, "store", at);
      parsed.path = require_string(change, "path", at);
      if (!valid_memory_path(parsed.path)) {
        throw ScenarioError(at + ": `path` must be absolute, without empty, `.` or `..` parts");
      }
      const bool remove = optional_bool(change, "delete", false, at);
      if (remove == change.contains("content")) {
        throw ScenarioError(at + ": give either `content` or `delete: true`");
      }
      if (!remove) parsed.content = optional_string(change, "content", "", at);
      step.remote_memory.push_back(std::move(parsed));
    }
  }
  step.expect = parse_expectation(node, where);
  // A call that never runs can only expect silence.
  if (step.permission == Permission::kDeny ||
      (step.permission == Permission::kAsk && !step.confirm_allow)) {
    step.expect.no_result = true;
  }
  if (step.expect.interrupted && step.expect.no_result) {
    throw ScenarioError(where + ": a call that never runs cannot be interrupted");
  }
  return step;
}

// Appends a turn's steps to the scenario; `where` names the list in errors.
void parse_steps(const nlohmann::json& steps, const std::string& where, Scenario* scenario) {
  for (std::size_t i = 0; i < steps.size(); ++i) {
    scenario->steps.push_back(parse_step(steps[i], where + " step " + std::to_string(i + 1)));
  }
}

TurnTrigger parse_trigger(const nlohmann::json& turn, const std::string& where) {
  const std::string after = optional_string(turn, "after", "end_turn", where);
  if (after == "end_turn") return TurnTrigger::kEndTurn;
  if (after == "released") return TurnTrigger::kReleased;
  if (after == "admin") return TurnTrigger::kAdmin;
  throw ScenarioError(
      cat({where, ": `after` must be end_turn, released or admin, not `", after, "`"}));
}

void parse_turns(const nlohmann::json& turns, Scenario* scenario) {
  const std::string scenario_where = "scenario " + scenario->name;
  if (!turns.is_array() || turns.empty()) {
    throw ScenarioError(scenario_where + ": `turns` must be a non-empty list");
  }
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const nlohmann::json& node = turns[i];
    const std::string number = std::to_string(i + 1);
    const std::string where = scenario_where + " turn " + number;
    if (!node.is_object()) throw ScenarioError(where + ": must be a mapping");
    for (const auto& [key, value] : node.items()) {
      if (key != "prompt" && key != "final_message" && key != "steps" && key != "delay_ms" &&
          key != "after") {
        throw ScenarioError(cat({where, ": unknown field `", key, "`"}));
      }
    }
    ScenarioTurn turn;
    const bool last = i + 1 == turns.size();
    turn.prompt = optional_string(node, "prompt",
                                  i == 0 ? "Run the scripted scenario."
                                         : "Continue the scripted scenario (turn " + number + ").",
                                  where);
    turn.final_message =
        optional_string(node, "final_message",
                        last ? "Scenario complete." : "Turn " + number + " complete.", where);
    if (i == 0 && (node.contains("delay_ms") || node.contains("after"))) {
      throw ScenarioError(where +
                          ": the first turn starts when the session is enqueued; `delay_ms` and "
                          "`after` belong to later turns");
    }
    turn.delay = optional_millis(node, "delay_ms", where).value_or(std::chrono::milliseconds(0));
    turn.after = parse_trigger(node, where);
    turn.first_step = scenario->steps.size();
    if (auto steps = node.find("steps"); steps != node.end() && !steps->is_null()) {
      if (!steps->is_array()) throw ScenarioError(where + ": `steps` must be a list");
      parse_steps(*steps, where, scenario);
    }
    turn.step_count = scenario->steps.size() - turn.first_step;
    scenario->turns.push_back(std::move(turn));
  }
}

}  // namespace

std::string_view to_string(TurnTrigger trigger) {
  switch (trigger) {
    case TurnTrigger::kEndTurn:
      return "end_turn";
    case TurnTrigger::kReleased:
      return "released";
    case TurnTrigger::kAdmin:
      return "admin";
  }
  return "end_turn";
}

std::string_view to_string(Permission permission) {
  switch (permission) {
    case Permission::kAllow:
      return "allow";
    case Permission::kAsk:
      return "ask";
    case Permission::kDeny:
      return "deny";
  }
  return "allow";
}

nlohmann::json yaml_text_to_json(std::string_view text) {
  try {
    return to_json(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    throw ScenarioError(std::string("scenario is not valid YAML: ") + e.what());
  }
}

Scenario parse_scenario(std::string_view text) {
  const nlohmann::json root = yaml_text_to_json(text);
  if (!root.is_object()) throw ScenarioError("scenario: the document must be a mapping");
  Scenario scenario;
  scenario.name = optional_string(root, "name", "unnamed", "scenario");
  scenario.terminate = optional_bool(root, "terminate", scenario.terminate, "scenario");
  const std::string where = "scenario " + scenario.name;
  scenario.interrupt_after_failure = optional_millis(root, "interrupt_after_failure_ms", where);
  auto turns = root.find("turns");
  const bool multi_turn = turns != root.end() && !turns->is_null();
  auto steps = root.find("steps");
  if (multi_turn) {
    for (const char* key : {"steps", "prompt", "final_message"}) {
      if (root.contains(key)) {
        throw ScenarioError(cat({where, ": with `turns`, `", key, "` belongs to each turn"}));
      }
    }
  } else if (steps == root.end() || !steps->is_array()) {
    throw ScenarioError(where + ": `steps` must be a list");
  }
  if (auto skills = root.find("skills"); skills != root.end() && !skills->is_null()) {
    if (!skills->is_array())
      throw ScenarioError("scenario " + scenario.name + ": `skills` must be a list");
    for (std::size_t i = 0; i < skills->size(); ++i) {
      const nlohmann::json& node = (*skills)[i];
      const std::string where = "scenario " + scenario.name + " skill " + std::to_string(i + 1);
      if (!node.is_object()) throw ScenarioError(where + ": must be a mapping");
      ScenarioSkill skill;
      skill.name = require_string(node, "name", where);
      if (!valid_relative_path(skill.name) || skill.name.find('/') != std::string::npos) {
        throw ScenarioError(where + ": `name` must be one plain path component");
      }
      auto files = node.find("files");
      if (files == node.end() || !files->is_object() || files->empty()) {
        throw ScenarioError(where + ": `files` must map paths to contents");
      }
      for (const auto& [path, content] : files->items()) {
        if (!valid_relative_path(path) || path.size() + skill.name.size() > 98) {
          throw ScenarioError(cat({where, ": file path `", path,
                                   "` must be relative, without `..`, under 98 characters"}));
        }
        if (!content.is_string()) {
          throw ScenarioError(cat({where, ": file `", path, "` must be text"}));
        }
        // Scripts keep their exec bit, as the official worker's extractor preserves it.
        const bool executable = path.size() > 3 && path.compare(path.size() - 3, 3, ".sh") == 0;
        skill.files.push_back({path, content.get<std::string>(), executable});
      }
      scenario.skills.push_back(std::move(skill));
    }
  }
  if (auto stores = root.find("memory_stores"); stores != root.end() && !stores->is_null()) {
    if (!stores->is_array()) throw ScenarioError(where + ": `memory_stores` must be a list");
    if (stores->size() > 8) throw ScenarioError(where + ": at most 8 memory stores per session");
    for (std::size_t i = 0; i < stores->size(); ++i) {
      const nlohmann::json& node = (*stores)[i];
      const std::string at = where + " memory store " + std::to_string(i + 1);
      if (!node.is_object()) throw ScenarioError(at + ": must be a mapping");
      for (const auto& [key, value] : node.items()) {
        if (key != "name" && key != "mount_path" && key != "access" && key != "description" &&
            key != "instructions" && key != "memories") {
          throw ScenarioError(cat({at, ": unknown field `", key, "`"}));
        }
      }
      ScenarioMemoryStore store;
      store.name = require_string(node, "name", at);
      for (const ScenarioMemoryStore& other : scenario.memory_stores) {
        if (other.name == store.name) throw ScenarioError(at + ": two stores named " + store.name);
      }
      if (auto mount = node.find("mount_path"); mount != node.end() && !mount->is_null()) {
        if (!mount->is_string()) throw ScenarioError(at + ": `mount_path` must be a string");
        store.mount_path = mount->get<std::string>();
      }
      const std::string access = optional_string(node, "access", "read_write", at);
      if (access != "read_write" && access != "read_only") {
        throw ScenarioError(
            cat({at, ": `access` must be read_write or read_only, not `", access, "`"}));
      }
      store.read_only = access == "read_only";
      store.description = optional_string(node, "description", "", at);
      if (auto text = node.find("instructions"); text != node.end() && !text->is_null()) {
        store.instructions = optional_string(node, "instructions", "", at);
      }
      if (auto memories = node.find("memories"); memories != node.end() && !memories->is_null()) {
        if (!memories->is_object()) {
          throw ScenarioError(at + ": `memories` must map paths to contents");
        }
        for (const auto& [path, content] : memories->items()) {
          if (!valid_memory_path(path)) {
            throw ScenarioError(cat({at, ": memory path `", path,
                                     "` must be absolute, without empty, `.` or `..` parts"}));
          }
          if (!content.is_string()) {
            throw ScenarioError(cat({at, ": memory `", path, "` must be text"}));
          }
          store.memories.push_back({path, content.get<std::string>()});
        }
      }
      scenario.memory_stores.push_back(std::move(store));
    }
  }
  if (multi_turn) {
    parse_turns(*turns, &scenario);
  } else {
    // One turn: the scenario's own prompt, steps and closing message, as before turns existed.
    ScenarioTurn turn;
    turn.prompt = optional_string(root, "prompt", "Run the scripted scenario.", where);
    turn.final_message = optional_string(root, "final_message", "Scenario complete.", where);
    parse_steps(*steps, where, &scenario);
    turn.step_count = scenario.steps.size();
    scenario.turns.push_back(std::move(turn));
  }
  for (std::size_t i = 0; i < scenario.steps.size(); ++i) {
    for (const RemoteMemoryChange& change : scenario.steps[i].remote_memory) {
      bool known = false;
      for (const ScenarioMemoryStore& store : scenario.memory_stores)
        known |= store.name == change.store;
      if (!known) {
        throw ScenarioError(cat({where, " step ", std::to_string(i + 1),
                                 ": remote_memory names no memory store `", change.store, "`"}));
      }
    }
  }
  return scenario;
}

bool valid_memory_path(const std::string& path) {
  if (path.size() < 2 || path.size() > 1024 || path[0] != '/') return false;
  if (path.find('\0') != std::string::npos) return false;
  return valid_relative_path(path.substr(1));
}

}  // namespace perimeter::sim
