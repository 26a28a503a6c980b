#include "mcp/sse_event_splitter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace perimeter::mcpguard {
namespace {

// Feeds `stream` in chunks of `chunk` bytes.
std::vector<RawSseEvent> split(std::string_view stream, std::size_t chunk,
                               SseEventSplitter* splitter) {
  std::vector<RawSseEvent> events;
  for (std::size_t at = 0; at < stream.size(); at += chunk) {
    EXPECT_TRUE(splitter->feed(stream.substr(at, chunk), &events));
  }
  return events;
}

std::vector<RawSseEvent> split(std::string_view stream, std::size_t chunk = 1 << 20) {
  SseEventSplitter splitter(1 << 20);
  return split(stream, chunk, &splitter);
}

std::string joined_raw(const std::vector<RawSseEvent>& events) {
  std::string all;
  for (const auto& e : events) all += e.raw;
  return all;
}

TEST(SseEventSplitterTest, SplitsEventsAndReadsTheirFields) {
  const std::string stream =
      "event: message\nid: 42\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
      "data:first\ndata:  second\ndata\n\n";
  const auto events = split(stream);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].event, "message");
  EXPECT_EQ(events[0].id, "42");
  EXPECT_EQ(events[0].data, R"({"jsonrpc":"2.0","id":1,"result":{}})");
  EXPECT_TRUE(events[0].has_data);
  EXPECT_EQ(events[0].raw,
            "event: message\nid: 42\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n");
  // One leading space is removed, not two; a field without a colon has an empty value.
  EXPECT_EQ(events[1].data, "first\n second\n");
  EXPECT_EQ(events[1].event, "");
  EXPECT_EQ(events[1].id, "");
  EXPECT_EQ(joined_raw(events), stream);
}

TEST(SseEventSplitterTest, EveryChunkingGivesTheSameEventsByteForByte) {
  const std::string stream =
      "\xEF\xBB\xBF"
      ": keep-alive\r\n\r\n"
      "id: 1\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n"
      "data: c\rdata: d\r\r"
      "data: e\n\n"
      ": comment before\nid: 2\ndata: f\r\n\n"
      "retry: 1000\nunknown: x\n\n"
      "data: tail";
  const auto whole = split(stream);
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_FALSE(whole[0].has_data);  // the keep-alive is an event of its own
  EXPECT_EQ(whole[0].raw, "\xEF\xBB\xBF: keep-alive\r\n\r\n");
  EXPECT_EQ(whole[1].data, "a\nb");
  EXPECT_EQ(whole[1].id, "1");
  EXPECT_EQ(whole[1].event, "message");
  EXPECT_EQ(whole[2].data, "c\nd");
  EXPECT_EQ(whole[2].raw, "data: c\rdata: d\r\r");
  EXPECT_EQ(whole[3].data, "e");
  EXPECT_EQ(whole[4].data, "f");  // the comment belongs to the event it precedes
  EXPECT_EQ(whole[4].id, "2");
  EXPECT_EQ(whole[4].raw, ": comment before\nid: 2\ndata: f\r\n\n");
  EXPECT_FALSE(whole[5].has_data);

  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    SseEventSplitter splitter(1 << 20);
    const auto events = split(stream, chunk, &splitter);
    ASSERT_EQ(events.size(), whole.size()) << "chunk " << chunk;
    for (std::size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].data, whole[i].data) << "chunk " << chunk << " event " << i;
      EXPECT_EQ(events[i].id, whole[i].id);
      EXPECT_EQ(events[i].event, whole[i].event);
      EXPECT_EQ(events[i].has_data, whole[i].has_data);
    }
    // Nothing is lost or added, whatever the chunks.
    EXPECT_EQ(joined_raw(events) + splitter.pending(), stream) << "chunk " << chunk;
    EXPECT_EQ(splitter.pending(), "data: tail");
  }
}

