#include "proxy/rate_limiter.h"

#include <gtest/gtest.h>

#include "core/fake_clock.h"

namespace perimeter::mcpguard {
namespace {

using std::chrono::milliseconds;

TEST(RateLimiter, StartsFullAndRefusesPastTheBurst) {
  testing::FakeClock clock;
  RateLimiter limiter(2, 3, clock);
  EXPECT_TRUE(limiter.try_acquire());
  EXPECT_TRUE(limiter.try_acquire());
  EXPECT_TRUE(limiter.try_acquire());
  milliseconds retry_after{0};
  EXPECT_FALSE(limiter.try_acquire(1, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(500));  // one token at 2 a second
}

TEST(RateLimiter, RefillsWithTimeUpToTheBurst) {
  testing::FakeClock clock;
  RateLimiter limiter(10, 5, clock);
  EXPECT_TRUE(limiter.try_acquire(5));
  EXPECT_FALSE(limiter.try_acquire());
  clock.advance(milliseconds(100));
  EXPECT_TRUE(limiter.try_acquire());
  EXPECT_FALSE(limiter.try_acquire());
  clock.advance(std::chrono::hours(1));  // never more than the burst
  EXPECT_TRUE(limiter.try_acquire(5));
  EXPECT_FALSE(limiter.try_acquire());
}

TEST(RateLimiter, ARefusalTakesNothing) {
  testing::FakeClock clock;
  RateLimiter limiter(1, 4, clock);
  EXPECT_TRUE(limiter.try_acquire(3));
  milliseconds retry_after{0};
  EXPECT_FALSE(limiter.try_acquire(2, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(1000));
  EXPECT_TRUE(limiter.try_acquire(1));  // the one token left was not taken by the refusal
}

TEST(RateLimiter, MoreThanTheBurstWaitsForAFullBucket) {
  testing::FakeClock clock;
  RateLimiter limiter(4, 2, clock);
  EXPECT_TRUE(limiter.try_acquire(2));
  milliseconds retry_after{0};
  EXPECT_FALSE(limiter.try_acquire(3, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(500));
}

}  // namespace
}  // namespace perimeter::mcpguard
