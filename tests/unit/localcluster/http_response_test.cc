#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>

#include "localcluster/http_client.h"

namespace perimeter::localcluster {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Hands out the scripted pieces one read at a time; an empty piece is a read timeout.
class ScriptedSource : public ByteSource {
 public:
  explicit ScriptedSource(std::deque<std::string> pieces) : pieces_(std::move(pieces)) {}
  long read_some(char* buffer, size_t size) override {
    if (pieces_.empty()) return 0;
    std::string& front = pieces_.front();
    if (front.empty()) {
      pieces_.pop_front();
      return -1;
    }
    size_t n = std::min(size, front.size());
    front.copy(buffer, n);
    front.erase(0, n);
    if (front.empty()) pieces_.pop_front();
    return static_cast<long>(n);
  }

 private:
  std::deque<std::string> pieces_;
};

HttpResponse parse(
    std::deque<std::string> pieces, std::string* body,
    std::function<bool()> keep_waiting = [] { return true; }) {
  ScriptedSource source(std::move(pieces));
  return read_http_response(
      source, nullptr,
      [body](std::string_view bytes) {
        body->append(bytes);
        return true;
      },
      keep_waiting);
}

TEST(HttpResponseTest, ContentLengthBodyAcrossManyReads) {
  std::string body;
  auto response = parse(
      {"HTTP/1.1 200 OK\r\nContent-Le", "ngth: 11\r\nX-Thing:  spaced \r\n\r\nhello", " world"},
      &body);
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(body, "hello world");
  EXPECT_EQ(response.headers["x-thing"], "spaced");
  EXPECT_EQ(response.headers["content-length"], "11");
}

TEST(HttpResponseTest, ChunkedBodyWithExtensionsAndTrailers) {
  std::string body;
  auto response =
      parse({"HTTP/1.1 422 Unprocessable Entity\r\nTransfer-Encoding: chunked\r\n\r\n",
             "5;name=value\r\nhello\r\n", "1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\n"},
            &body);
  EXPECT_EQ(response.status, 422);
  EXPECT_EQ(body, "hello world!");
}

TEST(HttpResponseTest, BodyUntilCloseWithoutFraming) {
  std::string body;
  auto response = parse({"HTTP/1.0 500 Internal\r\n\r\npartial ", "then closed"}, &body);
  EXPECT_EQ(response.status, 500);
  EXPECT_EQ(body, "partial then closed");
}

TEST(HttpResponseTest, ReadTimeoutsAreRetriedWhileTheCallerWaits) {
  std::string body;
  int asked = 0;
  auto response = parse({"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "", "", "ok"}, &body, [&] {
    ++asked;
    return true;
  });
  EXPECT_EQ(body, "ok");
  EXPECT_EQ(asked, 2);
}

TEST(HttpResponseTest, CallerCanAbandonAWaitingResponse) {
  std::string body;
  ScriptedSource source({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", ""});
  auto response = read_http_response(
      source, nullptr,
      [&](std::string_view bytes) {
        body.append(bytes);
        return true;
      },
      [] { return false; });
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(body, "abc");
}

TEST(HttpResponseTest, HeadIsSeenBeforeTheBody) {
  ScriptedSource source({"HTTP/1.1 410 Gone\r\nContent-Length: 4\r\n\r\ngone"});
  std::vector<std::string> order;
  read_http_response(
      source,
      [&](const HttpResponse& head) { order.push_back("head " + std::to_string(head.status)); },
      [&](std::string_view bytes) {
        order.push_back("body " + std::string(bytes));
        return true;
      },
      [] { return true; });
  EXPECT_THAT(order, ElementsAre("head 410", "body gone"));
}

TEST(HttpResponseTest, MalformedResponsesSayWhatIsWrong) {
  std::string body;
  EXPECT_THAT([&] { parse({"SSH-2.0-OpenSSH\r\n"}, &body); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("not an HTTP response")));
  EXPECT_THAT([&] { parse({"HTTP/1.1 abc OK\r\n\r\n"}, &body); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("bad HTTP status line")));
  EXPECT_THAT([&] { parse({"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"}, &body); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("bad HTTP header")));
  EXPECT_THAT(
      [&] { parse({"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"}, &body); },
      ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("5 bytes of the body missing")));
  EXPECT_THAT(
      [&] { parse({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}, &body); },
      ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("bad chunk size")));
  EXPECT_THAT([&] { parse({}, &body); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("closed before a response")));
}

TEST(LineSplitterTest, SplitsAcrossFeedsAndSkipsBlankLines) {
  LineSplitter splitter;
  std::vector<std::string> lines;
  auto collect = [&](std::string_view line) {
    lines.emplace_back(line);
    return true;
  };
  EXPECT_TRUE(splitter.feed("{\"type\":\"ADD", collect));
  EXPECT_TRUE(splitter.feed("ED\"}\n\r\n{\"type\":\"DELETED\"}\r\n{\"par", collect));
  EXPECT_THAT(lines, ElementsAre("{\"type\":\"ADDED\"}", "{\"type\":\"DELETED\"}"));
}

TEST(LineSplitterTest, StopsWhenTheConsumerSaysSo) {
  LineSplitter splitter;
  int seen = 0;
  EXPECT_FALSE(splitter.feed("a\nb\nc\n", [&](std::string_view) { return ++seen < 2; }));
  EXPECT_EQ(seen, 2);
}

TEST(HttpClientConfigTest, RejectsUrlsItCannotServe) {
  HttpClientConfig config;
  config.base_url = "ftp://127.0.0.1:21";
  EXPECT_THAT([&] { HttpClient client(config); }, ::testing::ThrowsMessage<std::invalid_argument>(
                                                      HasSubstr("want http:// or https://")));
  config.base_url = "http://127.0.0.1:notaport";
  EXPECT_THAT([&] { HttpClient client(config); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("bad port")));
  config.base_url = "https://127.0.0.1:6443";
  config.ca_file = "/nonexistent/ca.crt";
  EXPECT_THAT([&] { HttpClient client(config); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("/nonexistent/ca.crt")));
}

}  // namespace
}  // namespace perimeter::localcluster
