#pragma once

#include <chrono>
#include <mutex>

#include "core/clock.h"

namespace perimeter::kube {

// A token bucket that hands out reservations, like golang.org/x/time/rate's Reserve(): the
// first `burst` calls are free, then each call waits 1/qps longer than the one before, and time
// passing refills the bucket. Kept as a "theoretical arrival time" in integer clock ticks, so
// delays are exact (no floating-point drift) and tests can assert them.
class TokenBucket {
 public:
  TokenBucket(double qps, int burst, Clock& clock);

  // Takes one token and returns how long the caller must wait before using it (zero when a
  // token was available).
  Clock::Duration reserve();
  double qps() const { return qps_; }
  int burst() const { return burst_; }

 private:
  double qps_;
  int burst_;
  Clock::Duration interval_;
  Clock& clock_;
  std::mutex mutex_;
  Clock::TimePoint theoretical_arrival_;
};

}  // namespace perimeter::kube
