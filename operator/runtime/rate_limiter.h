#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/token_bucket.h"

namespace perimeter::runtime {

// How long a failed key waits before its next try (client-go's workqueue.RateLimiter).
class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // The delay for this key's next retry; counts one more failure.
  virtual Clock::Duration when(const std::string& key) = 0;
  // The key succeeded: start its backoff afresh.
  virtual void forget(const std::string& key) = 0;
  virtual int num_requeues(const std::string& key) = 0;
};

// base * 2^failures per key, capped (client-go: 5 ms -> 1000 s). No jitter: the global bucket
// below, not randomness, spreads a thundering herd, and exact delays keep tests exact.
class ItemExponentialRateLimiter final : public RateLimiter {
 public:
  ItemExponentialRateLimiter(Clock::Duration base, Clock::Duration max);
  Clock::Duration when(const std::string& key) override;
  void forget(const std::string& key) override;
  int num_requeues(const std::string& key) override;

 private:
  Clock::Duration base_;
  Clock::Duration max_;
  std::mutex mutex_;
  std::map<std::string, int> failures_;
};

// One token bucket for all keys: overall retry rate stays bounded however many keys fail.
class BucketRateLimiter final : public RateLimiter {
 public:
  BucketRateLimiter(double qps, int burst, Clock& clock) : bucket_(qps, burst, clock) {}
  Clock::Duration when(const std::string&) override { return bucket_.reserve(); }
  void forget(const std::string&) override {}
  int num_requeues(const std::string&) override { return 0; }

 private:
  TokenBucket bucket_;
};

// The longest delay of several limiters (client-go's MaxOfRateLimiter).
class MaxOfRateLimiter final : public RateLimiter {
 public:
  explicit MaxOfRateLimiter(std::vector<std::unique_ptr<RateLimiter>> limiters);
  Clock::Duration when(const std::string& key) override;
  void forget(const std::string& key) override;
  int num_requeues(const std::string& key) override;

 private:
  std::vector<std::unique_ptr<RateLimiter>> limiters_;
};

// client-go's DefaultControllerRateLimiter: per-key 5 ms -> 1000 s, under 10 qps / burst 100.
std::unique_ptr<RateLimiter> default_controller_rate_limiter(Clock& clock);

}  // namespace perimeter::runtime
