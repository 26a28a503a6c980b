#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace perimeter::tools {

// One tool of the toolset. `run` returns the result text or throws ToolError with the error text.
// Input is the model's JSON as it came: tools validate it themselves, as the SDK's do.
class Tool {
 public:
  virtual ~Tool() = default;
  virtual std::string_view name() const = 0;
  virtual std::string run(const nlohmann::json& input) = 0;
  // Releases held resources (the bash tool's shell). Called once when the session ends.
  virtual void close() {}

  // How the last run() ended beyond its text, for the runner's audit line (never sent to the
  // API): bash's exit status when its command finished, and whether a timeout cut it off.
  struct RunStatus {
    std::optional<int> exit_code;
    bool timed_out = false;
  };
  virtual RunStatus last_status() const { return {}; }
};

}  // namespace perimeter::tools
