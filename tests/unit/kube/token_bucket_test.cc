#include "kube/token_bucket.h"

#include <gtest/gtest.h>

#include "core/fake_clock.h"

namespace perimeter::kube {
namespace {

using std::chrono::milliseconds;

TEST(TokenBucketTest, BurstIsFreeThenEachCallWaitsOneIntervalMore) {
  testing::FakeClock clock;
  TokenBucket bucket(10.0, 3, clock);
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(0));
  EXPECT_EQ(bucket.reserve(), milliseconds(100));
  EXPECT_EQ(bucket.reserve(), milliseconds(200));
}

TEST(TokenBucketTest, TimeRefillsTheBucketUpToTheBurst) {
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

TEST(TokenBucketTest, ZeroQpsMeansUnlimited) {
  testing::FakeClock clock;
  TokenBucket bucket(0.0, 1, clock);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(bucket.reserve(), milliseconds(0));
}

}  // namespace
}  // namespace perimeter::kube
