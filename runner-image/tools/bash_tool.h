#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "tools/bash_session.h"
#include "tools/tool.h"

namespace perimeter::tools {

inline constexpr std::chrono::milliseconds kBashDefaultTimeout{120'000};

// bash {command?, restart?, timeout_ms?}: one persistent shell per session, started on first use.
// A timeout or a dead shell discards the session (the next call starts a fresh one); a non-zero
// exit status is an error result carrying the output.
class BashTool final : public Tool {
 public:
  // `env` nullopt: the process environment without ANTHROPIC_*; otherwise used verbatim.
  BashTool(std::string workdir, std::optional<std::vector<std::string>> env)
      : workdir_(std::move(workdir)), env_(std::move(env)) {}
  std::string_view name() const override { return "bash"; }
  std::string run(const nlohmann::json& input) override;
  void close() override;
  RunStatus last_status() const override;

 private:
  std::string workdir_;
  std::optional<std::vector<std::string>> env_;
  // Calls are serialized: interleaved writes to one shell would corrupt the sentinel framing.
  mutable std::mutex mutex_;
  std::unique_ptr<BashSession> session_;
  RunStatus last_;
};

}  // namespace perimeter::tools
