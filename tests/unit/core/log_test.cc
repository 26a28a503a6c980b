#include "core/log.h"

#include <gtest/gtest.h>

#include "core/capturing_log_sink.h"

namespace perimeter {
namespace {

TEST(LoggerTest, WritesOneJsonObjectPerLineWithFields) {
  auto sink = std::make_shared<testing::CapturingLogSink>();
  Logger logger("runner", sink);
  logger.info("lease renewed", {{"work_id", "work_1"}, {"ttl_seconds", 90}});
  const auto lines = sink->lines();
  ASSERT_EQ(lines.size(), 1u);
  const auto parsed = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(parsed["level"], "info");
  EXPECT_EQ(parsed["component"], "runner");
  EXPECT_EQ(parsed["msg"], "lease renewed");
  EXPECT_EQ(parsed["work_id"], "work_1");
  EXPECT_EQ(parsed["ttl_seconds"], 90);
  EXPECT_TRUE(parsed["ts"].is_string());
}

TEST(LoggerTest, DropsLinesBelowTheMinimumLevel) {
  auto sink = std::make_shared<testing::CapturingLogSink>();
  Logger logger("operator", sink, LogLevel::kWarn);
  logger.info("quiet");
  logger.warn("loud");
  ASSERT_EQ(sink->lines().size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(sink->lines()[0])["msg"], "loud");
}

TEST(LoggerTest, InvalidUtf8IsReplacedNotThrown) {
  auto sink = std::make_shared<testing::CapturingLogSink>();
  Logger logger("sim", sink);
  logger.error("bad bytes", {{"body", std::string("\xff\xfe ok")}});
  ASSERT_EQ(sink->lines().size(), 1u);
  EXPECT_NO_THROW(nlohmann::json::parse(sink->lines()[0]));
}

TEST(LoggerTest, ChildLoggersNameTheirSubComponent) {
  auto sink = std::make_shared<testing::CapturingLogSink>();
  Logger logger("operator", sink);
  logger.child("poller").info("x");
  EXPECT_EQ(nlohmann::json::parse(sink->lines()[0])["component"], "operator.poller");
}

TEST(LogLevelTest, ParsesKnownNamesAndRejectsOthers) {
  LogLevel level{};
  EXPECT_TRUE(parse_log_level("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(parse_log_level("warn", &level));
  EXPECT_EQ(level, LogLevel::kWarn);
  EXPECT_FALSE(parse_log_level("verbose", &level));
}

}  // namespace
}  // namespace perimeter
