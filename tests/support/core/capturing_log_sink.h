#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "core/log.h"

namespace perimeter::testing {

// Keeps every log line so tests can assert on what was (and was not) logged.
class CapturingLogSink final : public LogSink {
 public:
  void write(std::string_view line) override {
    std::lock_guard lock(mutex_);
    lines_.emplace_back(line);
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mutex_);
    return lines_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

}  // namespace perimeter::testing
