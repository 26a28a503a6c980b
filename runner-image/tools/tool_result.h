#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace perimeter::tools {

// One content block of a `user.tool_result` event. The agent toolset only ever produces text.
struct TextBlock {
  std::string text;
  bool operator==(const TextBlock&) const = default;
};

// What a tool call produced, as the runner posts it: `{content: [...], is_error}`.
struct ToolResult {
  std::vector<TextBlock> content;
  bool is_error = false;
  // Not part of the event: how the call ended, for the runner's audit line. Bash's exit status
  // when its command finished; whether a timeout cut the call off.
  std::optional<int> exit_code;
  bool timed_out = false;
  bool operator==(const ToolResult&) const = default;

  // The `content`/`is_error` fields of the `user.tool_result` event, in the SDK's shape.
  nlohmann::json to_json() const;
  // A result from a tool's text, with the SDK's placeholder for empty text.
  static ToolResult from_text(std::string text, bool is_error);
};

}  // namespace perimeter::tools
