#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::mcpguard {

// A route's tool policy: glob patterns (fnmatch: `*`, `?`, `[...]`; `/` is an ordinary character).
// Deny wins; with a non-empty allow list a tool must also match one of its patterns.
struct ToolPolicy {
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  // True when the policy lets every tool through (nothing to filter in tools/list).
  bool allows_everything() const;
};

struct ToolDecision {
  bool allowed = true;
  // Empty when allowed; otherwise what refused it, as the audit and the error message say it:
  // `deny "delete_*"` or `not in allow list`.
  std::string reason;
};

ToolDecision decide_tool(const ToolPolicy& policy, std::string_view tool);

// Removes the tools `policy` denies from a JSON-RPC response whose `result.tools` is an array (a
// tools/list result); any other value is left alone. Returns the number removed. A tool entry
// without a string `name` is removed too: what cannot be named cannot be allowed.
std::size_t remove_denied_tools(nlohmann::json& response, const ToolPolicy& policy);

}  // namespace perimeter::mcpguard
