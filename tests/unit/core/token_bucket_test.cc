#include "core/token_bucket.h"

#include <gtest/gtest.h>

#include "core/fake_clock.h"

namespace perimeter {
namespace {

using std::chrono::milliseconds;

// ---- reserve(): always takes a token, says how long to wait ----

TEST(TokenBucketReserve, BurstIsFreeThenEachCallWaitsOneIntervalMore) {
  testing::FakeClock clock;
  TokenBucket bucket(10.0, 3, clock);
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(100));
  EXPECT_EQ(bucket.reserve(), milliseconds(200));
}

TEST(TokenBucketReserve, TimeRefillsTheBucketUpToTheBurst) {
  testing::FakeClock clock;
  TokenBucket bucket(10.0, 2, clock);
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(100));
  clock.advance(milliseconds(150));  // the reserved token was used at +100 ms; half a token back
  EXPECT_EQ(bucket.reserve(), milliseconds(50));
  clock.advance(std::chrono::seconds(10));  // long idle: only `burst` tokens come back
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(100));
}

TEST(TokenBucketReserve, ZeroRateMeansUnlimited) {
  testing::FakeClock clock;
  TokenBucket bucket(0.0, 1, clock);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_TRUE(bucket.try_acquire(1000));
}

// ---- try_acquire(): takes tokens only when held, else refuses ----

TEST(TokenBucketTryAcquire, StartsFullAndRefusesPastTheBurst) {
  testing::FakeClock clock;
  TokenBucket bucket(2, 3, clock);
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_TRUE(bucket.try_acquire());
  milliseconds retry_after{0};
  EXPECT_FALSE(bucket.try_acquire(1, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(500));  // one token at 2 a second
}

TEST(TokenBucketTryAcquire, RefillsWithTimeUpToTheBurst) {
  testing::FakeClock clock;
  TokenBucket bucket(10, 5, clock);
  EXPECT_TRUE(bucket.try_acquire(5));
  EXPECT_FALSE(bucket.try_acquire());
  clock.advance(milliseconds(100));
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_FALSE(bucket.try_acquire());
  clock.advance(std::chrono::hours(1));  // never more than the burst
  EXPECT_TRUE(bucket.try_acquire(5));
  EXPECT_FALSE(bucket.try_acquire());
}

TEST(TokenBucketTryAcquire, ARefusalTakesNothing) {
  testing::FakeClock clock;
  TokenBucket bucket(1, 4, clock);
  EXPECT_TRUE(bucket.try_acquire(3));
  milliseconds retry_after{0};
  EXPECT_FALSE(bucket.try_acquire(2, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(1000));
  EXPECT_TRUE(bucket.try_acquire(1));  // the one token left was not taken by the refusal
}

TEST(TokenBucketTryAcquire, MoreThanTheBurstWaitsForAFullBucket) {
  testing::FakeClock clock;
  TokenBucket bucket(4, 2, clock);
  EXPECT_TRUE(bucket.try_acquire(2));
  milliseconds retry_after{0};
  EXPECT_FALSE(bucket.try_acquire(3, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(500));
}

TEST(TokenBucketTryAcquire, AFractionalRateAndBurstKeepExactWaits) {
  testing::FakeClock clock;
  TokenBucket bucket(0.5, 1.5, clock);  // a token every 2 s, one and a half held
  EXPECT_TRUE(bucket.try_acquire());
  milliseconds retry_after{0};
  EXPECT_FALSE(bucket.try_acquire(1, &retry_after));
  EXPECT_EQ(retry_after, milliseconds(1000));  // half a token held; the other half takes 1 s
  clock.advance(milliseconds(1000));
  EXPECT_TRUE(bucket.try_acquire());
}

// Both ways share one bucket: reservations count against what try_acquire finds.
TEST(TokenBucket, ReservationsAndAcquisitionsDrawOnTheSameTokens) {
  testing::FakeClock clock;
  TokenBucket bucket(10, 2, clock);
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_FALSE(bucket.try_acquire());
  EXPECT_EQ(bucket.reserve(), milliseconds(100));
}

}  // namespace
}  // namespace perimeter
