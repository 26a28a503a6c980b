#include "tools/agent_toolset.h"

#include "tools/bash_tool.h"
#include "tools/file_tools.h"
#include "tools/search_tools.h"
#include "tools/tool_error.h"

namespace perimeter::tools {

nlohmann::json ToolResult::to_json() const {
  nlohmann::json blocks = nlohmann::json::array();
  for (const auto& block : content) blocks.push_back({{"type", "text"}, {"text", block.text}});
  return {{"content", std::move(blocks)}, {"is_error", is_error}};
}

ToolResult ToolResult::from_text(std::string text, bool is_error) {
  // The SDK's toSessionContent: an empty text is sent as "(no output)".
  if (text.empty()) text = "(no output)";
  ToolResult result;
  result.content.push_back(TextBlock{std::move(text)});
  result.is_error = is_error;
  return result;
}

AgentToolset::AgentToolset(const AgentToolsetOptions& options, const Clock& clock, Logger logger,
                           std::shared_ptr<prometheus::Registry> registry)
    : workspace_(options.workdir, options.allowed_roots, options.read_only_roots),
      clock_(clock),
      logger_(std::move(logger)),
      registry_(std::move(registry)) {
  std::vector<std::unique_ptr<Tool>> tools;
  tools.push_back(std::make_unique<BashTool>(workspace_.workdir(), options.bash_env));
  tools.push_back(std::make_unique<ReadTool>(workspace_, options.max_file_bytes));
  tools.push_back(std::make_unique<WriteTool>(workspace_));
  tools.push_back(std::make_unique<EditTool>(workspace_, options.max_file_bytes));
  tools.push_back(std::make_unique<GlobTool>(workspace_));
  tools.push_back(std::make_unique<GrepTool>(workspace_, clock_, options.grep_timeout));
  for (auto& tool : tools) tools_.emplace(std::string(tool->name()), std::move(tool));
  if (registry_) {
    calls_ =
        &prometheus::BuildCounter()
             .Name("perimeter_runner_tool_calls_total")
             .Help("Tool calls executed by the runner, by tool and whether the result is an error")
             .Register(*registry_);
    durations_ = &prometheus::BuildHistogram()
                      .Name("perimeter_runner_tool_duration_seconds")
                      .Help("Time to execute one tool call")
                      .Register(*registry_);
  }
}

AgentToolset::~AgentToolset() {
  close();
}

bool AgentToolset::owns(std::string_view name) const {
  return tools_.find(name) != tools_.end();
}

ToolResult AgentToolset::execute(std::string_view name, const nlohmann::json& input) {
  const auto started = clock_.now();
  auto it = tools_.find(name);
  ToolResult result;
  if (it == tools_.end()) {
    result = ToolResult::from_text("unknown tool: " + std::string(name), true);
  } else {
    try {
      result = ToolResult::from_text(it->second->run(input), false);
    } catch (const ToolError& e) {
      result = ToolResult::from_text(e.what(), true);
    } catch (const std::exception& e) {
      // Not the model's doing (a failed syscall, memory): the SDK's `Error: <message>` form.
      logger_.warn("tool failed unexpectedly", {{"tool", std::string(name)}, {"error", e.what()}});
      result = ToolResult::from_text(std::string("Error: ") + e.what(), true);
    }
    const Tool::RunStatus status = it->second->last_status();
    result.exit_code = status.exit_code;
    result.timed_out = status.timed_out;
  }
  const double seconds = std::chrono::duration<double>(clock_.now() - started).count();
  if (calls_ != nullptr) {
    calls_->Add({{"tool", std::string(name)}, {"is_error", result.is_error ? "true" : "false"}})
        .Increment();
    durations_
        ->Add({{"tool", std::string(name)}},
              prometheus::Histogram::BucketBoundaries{0.001, 0.01, 0.1, 1, 10, 60, 120})
        .Observe(seconds);
  }
  logger_.debug("tool call",
                {{"tool", std::string(name)}, {"is_error", result.is_error}, {"seconds", seconds}});
  return result;
}

void AgentToolset::close() {
  for (auto& [name, tool] : tools_) tool->close();
}

}  // namespace perimeter::tools
