#include "agentapi/sse_parser.h"

#include <gtest/gtest.h>

namespace perimeter::agentapi {
namespace {

TEST(SseParserTest, JoinsDataLinesAndIgnoresComments) {
  SseParser parser;
  const auto frames = parser.feed(": hello\nevent: a\nid: 1\ndata: x\ndata:y\n\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].event, "a");
  EXPECT_EQ(frames[0].id, "1");
  EXPECT_EQ(frames[0].data, "x\ny");
  EXPECT_EQ(parser.last_event_id(), "1");
}

TEST(SseParserTest, HandlesCrLfAndCrSplitAcrossFeeds) {
  SseParser parser;
  EXPECT_TRUE(parser.feed("event: b\r").empty());
  EXPECT_TRUE(parser.feed("\ndata: 1\r").empty());
  const auto frames = parser.feed("\r\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].event, "b");
  EXPECT_EQ(frames[0].data, "1");
}

TEST(SseParserTest, AFrameWithoutAnEventNameKeepsAnEmptyName) {
  SseParser parser;
  const auto frames = parser.feed("data: z\n\n\n\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].event, "");
  EXPECT_EQ(frames[0].data, "z");
}

}  // namespace
}  // namespace perimeter::agentapi
