#pragma once

#include <chrono>
#include <mutex>

#include "core/clock.h"

namespace perimeter::testing {

// A clock that moves only when the test says so.
class FakeClock final : public Clock {
 public:
  FakeClock()
      : now_(std::chrono::steady_clock::time_point{} + std::chrono::hours(1)),
        wall_(std::chrono::system_clock::time_point{} + std::chrono::hours(24 * 365 * 56)) {}

  TimePoint now() const override {
    std::lock_guard lock(mutex_);
    return now_;
  }
  std::chrono::system_clock::time_point wall_now() const override {
    std::lock_guard lock(mutex_);
    return wall_;
  }
  void advance(Duration d) {
    std::lock_guard lock(mutex_);
    now_ += d;
    wall_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
  }

 private:
  mutable std::mutex mutex_;
  TimePoint now_;
  std::chrono::system_clock::time_point wall_;
};

}  // namespace perimeter::testing
