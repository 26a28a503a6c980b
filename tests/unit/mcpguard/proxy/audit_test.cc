#include "proxy/audit.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/time_format.h"

namespace perimeter::mcpguard {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

AuditRecord a_tools_call() {
  AuditRecord record;
  // 2026-11-23T06:00:00.123Z
  record.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1795413600123));
  record.route = "tickets";
  record.session = "s-1";
  record.method = "tools/call";
  record.id = 7;
  record.name = "create_ticket";
  record.upstream_status = 200;
  record.outcome = "result";
  record.duration_ms = 12;
  record.bytes_in = 100;
  record.bytes_out = 200;
  record.arguments = {{"title", "printer on fire"},
                      {"password", "hunter2"},
                      {"nested", {{"API_TOKEN", "abc"}, {"list", {{{"secretValue", "x"}}}}}}};
  record.result = {{"content", {{{"type", "text"}, {"text", "ticket T-1 created"}}}}};
  return record;
}

TEST(AuditLine, MetadataLevelHasEveryFieldInOrderAndNoArgumentText) {
  const std::string line = render_audit_line(a_tools_call(), AuditConfig{});
  EXPECT_EQ(
      line,
      R"({"type":"perimeter.mcp-audit.v1","time":"2026-11-23T06:00:00.123Z","level":"metadata",)"
      R"("route":"tickets","direction":"client","session":"s-1","protocol_version":null,)"
      R"("method":"tools/call","id":7,"name":"create_ticket","decision":"allowed",)"
      R"("reason":null,"upstream_status":200,"outcome":"result","rpc_error_code":null,)"
      R"("duration_ms":12,"bytes_in":100,"bytes_out":200})");
  EXPECT_THAT(line, Not(HasSubstr("printer")));
  EXPECT_THAT(line, Not(HasSubstr("hunter2")));
  EXPECT_THAT(line, Not(HasSubstr("T-1")));
  EXPECT_FALSE(nlohmann::json::parse(line).contains("arguments"));
}

TEST(AuditLine, ABufferUsedAgainHoldsJustTheNewLine) {
  // The guard renders every line into one buffer per thread: what a longer line (a full one,
  // with escapes) left there must not show in the next.
  AuditConfig full;
  full.level = AuditLevel::kFull;
  AuditRecord long_one = a_tools_call();
  long_one.method = std::string(300, '\x01');  // the most an escape takes: 6 bytes a byte
  std::string buffer;
  render_audit_line(long_one, full, &buffer);
  EXPECT_EQ(nlohmann::json::parse(buffer)["method"], long_one.method);
  render_audit_line(a_tools_call(), AuditConfig{}, &buffer);
  EXPECT_EQ(buffer, render_audit_line(a_tools_call(), AuditConfig{}));
  EXPECT_EQ(nlohmann::json::parse(buffer)["method"], "tools/call");
}

TEST(AuditLine, FullLevelRedactsByKeyAtAnyDepth) {
  AuditConfig config;
  config.level = AuditLevel::kFull;
  const auto line = nlohmann::json::parse(render_audit_line(a_tools_call(), config));
  EXPECT_EQ(line["level"], "full");
  EXPECT_EQ(line["arguments"]["title"], "printer on fire");
  EXPECT_EQ(line["arguments"]["password"], "[REDACTED]");
  EXPECT_EQ(line["arguments"]["nested"]["API_TOKEN"], "[REDACTED]");  // case-insensitive glob
  EXPECT_EQ(line["arguments"]["nested"]["list"][0]["secretValue"], "[REDACTED]");
  EXPECT_EQ(line["result"]["content"][0]["text"], "ticket T-1 created");
}

TEST(AuditLine, DeniedServerRequestAndOddStringsStayValidJson) {
  AuditRecord record;
  record.route = "r";
  record.from_server = true;
  record.method = "sampling/\"createMessage\"\n\x01";
  record.id = "abc";
  record.allowed = false;
  record.reason = "policy: deny \"delete_*\"";
  record.rpc_error_code = -32001;
  record.outcome = "error";
  const auto line = nlohmann::json::parse(render_audit_line(record, AuditConfig{}));
  EXPECT_EQ(line["direction"], "server");
  EXPECT_EQ(line["method"], "sampling/\"createMessage\"\n\x01");
  EXPECT_EQ(line["id"], "abc");
  EXPECT_EQ(line["decision"], "denied");
  EXPECT_EQ(line["reason"], "policy: deny \"delete_*\"");
  EXPECT_EQ(line["rpc_error_code"], -32001);
  EXPECT_TRUE(line["upstream_status"].is_null());
  EXPECT_TRUE(line["session"].is_null());
  EXPECT_TRUE(line["name"].is_null());
}

TEST(AuditLine, NotificationHasNullId) {
  AuditRecord record;
  record.route = "r";
  record.method = "notifications/initialized";
  const auto line = nlohmann::json::parse(render_audit_line(record, AuditConfig{}));
  EXPECT_TRUE(line["id"].is_null());
  EXPECT_EQ(line["outcome"], "no_response");
}

