#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "tools/tool_result.h"

namespace perimeter::tools {

// Executes the agent's tool calls for one session: the boundary the runner's dispatch talks to.
class ToolExecutor {
 public:
  virtual ~ToolExecutor() = default;
  // Whether `name` is one of this executor's tools; calls to others are left to their owner.
  virtual bool owns(std::string_view name) const = 0;
  // Runs one call. Never throws for anything the model sent: bad input is an `is_error` result.
  virtual ToolResult execute(std::string_view name, const nlohmann::json& input) = 0;
  // Ends the session's held resources (the persistent shell).
  virtual void close() = 0;
};

}  // namespace perimeter::tools
