#include "proxy/server_requests.h"

#include <gtest/gtest.h>

namespace perimeter::mcpguard {
namespace {

using Clock = std::chrono::steady_clock;

PendingServerRequests::Entry entry(const std::string& method, Clock::time_point sent) {
  PendingServerRequests::Entry result;
  result.record.method = method;
  result.sent = sent;
  return result;
}

TEST(PendingServerRequests, MatchesBySessionAndIdKeepingNumbersAndStringsApart) {
  PendingServerRequests pending(8);
  std::vector<PendingServerRequests::Entry> evicted;
  const auto now = Clock::now();
  pending.add(std::string("s1"), 1, entry("sampling/createMessage", now), &evicted);
  pending.add(std::string("s1"), "1", entry("roots/list", now), &evicted);
  pending.add(std::nullopt, 1, entry("elicitation/create", now), &evicted);
  EXPECT_TRUE(evicted.empty());
  EXPECT_FALSE(pending.take(std::string("s2"), 1));
  const auto roots = pending.take(std::string("s1"), "1");
  ASSERT_TRUE(roots);
  EXPECT_EQ(roots->record.method, "roots/list");
  EXPECT_FALSE(pending.take(std::string("s1"), "1")) << "taken once";
  EXPECT_EQ(pending.take(std::nullopt, 1)->record.method, "elicitation/create");
  EXPECT_EQ(pending.size(), 1u);
}

TEST(PendingServerRequests, EvictsTheOldestPastTheCapacityAndExpiresByAge) {
  PendingServerRequests pending(2);
  std::vector<PendingServerRequests::Entry> out;
  const auto start = Clock::now();
  pending.add(std::string("s"), 1, entry("a", start), &out);
  pending.add(std::string("s"), 2, entry("b", start + std::chrono::seconds(1)), &out);
  pending.add(std::string("s"), 3, entry("c", start + std::chrono::seconds(2)), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].record.method, "a");
  out.clear();
  pending.take_older_than(start + std::chrono::milliseconds(1500), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].record.method, "b");
  out.clear();
  pending.take_all(&out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(pending.size(), 0u);
}

}  // namespace
}  // namespace perimeter::mcpguard
