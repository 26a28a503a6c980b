#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "tools/tool.h"
#include "tools/tool_executor.h"
#include "tools/workspace.h"

namespace perimeter::tools {

struct AgentToolsetOptions {
  std::string workdir;
  // Directories outside the workdir the file tools may also reach (the SDK's allowedRoots).
  std::vector<std::string> allowed_roots;
  // Directories write and edit refuse to modify (the SDK's readOnlyRoots: read-only memory stores).
  std::vector<std::string> read_only_roots;
  // The bash tool's environment; nullopt is the process environment without ANTHROPIC_*.
  std::optional<std::vector<std::string>> bash_env;
  // Cap for whole-file read and edit; nullopt disables it.
  std::optional<std::uint64_t> max_file_bytes = 256 * 1024;
  std::chrono::milliseconds grep_timeout{60'000};
};

// agent_toolset_20260401 for one session: bash, read, write, edit, glob, grep.
class AgentToolset final : public ToolExecutor {
 public:
  // `registry` may be null (no metrics). `clock` must outlive the toolset.
  AgentToolset(const AgentToolsetOptions& options, const Clock& clock, Logger logger,
               std::shared_ptr<prometheus::Registry> registry = nullptr);
  ~AgentToolset() override;

  bool owns(std::string_view name) const override;
  ToolResult execute(std::string_view name, const nlohmann::json& input) override;
  void close() override;

 private:
  Workspace workspace_;
  const Clock& clock_;
  Logger logger_;
  std::map<std::string, std::unique_ptr<Tool>, std::less<>> tools_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* calls_ = nullptr;
  prometheus::Family<prometheus::Histogram>* durations_ = nullptr;
};

}  // namespace perimeter::tools
