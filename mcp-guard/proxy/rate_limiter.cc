#include "proxy/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace perimeter::mcpguard {

RateLimiter::RateLimiter(double rate_per_second, double burst, const Clock& clock)
    : rate_(rate_per_second),
      burst_(burst),
      clock_(clock),
      tokens_(burst),
      refilled_at_(clock.now()) {}

bool RateLimiter::try_acquire(double tokens, std::chrono::milliseconds* retry_after) {
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  if (now > refilled_at_) {
    const double elapsed = std::chrono::duration<double>(now - refilled_at_).count();
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
    refilled_at_ = now;
  }
  if (tokens_ >= tokens) {
    tokens_ -= tokens;
    return true;
  }
  if (retry_after != nullptr) {
    // More than the bucket can ever hold waits as long as a full refill would take.
    const double missing = std::min(tokens, burst_) - tokens_;
    const double seconds = rate_ > 0 ? std::max(0.0, missing) / rate_ : 3600.0;
    *retry_after = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1000)));
  }
  return false;
}

}  // namespace perimeter::mcpguard
