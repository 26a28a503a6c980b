#include "mcp/tool_policy.h"

#include <fnmatch.h>

#include <algorithm>

namespace perimeter::mcpguard {
namespace {

// fnmatch(3) without flags: `/` and a leading `.` are ordinary characters, `\` escapes. Matching
// is exact and case-sensitive, as MCP tool names are.
bool matches(const std::string& pattern, const std::string& tool) {
  return fnmatch(pattern.c_str(), tool.c_str(), 0) == 0;
}

}  // namespace

bool ToolPolicy::allows_everything() const {
  return deny.empty() &&
         (allow.empty() || std::find(allow.begin(), allow.end(), "*") != allow.end());
}

ToolDecision decide_tool(const ToolPolicy& policy, std::string_view tool) {
  if (policy.allows_everything()) return {};
  // fnmatch reads C strings: a NUL would hide the rest of the name from the patterns, while the
  // server sees all of it. No MCP tool name has one.
  if (tool.find('\0') != std::string_view::npos) return {false, "name contains a NUL byte"};
  const std::string name(tool);
  for (const std::string& pattern : policy.deny) {
    if (matches(pattern, name)) return {false, "deny \"" + pattern + "\""};
  }
  if (policy.allow.empty()) return {};
  for (const std::string& pattern : policy.allow) {
    if (matches(pattern, name)) return {};
  }
  return {false, "not in allow list"};
}

std::size_t remove_denied_tools(nlohmann::json& response, const ToolPolicy& policy) {
  if (!response.is_object()) return 0;
  auto& members = response.get_ref<nlohmann::json::object_t&>();
  const auto result = members.find("result");
  if (result == members.end() || !result->second.is_object()) return 0;
  auto& result_members = result->second.get_ref<nlohmann::json::object_t&>();
  const auto tools = result_members.find("tools");
  if (tools == result_members.end() || !tools->second.is_array()) return 0;
  auto& list = tools->second.get_ref<nlohmann::json::array_t&>();
  const auto kept_end = std::remove_if(list.begin(), list.end(), [&](const nlohmann::json& tool) {
    // What cannot be named cannot be allowed.
    if (!tool.is_object()) return true;
    const auto& fields = tool.get_ref<const nlohmann::json::object_t&>();
    const auto name = fields.find("name");
    if (name == fields.end() || !name->second.is_string()) return true;
    return !decide_tool(policy, name->second.get_ref<const std::string&>()).allowed;
  });
  const auto removed = static_cast<std::size_t>(list.end() - kept_end);
  list.erase(kept_end, list.end());
  return removed;
}

}  // namespace perimeter::mcpguard
