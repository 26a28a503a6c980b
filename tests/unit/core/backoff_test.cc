#include "core/backoff.h"

#include <gtest/gtest.h>

#include "core/fake_random.h"

namespace perimeter {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, DoublesFromInitialUpToTheCapWithoutJitter) {
  testing::FakeRandom random;
  Backoff backoff({milliseconds(1000), milliseconds(60000), 2.0, 0.0}, random);
  const long long expected[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
  for (long long want : expected) EXPECT_EQ(backoff.next(), milliseconds(want));
  EXPECT_EQ(backoff.attempts(), 8);
}

TEST(BackoffTest, JitterScalesWithinTheBandAndNeverPassesTheCap) {
  testing::FakeRandom random;
  random.push(0.0);   // lowest factor: 1 - jitter
  random.push(0.5);   // factor 1
  random.push(0.99);  // close to 1 + jitter, capped at max
  Backoff backoff({milliseconds(1000), milliseconds(2100), 2.0, 0.2}, random);
  EXPECT_EQ(backoff.next(), milliseconds(800));
  EXPECT_EQ(backoff.next(), milliseconds(2000));
  EXPECT_EQ(backoff.next(), milliseconds(2100));
}

TEST(BackoffTest, ResetStartsOverFromTheInitialDelay) {
  testing::FakeRandom random;
  Backoff backoff({milliseconds(5), milliseconds(1000000), 2.0, 0.0}, random);
  backoff.next();
  backoff.next();
  backoff.reset();
  EXPECT_EQ(backoff.attempts(), 0);
  EXPECT_EQ(backoff.next(), milliseconds(5));
}

TEST(BackoffTest, HugeAttemptCountsStayAtTheCap) {
  const BackoffPolicy policy{milliseconds(5), milliseconds(1000000), 2.0, 0.0};
  EXPECT_EQ(Backoff::base_delay(policy, 10000), milliseconds(1000000));
  EXPECT_EQ(Backoff::base_delay(policy, 0), milliseconds(5));
  EXPECT_EQ(Backoff::base_delay(policy, 3), milliseconds(40));
}

}  // namespace
}  // namespace perimeter
