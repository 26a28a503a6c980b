#include "core/backoff.h"

#include <algorithm>
#include <cmath>

namespace perimeter {

std::chrono::milliseconds Backoff::base_delay(const BackoffPolicy& policy, int attempt) {
  const double initial = static_cast<double>(policy.initial.count());
  const double cap = static_cast<double>(policy.max.count());
  // Stop multiplying once past the cap so large attempt counts cannot overflow.
  double delay = initial;
  for (int i = 0; i < attempt && delay < cap; ++i) delay *= policy.multiplier;
  return std::chrono::milliseconds(static_cast<long long>(std::min(delay, cap)));
}

std::chrono::milliseconds Backoff::next() {
  const auto base = base_delay(policy_, attempt_);
  ++attempt_;
  const double jitter = std::clamp(policy_.jitter, 0.0, 1.0);
  const double factor = 1.0 - jitter + 2.0 * jitter * random_->uniform01();
  const double jittered = std::round(static_cast<double>(base.count()) * factor);
  const double capped = std::min(jittered, static_cast<double>(policy_.max.count()));
  return std::chrono::milliseconds(static_cast<long long>(std::max(0.0, capped)));
}

}  // namespace perimeter
