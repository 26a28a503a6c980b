#pragma once

#include <gmock/gmock.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <vector>

#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "runner/skills.h"
#include "runner/stop_source.h"
#include "tools/tool_executor.h"

namespace perimeter::runner::testing {

// Records each wait and moves the fake clock by it instead of waiting.
class RecordingStoppableSleeper final : public StoppableSleeper {
 public:
  explicit RecordingStoppableSleeper(perimeter::testing::FakeClock& clock) : clock_(clock) {}
  void sleep_for(std::chrono::milliseconds delay, StopSource& stop) override {
    {
      std::lock_guard lock(mutex_);
      delays_.push_back(delay);
    }
    clock_.advance(delay);
    if (after_sleep) after_sleep(stop);
  }
  std::vector<std::chrono::milliseconds> delays() const {
    std::lock_guard lock(mutex_);
    return delays_;
  }
  // Runs after each recorded wait, e.g. to end a loop after N beats.
  std::function<void(StopSource&)> after_sleep;

 private:
  perimeter::testing::FakeClock& clock_;
  mutable std::mutex mutex_;
  std::vector<std::chrono::milliseconds> delays_;
};

// Whether any captured log line contains `text`.
inline bool logged(const perimeter::testing::CapturingLogSink& sink, std::string_view text) {
  for (const std::string& line : sink.lines()) {
    if (line.find(text) != std::string::npos) return true;
  }
  return false;
}

class MockArchiveCommand : public ArchiveCommand {
 public:
  MOCK_METHOD(std::string, run, (const std::vector<std::string>&), (override));
};

class MockToolExecutor : public tools::ToolExecutor {
 public:
  MOCK_METHOD(bool, owns, (std::string_view), (const, override));
  MOCK_METHOD(tools::ToolResult, execute, (std::string_view, const nlohmann::json&), (override));
  MOCK_METHOD(void, close, (), (override));
};

}  // namespace perimeter::runner::testing
