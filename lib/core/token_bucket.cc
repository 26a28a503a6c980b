#include "core/token_bucket.h"

#include <algorithm>

namespace perimeter {

TokenBucket::TokenBucket(double rate_per_second, double burst, const Clock& clock)
    : rate_(rate_per_second),
      burst_(std::max(1.0, burst)),
      interval_(std::chrono::duration_cast<Clock::Duration>(
          std::chrono::duration<double>(rate_per_second > 0 ? 1.0 / rate_per_second : 0.0))),
      clock_(clock),
      theoretical_arrival_(clock.now()) {}

Clock::Duration TokenBucket::cost(double tokens) const {
  return std::chrono::duration_cast<Clock::Duration>(
      std::chrono::duration<double, Clock::Duration::period>(interval_.count() * tokens));
}

Clock::Duration TokenBucket::reserve() {
  if (rate_ <= 0) return Clock::Duration::zero();
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  theoretical_arrival_ = std::max(theoretical_arrival_, now);
  // Up to burst-1 tokens of credit may be outstanding before a caller has to wait.
  const auto wait = theoretical_arrival_ - now - cost(burst_ - 1);
  theoretical_arrival_ += interval_;
  return std::max(Clock::Duration::zero(), wait);
}

bool TokenBucket::try_acquire(double tokens, std::chrono::milliseconds* retry_after) {
  if (rate_ <= 0) return true;
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  const auto start = std::max(theoretical_arrival_, now);
  // Admitted when the debt after taking them stays within what a full bucket holds.
  const auto excess = start + cost(tokens) - now - cost(burst_);
  if (excess <= Clock::Duration::zero()) {
    theoretical_arrival_ = start + cost(tokens);
    return true;
  }
  if (retry_after != nullptr) {
    const auto wait = start + cost(std::min(tokens, burst_)) - now - cost(burst_);
    *retry_after =
        std::chrono::ceil<std::chrono::milliseconds>(std::max(Clock::Duration::zero(), wait));
  }
  return false;
}

}  // namespace perimeter
