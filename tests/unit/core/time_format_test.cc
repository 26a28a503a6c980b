#include "core/time_format.h"

#include <gtest/gtest.h>

namespace perimeter {
namespace {

TEST(TimeFormatTest, FormatsUtcWithWholeSeconds) {
  const auto time =
      std::chrono::system_clock::from_time_t(1795420800) + std::chrono::milliseconds(750);
  EXPECT_EQ(format_rfc3339(time), "2026-11-23T08:00:00Z");
}

TEST(TimeFormatTest, TheApiFormKeepsMicroseconds) {
  const auto time =
      std::chrono::system_clock::from_time_t(1795420800) + std::chrono::microseconds(750042);
  EXPECT_EQ(format_rfc3339_micros(time), "2026-11-23T08:00:00.750042Z");
  EXPECT_EQ(format_rfc3339_micros(std::chrono::system_clock::from_time_t(1795420800)),
            "2026-11-23T08:00:00.000000Z");
}

TEST(TimeFormatTest, LogAndAuditLinesKeepMilliseconds) {
  const auto time =
      std::chrono::system_clock::from_time_t(1795420800) + std::chrono::microseconds(750999);
  EXPECT_EQ(format_rfc3339_millis(time), "2026-11-23T08:00:00.750Z");
  EXPECT_EQ(format_rfc3339_millis(std::chrono::system_clock::from_time_t(1795420800)),
            "2026-11-23T08:00:00.000Z");
  // Before the epoch the fraction still counts up from the second before.
  EXPECT_EQ(format_rfc3339_millis(std::chrono::system_clock::from_time_t(0) -
                                  std::chrono::milliseconds(1)),
            "1969-12-31T23:59:59.999Z");
}

TEST(TimeFormatTest, ParsesWhatItFormatsAndKubernetesTimestamps) {
  const auto time = std::chrono::system_clock::from_time_t(1795420800);
  EXPECT_EQ(parse_rfc3339(format_rfc3339(time)), time);
  EXPECT_EQ(parse_rfc3339("2026-11-23T08:00:00.123456Z"), time);
  EXPECT_FALSE(parse_rfc3339("yesterday").has_value());
  EXPECT_FALSE(parse_rfc3339("").has_value());
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), std::chrono::system_clock::from_time_t(0));
  EXPECT_EQ(parse_rfc3339("2000-02-29T12:34:56Z"),
            std::chrono::system_clock::from_time_t(951827696));  // a leap day
  for (const char* wrong : {"2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-23T24:00:00Z",
                            "2026-11-23T08:60:00Z", "2026-11-23 08:00:00Z", "2026-11-2X08:00:00Z",
                            "2026-11-23T08:00"}) {
    EXPECT_FALSE(parse_rfc3339(wrong).has_value()) << wrong;
  }
}

TEST(TimeFormatTest, TheMicrosecondParserKeepsTheFraction) {
  const auto time =
      std::chrono::system_clock::from_time_t(1795420800) + std::chrono::microseconds(750042);
  EXPECT_EQ(parse_rfc3339_micros(format_rfc3339_micros(time)), time);
  EXPECT_EQ(parse_rfc3339_micros("2026-11-23T08:00:00.75Z"),
            std::chrono::system_clock::from_time_t(1795420800) + std::chrono::milliseconds(750));
  EXPECT_EQ(parse_rfc3339_micros("2026-11-23T08:00:00Z"),
            std::chrono::system_clock::from_time_t(1795420800));
  EXPECT_FALSE(parse_rfc3339_micros("yesterday").has_value());
}

}  // namespace
}  // namespace perimeter
