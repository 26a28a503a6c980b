#pragma once

#include <chrono>
#include <mutex>

#include "core/clock.h"

namespace perimeter {

// A token bucket: `rate_per_second` tokens a second, at most `burst` held, full at the start. Kept
// as golang.org/x/time/rate and GCRA keep it, as the "theoretical arrival time" of the next token
// in integer clock ticks, so waits are exact (no floating-point drift) and tests can assert them.
// Thread-safe. Two ways to take tokens:
//  - reserve(): always takes one, and says how long to wait before using it (client-side
//    throttling: the Kubernetes client, Event recording);
//  - try_acquire(): takes tokens only when they are held now, else refuses and says when they
//    would be (admission: the MCP guard's per-route rate limit answers 429 with Retry-After).
// A rate of zero or less means no limit.
class TokenBucket {
 public:
  TokenBucket(double rate_per_second, double burst, const Clock& clock);

  // Takes one token; returns how long the caller must wait before using it (zero when one was
  // held).
  Clock::Duration reserve();
  // Takes `tokens` when that many are held; otherwise takes none and returns false, with
  // `retry_after` (when given) set to the wait until they would be (for more than `burst`
  // tokens, which are never held at once: until the bucket is full).
  bool try_acquire(double tokens = 1, std::chrono::milliseconds* retry_after = nullptr);

  double rate_per_second() const { return rate_; }
  double burst() const { return burst_; }

 private:
  Clock::Duration cost(double tokens) const;

  double rate_;
  double burst_;
  Clock::Duration interval_;  // one token's worth of time
  const Clock& clock_;
  std::mutex mutex_;
  Clock::TimePoint theoretical_arrival_;  // guarded by mutex_
};

}  // namespace perimeter
