#pragma once

#include <chrono>
#include <cstddef>

#include "core/clock.h"
#include "tools/tool.h"
#include "tools/workspace.h"

namespace perimeter::tools {

inline constexpr std::size_t kGlobResultLimit = 200;
inline constexpr std::size_t kWalkMaxEntries = 50'000;
inline constexpr std::size_t kGrepOutputLimit = 100 * 1024;  // UTF-16 units, as the SDK counts
inline constexpr std::size_t kGrepMaxLineLength = 2000;
inline constexpr int kWalkMaxDepth = 40;
inline constexpr std::chrono::milliseconds kGrepTimeout{60'000};

// glob {pattern, path?}: regular files under the workdir (or `path`) matching the glob, newest
// first, at most 200, one absolute path a line. `.git` and `node_modules` are not walked by `**`.
class GlobTool final : public Tool {
 public:
  explicit GlobTool(const Workspace& workspace) : workspace_(workspace) {}
  std::string_view name() const override { return "glob"; }
  std::string run(const nlohmann::json& input) override;

 private:
  const Workspace& workspace_;
};

// grep {pattern, path?}: the SDK's built-in walker (what it runs when no `rg` is on PATH):
// "<file>:<line>:<text>" for each matching line, depth-first in name order, output capped.
class GrepTool final : public Tool {
 public:
  GrepTool(const Workspace& workspace, const Clock& clock,
           std::chrono::milliseconds timeout = kGrepTimeout)
      : workspace_(workspace), clock_(clock), timeout_(timeout) {}
  std::string_view name() const override { return "grep"; }
  std::string run(const nlohmann::json& input) override;

 private:
  const Workspace& workspace_;
  const Clock& clock_;
  std::chrono::milliseconds timeout_;
};

}  // namespace perimeter::tools
