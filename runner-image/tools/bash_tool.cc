#include "tools/bash_tool.h"

#include <cmath>

#include "tools/js_value.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

// setTimeout's reading of the delay: anything outside [1, 2^31-1] (or not a number) is 1 ms.
std::chrono::milliseconds timer_delay(double ms) {
  if (!(ms >= 1 && ms <= 2147483647.0)) return std::chrono::milliseconds(1);
  return std::chrono::milliseconds(static_cast<long long>(std::trunc(ms)));
}

}  // namespace

std::string BashTool::run(const nlohmann::json& input) {
  if (input.is_null()) {
    throw ToolError("Error: Cannot destructure property 'command' of 'object null' as it is null.");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  last_ = {};
  const nlohmann::json* command = field(input, "command");
  const bool restart = js_truthy(field(input, "restart"));
  if (restart) session_.reset();
  if (!js_truthy(command)) {
    if (restart) return "bash session restarted";
    throw ToolError("bash: command is required");
  }
  // `timeout_ms ?? 120000`, read by setTimeout and echoed in the message as given.
  const nlohmann::json* timeout_value = field(input, "timeout_ms");
  const bool has_timeout = timeout_value != nullptr && !timeout_value->is_null();
  const std::string timeout_text = has_timeout ? js_to_string(*timeout_value) : "120000";
  const auto timeout =
      has_timeout ? timer_delay(js_to_number(*timeout_value)) : kBashDefaultTimeout;
  try {
    if (!session_)
      session_ = std::make_unique<BashSession>(workdir_, env_ ? *env_ : scrubbed_environment());
    BashSession::Result result = session_->exec(js_to_string(*command), timeout);
    last_.exit_code = result.exit_code;
    if (result.exit_code != 0) {
      throw ToolError(result.output.empty() ? "exit " + std::to_string(result.exit_code)
                                            : result.output);
    }
    return result.output;
  } catch (const BashTimeout&) {
    // The command still runs and would print a stale sentinel: kill its group, start afresh next
    // time.
    session_.reset();
    last_.timed_out = true;
    throw ToolError("bash: bash command timed out after " + timeout_text + "ms");
  } catch (const BashTerminated& e) {
    session_.reset();
    throw ToolError(std::string("bash: ") + e.what());
  }
}

Tool::RunStatus BashTool::last_status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_;
}

void BashTool::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  session_.reset();
}

}  // namespace perimeter::tools
