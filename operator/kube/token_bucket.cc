#include "kube/token_bucket.h"

#include <algorithm>
#include <cmath>

namespace perimeter::kube {

TokenBucket::TokenBucket(double qps, int burst, Clock& clock)
    : qps_(qps),
      burst_(std::max(1, burst)),
      interval_(std::chrono::duration_cast<Clock::Duration>(
          std::chrono::duration<double>(qps > 0 ? 1.0 / qps : 0.0))),
      clock_(clock),
      theoretical_arrival_(clock.now()) {}

Clock::Duration TokenBucket::reserve() {
  if (qps_ <= 0) return Clock::Duration::zero();  // unlimited
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  theoretical_arrival_ = std::max(theoretical_arrival_, now);
  // Up to burst-1 intervals of credit may be outstanding before a caller has to wait.
  const auto allowance = interval_ * (burst_ - 1);
  const auto wait = theoretical_arrival_ - now - allowance;
  theoretical_arrival_ += interval_;
  return std::max(Clock::Duration::zero(), wait);
}

}  // namespace perimeter::kube
