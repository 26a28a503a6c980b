#pragma once

#include <stdexcept>
#include <string>

namespace perimeter::tools {

// A failure the model should read: its text becomes the `is_error` result as it is, the way the
// SDK's ToolError does. Never carries a host path the model did not give.
class ToolError : public std::runtime_error {
 public:
  explicit ToolError(const std::string& text) : std::runtime_error(text) {}
};

}  // namespace perimeter::tools