TEST(AuditLine, TimeAndNumbersAreWrittenAsTheirOwnFormattersWrite) {
  // The seconds of the time are kept from one line to the next: every line must still say its
  // own time, across seconds, days, years and before the epoch.
  AuditConfig config;
  AuditRecord record = a_tools_call();
  for (const std::int64_t millis :
       {std::int64_t{1795413600123}, std::int64_t{1795413600999}, std::int64_t{1795413601000},
        std::int64_t{1795413601000}, std::int64_t{1795413600000}, std::int64_t{1798761599999},
        std::int64_t{1798761600000}, std::int64_t{0}, std::int64_t{-1}, std::int64_t{-999},
        std::int64_t{-1000}, std::int64_t{-1001}, std::int64_t{951782400005},
        std::int64_t{253402300799999}}) {
    record.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(millis));
    const auto line = nlohmann::json::parse(render_audit_line(record, config));
    EXPECT_EQ(line["time"], format_rfc3339_millis(record.time)) << millis;
  }
  for (const nlohmann::json& id :
       {nlohmann::json(0), nlohmann::json(-7),
        nlohmann::json(std::int64_t{-9223372036854775807 - 1}),
        nlohmann::json(std::uint64_t{18446744073709551615u}), nlohmann::json(1.5),
        nlohmann::json("x\u0001\b"), nlohmann::json(nullptr), nlohmann::json(true)}) {
    record.id = id;
    const std::string text = render_audit_line(record, config);
    const std::string expected =
        id.is_string() || id.is_number()
            ? id.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
            : "null";
    EXPECT_THAT(text, HasSubstr(",\"id\":" + expected + ",")) << id;
  }
  record.upstream_status = std::nullopt;
  record.rpc_error_code = std::int64_t{-9223372036854775807 - 1};
  record.duration_ms = 0;
  record.bytes_in = std::uint64_t{18446744073709551615u};
  const std::string text = render_audit_line(record, config);
  EXPECT_THAT(text, HasSubstr(",\"upstream_status\":null,"));
  EXPECT_THAT(text, HasSubstr(",\"rpc_error_code\":-9223372036854775808,"));
  EXPECT_THAT(text, HasSubstr(",\"duration_ms\":0,\"bytes_in\":18446744073709551615,"));
}

TEST(AuditLine, StringsAreEscapedWhereNeededAndCopiedWholeElsewhere) {
  AuditConfig config;
  AuditRecord record = a_tools_call();
  std::string every_control;
  for (int c = 0; c < 0x20; ++c) every_control += static_cast<char>(c);
  for (const std::string& text :
       {std::string(), std::string("plain"), std::string("\"quoted\" and \\back\\slash\\"),
        every_control, "a" + every_control + "b\"c\\d\xc3\xa9" + "e",
        std::string("\xe2\x82\xac tail\n"), std::string(300, 'x') + "\t"}) {
    record.method = text;
    record.name = text;
    const auto line = nlohmann::json::parse(render_audit_line(record, config));
    EXPECT_EQ(line["method"], text);
    EXPECT_EQ(line["name"], text);
  }
  record.method = std::string("\x01\"\\\n", 4);
  EXPECT_THAT(render_audit_line(record, config), HasSubstr(R"("method":"\u0001\"\\\n")"));
}

void ignore_signal(int) {}

// The guard's audit goes to stdout, in a pod a pipe: lines far larger than the pipe holds reach the
// reader whole and never interleave across threads, even when signals cut writes short (a write
// interrupted after some bytes returns that count, and the sink must go on from there).
TEST(StdoutAuditSinkTest, LinesLargerThanThePipeArriveWholeFromManyThreads) {
  struct sigaction interrupt {};
  interrupt.sa_handler = ignore_signal;  // no SA_RESTART: a blocked write returns what it wrote
  struct sigaction previous {};
  ASSERT_EQ(::sigaction(SIGUSR1, &interrupt, &previous), 0);
  int pipe_ends[2];
  ASSERT_EQ(::pipe(pipe_ends), 0);
  ::fcntl(pipe_ends[1], F_SETPIPE_SZ, 4096);  // the smallest pipe: every line takes many writes
  std::string received;
  std::thread reader([&] {
    char buffer[1024];
    ssize_t n = 0;
    while ((n = ::read(pipe_ends[0], buffer, sizeof buffer)) > 0) received.append(buffer, n);
  });
  const int saved = ::dup(STDOUT_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(pipe_ends[1], STDOUT_FILENO), STDOUT_FILENO);
  constexpr int kThreads = 4;
  constexpr int kLines = 25;
  {
    StdoutAuditSink sink;
    std::vector<std::thread> writers;
    std::atomic<int> done{0};
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&sink, &done, t] {
        for (int i = 0; i < kLines; ++i) {
          // 20,000 bytes of one letter per thread, then the line's number.
          sink.write_line(std::string(20000, static_cast<char>('a' + t)) + std::to_string(i));
        }
        ++done;
      });
    }
    while (done < kThreads) {
      for (auto& writer : writers) ::pthread_kill(writer.native_handle(), SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    for (auto& writer : writers) writer.join();
  }
  ::sigaction(SIGUSR1, &previous, nullptr);
  // Nothing may be printed while stdout is the pipe: the checks come once it is back.
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(pipe_ends[1]);
  reader.join();
  ::close(pipe_ends[0]);

  std::map<char, int> next_line;  // per thread, the number its next line must carry
  std::istringstream lines(received);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    ASSERT_GT(line.size(), 20000u);
    const char letter = line[0];
    ASSERT_EQ(line.find_first_not_of(letter), 20000u) << "lines interleaved";
    EXPECT_EQ(line.substr(20000), std::to_string(next_line[letter]++));
  }
  EXPECT_EQ(count, kThreads * kLines);
  EXPECT_EQ(received.back(), '\n');
}

}  // namespace
}  // namespace perimeter::mcpguard
