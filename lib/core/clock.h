#pragma once

#include <chrono>

namespace perimeter {

// Time as an I/O boundary: production code takes a Clock& so tests can drive time exactly.
class Clock {
 public:
  using Duration = std::chrono::steady_clock::duration;
  using TimePoint = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  // Monotonic time, for deadlines and intervals.
  virtual TimePoint now() const = 0;
  // Wall-clock time, for timestamps that leave the process (status, events, logs).
  virtual std::chrono::system_clock::time_point wall_now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point wall_now() const override {
    return std::chrono::system_clock::now();
  }
  // The process-wide instance; stateless, so sharing it is safe.
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

}  // namespace perimeter
