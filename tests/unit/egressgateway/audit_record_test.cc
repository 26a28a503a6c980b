#include "gateway/audit_record.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace perimeter::egressgateway {
namespace {

TEST(AuditRecord, OneLineWithEveryField) {
  AuditRecord record;
  record.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1780000000123));
  record.environment = "team-a/agents";
  record.session = "s1";
  record.client = "10.128.0.7:40000";
  record.host = "api.anthropic.com";
  record.port = 443;
  record.upstream = "160.79.104.10:443";
  record.allowed = true;
  record.reason = "ok";
  record.bytes_up = 1200;
  record.bytes_down = 34000;
  record.duration_ms = 812;
  const auto line = audit_line(record);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const auto parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["time"], "2026-05-28T20:26:40.123Z");
  EXPECT_EQ(parsed["environment"], "team-a/agents");
  EXPECT_EQ(parsed["session"], "s1");
  EXPECT_EQ(parsed["client"], "10.128.0.7:40000");
  EXPECT_EQ(parsed["host"], "api.anthropic.com");
  EXPECT_EQ(parsed["port"], 443);
  EXPECT_EQ(parsed["upstream"], "160.79.104.10:443");
  EXPECT_EQ(parsed["decision"], "allowed");
  EXPECT_EQ(parsed["reason"], "ok");
  EXPECT_EQ(parsed["bytes_up"], 1200);
  EXPECT_EQ(parsed["bytes_down"], 34000);
  EXPECT_EQ(parsed["duration_ms"], 812);
}

TEST(AuditRecord, UnknownPartsAreNullAndBadUtf8DoesNotThrow) {
  AuditRecord record;
  record.client = "127.0.0.1:1";
  record.reason = "bad_credentials";
  record.session = "\xff";
  const auto parsed = nlohmann::json::parse(audit_line(record));
  EXPECT_TRUE(parsed["environment"].is_null());
  EXPECT_TRUE(parsed["host"].is_null());
  EXPECT_TRUE(parsed["port"].is_null());
  EXPECT_TRUE(parsed["upstream"].is_null());
  EXPECT_EQ(parsed["decision"], "denied");
  EXPECT_TRUE(parsed["session"].is_string());
}

}  // namespace
}  // namespace perimeter::egressgateway