TEST(SseEventSplitterTest, ACrAtTheEndOfAChunkThenAnLfIsOneLineEnd) {
  SseEventSplitter splitter(1024);
  std::vector<RawSseEvent> events;
  ASSERT_TRUE(splitter.feed("data: x\r", &events));
  EXPECT_TRUE(events.empty());
  ASSERT_TRUE(splitter.feed("\n\r", &events));
  // The blank line's CR ends the event at once: the client sees it without waiting.
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].raw, "data: x\r\n\r");
  ASSERT_TRUE(splitter.feed("\ndata: y\n\n", &events));
  // The LF that completed the CRLF is no blank line of its own: no empty event appears.
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].data, "y");
  EXPECT_EQ(events[1].raw, "\ndata: y\n\n");
}

TEST(SseEventSplitterTest, IdsWithNulAreIgnored) {
  const auto events = split("id: 7\ndata: a\n\nid: 8" + std::string(1, '\0') + "x\ndata: b\n\n");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].id, "7");
  EXPECT_EQ(events[1].id, "");
}

TEST(SseEventSplitterTest, AnEmptyDataLineIsStillData) {
  const auto events = split("data:\n\nevent: x\n\n");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(events[0].has_data);
  EXPECT_EQ(events[0].data, "");
  EXPECT_FALSE(events[1].has_data);
  EXPECT_EQ(events[1].event, "x");
}

TEST(SseEventSplitterTest, AnEventLargerThanTheLimitSpendsTheSplitter) {
  SseEventSplitter splitter(64);
  std::vector<RawSseEvent> events;
  ASSERT_TRUE(splitter.feed("data: small\n\n", &events));
  ASSERT_EQ(events.size(), 1u);
  // Never ending: cut once past the limit, however it arrives.
  bool ok = true;
  for (int i = 0; i < 100 && ok; ++i) ok = splitter.feed("data: 0123456789\n", &events);
  EXPECT_FALSE(ok);
  EXPECT_LE(splitter.pending().size(), 64u + 17u);
  EXPECT_FALSE(splitter.feed("\n", &events));
  EXPECT_EQ(events.size(), 1u);

  // A whole event over the limit in one chunk is refused too, after the events before it.
  SseEventSplitter whole(64);
  events.clear();
  EXPECT_FALSE(whole.feed("data: a\n\ndata: " + std::string(100, 'x') + "\n\n", &events));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "a");

  // Exactly at the limit passes; one byte over does not.
  SseEventSplitter exact(14);
  events.clear();
  EXPECT_TRUE(exact.feed("data: 123456\n\n", &events));  // 14 bytes
  ASSERT_EQ(events.size(), 1u);
  SseEventSplitter over(13);
  EXPECT_FALSE(over.feed("data: 123456\n\n", &events));
}

TEST(SseEventSplitterTest, ManySmallFeedsOfOneLargeEventStayLinear) {
  // 4 MiB in 1-byte-per-line-ish chunks would take minutes if each feed rescanned from the start.
  SseEventSplitter splitter(8 << 20);
  std::vector<RawSseEvent> events;
  const std::string chunk(64, 'x');
  ASSERT_TRUE(splitter.feed("data: ", &events));
  for (int i = 0; i < (4 << 20) / 64; ++i) ASSERT_TRUE(splitter.feed(chunk, &events));
  ASSERT_TRUE(splitter.feed("\n\n", &events));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data.size(), 4u << 20);
  EXPECT_TRUE(splitter.pending().empty());
}

TEST(SseEventSplitterTest, SerializesAnEventWithNewData) {
  RawSseEvent event;
  event.event = "message";
  event.id = "9";
  EXPECT_EQ(serialize_sse_event(event, R"({"a":1})"), "event: message\nid: 9\ndata: {\"a\":1}\n\n");
  EXPECT_EQ(serialize_sse_event(RawSseEvent{}, "a\nb\r\nc\rd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n");
  EXPECT_EQ(serialize_sse_event(RawSseEvent{}, ""), "data: \n\n");

  // What it writes reads back as the same event.
  event.event = " spaced";
  const std::string data = " lead\n\ntrail\n";
  const auto again = split(serialize_sse_event(event, data));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].event, " spaced");
  EXPECT_EQ(again[0].id, "9");
  EXPECT_EQ(again[0].data, data);
}

}  // namespace
}  // namespace perimeter::mcpguard
