#pragma once

#include <chrono>
#include <mutex>

#include "core/clock.h"

namespace perimeter::mcpguard {

// A token bucket: `rate` tokens a second, at most `burst` held. Thread-safe.
class RateLimiter {
 public:
  RateLimiter(double rate_per_second, double burst, const Clock& clock);

  // Takes `tokens` when that many are held; otherwise takes none and returns false, with
  // `retry_after` (when given) set to the wait until they would be.
  bool try_acquire(double tokens = 1, std::chrono::milliseconds* retry_after = nullptr);

 private:
  double rate_;
  double burst_;
  const Clock& clock_;
  std::mutex mutex_;
  double tokens_;
  Clock::TimePoint refilled_at_;
};

}  // namespace perimeter::mcpguard
