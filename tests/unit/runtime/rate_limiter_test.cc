#include "runtime/rate_limiter.h"

#include <gtest/gtest.h>

#include "core/fake_clock.h"

namespace perimeter::runtime {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(ItemExponentialRateLimiterTest, DoublesPerKeyFromFiveMillisecondsToTheCap) {
  ItemExponentialRateLimiter limiter(milliseconds(5), seconds(1000));
  EXPECT_EQ(limiter.when("a"), milliseconds(5));
  EXPECT_EQ(limiter.when("a"), milliseconds(10));
  EXPECT_EQ(limiter.when("a"), milliseconds(20));
  EXPECT_EQ(limiter.when("b"), milliseconds(5));  // keys back off independently
  EXPECT_EQ(limiter.num_requeues("a"), 3);
  for (int i = 0; i < 100; ++i) limiter.when("a");
  EXPECT_EQ(limiter.when("a"), seconds(1000));
  limiter.forget("a");
  EXPECT_EQ(limiter.num_requeues("a"), 0);
  EXPECT_EQ(limiter.when("a"), milliseconds(5));
}

TEST(ItemExponentialRateLimiterTest, ReachesTheCapAfterExactlyTheExpectedFailures) {
  ItemExponentialRateLimiter limiter(milliseconds(5), seconds(1000));
  // 5 ms * 2^17 = 655.36 s < 1000 s; 2^18 would be 1310.72 s, so the 19th failure is capped.
  for (int i = 0; i < 17; ++i) limiter.when("k");
  EXPECT_EQ(limiter.when("k"), milliseconds(655360));
  EXPECT_EQ(limiter.when("k"), seconds(1000));
}

TEST(DefaultControllerRateLimiterTest, TheGlobalBucketWinsOncePerKeyDelaysAreShort) {
  testing::FakeClock clock;
  auto limiter = default_controller_rate_limiter(clock);
  // 100 distinct keys fail once: per-key 5 ms each, the bucket's burst absorbs them.
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(limiter->when("key-" + std::to_string(i)), milliseconds(5));
  // The 101st failure in the same instant waits for the bucket (10 qps): 100 ms, then 200 ms.
  EXPECT_EQ(limiter->when("key-100"), milliseconds(100));
  EXPECT_EQ(limiter->when("key-101"), milliseconds(200));
  // A key deep in its own backoff keeps its longer per-key delay.
  for (int i = 0; i < 10; ++i) limiter->when("slow");
  clock.advance(seconds(100));
  EXPECT_EQ(limiter->when("slow"), milliseconds(5 * 1024));
  EXPECT_EQ(limiter->num_requeues("slow"), 11);
}

}  // namespace
}  // namespace perimeter::runtime
