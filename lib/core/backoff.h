#pragma once

#include <chrono>

#include "core/random.h"

namespace perimeter {

// Exponential backoff: the n-th delay (n counted from 0) is
//   min(max, initial * multiplier^n) scaled by a factor drawn uniformly from
//   [1 - jitter, 1 + jitter), then capped at max again.
// Jitter spreads retries of many clients that failed together so they do not return together.
struct BackoffPolicy {
  std::chrono::milliseconds initial{1000};
  std::chrono::milliseconds max{60000};
  double multiplier = 2.0;
  double jitter = 0.2;  // fraction in [0, 1]
};

class Backoff {
 public:
  Backoff(BackoffPolicy policy, RandomSource& random) : policy_(policy), random_(&random) {}

  // The delay before the next attempt; each call advances the attempt count.
  std::chrono::milliseconds next();
  // Back to the initial delay, after a success.
  void reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }
  const BackoffPolicy& policy() const { return policy_; }

  // The un-jittered delay for a given attempt; pure, for rate limiters that keep their own counts.
  static std::chrono::milliseconds base_delay(const BackoffPolicy& policy, int attempt);

 private:
  BackoffPolicy policy_;
  RandomSource* random_;
  int attempt_ = 0;
};

}  // namespace perimeter
