#include "runner/audit_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/fake_clock.h"

namespace perimeter::runner {
namespace {

using nlohmann::json;

constexpr const char* kToken = "sst_000001deadbeefcafef00d";
// base64url of {"sessions_token":"sst_000001deadbeefcafef00d"}: the form in the pod's env.
constexpr const char* kWorkSecret =
    "eyJzZXNzaW9uc190b2tlbiI6InNzdF8wMDAwMDFkZWFkYmVlZmNhZmVmMDBkIn0";
constexpr const char* kEnvironmentKey = "envkey-Zm9vYmFyYmF6";

class RecordingSink final : public AuditSink {
 public:
  void write_line(std::string_view line) override { lines.emplace_back(line); }
  std::vector<std::string> lines;
};

AuditRecord bash_call() {
  AuditRecord record;
  record.tool_use_id = "tu_1";
  record.tool = "bash";
  record.event_type = "agent.tool_use";
  record.input = {{"command", "ls"}};
  record.decision = AuditDecision::kAllowed;
  record.outcome = "ok";
  record.exit_code = 0;
  record.duration = std::chrono::milliseconds(42);
  record.output = "a.txt\nb.txt";
  return record;
}

class AuditLogTest : public ::testing::Test {
 protected:
  AuditLog make(AuditLevel level) {
    return AuditLog(sink, level, {"sess_1", "work_1", "env_1"},
                    {kToken, kWorkSecret, kEnvironmentKey}, clock);
  }
  json only_line() {
    EXPECT_EQ(sink.lines.size(), 1u);
    return sink.lines.empty() ? json() : json::parse(sink.lines.back());
  }
  perimeter::testing::FakeClock clock;
  RecordingSink sink;
};

TEST_F(AuditLogTest, AMetadataLineHoldsEveryFieldAndNoText) {
  AuditLog log = make(AuditLevel::kMetadata);
  log.record(bash_call());
  const json line = only_line();
  EXPECT_EQ(line["type"], "perimeter.audit.v1");
  EXPECT_EQ(line["level"], "metadata");
  EXPECT_EQ(line["session_id"], "sess_1");
  EXPECT_EQ(line["work_id"], "work_1");
  EXPECT_EQ(line["environment_id"], "env_1");
  EXPECT_EQ(line["tool_use_id"], "tu_1");
  EXPECT_EQ(line["event_type"], "agent.tool_use");
  EXPECT_EQ(line["tool"], "bash");
  // printf '%s' '{"command":"ls"}' | sha256sum
  EXPECT_EQ(line["input_sha256"],
            "sha256:4cf29611a66934862f29acfcc817e30b905c1ab73d5e65831413eb6b454d49db");
  EXPECT_EQ(line["input_bytes"], 16);
  EXPECT_EQ(line["decision"], "allowed");
  EXPECT_TRUE(line["denied_by"].is_null());
  EXPECT_EQ(line["outcome"], "ok");
  EXPECT_EQ(line["exit_code"], 0);
  EXPECT_EQ(line["duration_ms"], 42);
  EXPECT_EQ(line["output_bytes"], 11);
  EXPECT_FALSE(line.contains("input"));
  EXPECT_FALSE(line.contains("output"));
  EXPECT_EQ(sink.lines[0].find("a.txt"), std::string::npos);
  EXPECT_EQ(sink.lines[0].find("\"ls\""), std::string::npos);
  // The fake clock's wall time, in RFC 3339 with milliseconds.
  EXPECT_EQ(line["time"].get<std::string>().size(), std::string("2026-01-01T00:00:00.000Z").size());
  EXPECT_EQ(line["time"].get<std::string>().back(), 'Z');
  EXPECT_EQ(sink.lines[0].find('\n'), std::string::npos) << "one line";
}

TEST_F(AuditLogTest, TheDigestIsOfTheCanonicalInputWhateverItsKeyOrderOrSpacing) {
  const json spaced = json::parse(R"({ "b" : [1, "x"],   "a": 2 })");
  // printf '%s' '{"a":2,"b":[1,"x"]}' | sha256sum
  EXPECT_EQ(AuditLog::input_digest(spaced),
            "sha256:ff0dbc276228342a8b965009d571339643da1a81e0e29d3182d517184abe2834");
  EXPECT_EQ(AuditLog::canonical_input(spaced), R"({"a":2,"b":[1,"x"]})");
  // printf '%s' 'null' | sha256sum: a call without input.
  EXPECT_EQ(AuditLog::input_digest(json()),
            "sha256:74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b");
}

TEST_F(AuditLogTest, EachDecisionKindIsNamed) {
  AuditLog log = make(AuditLevel::kMetadata);
  const std::vector<std::pair<AuditDecision, std::string>> kinds = {
      {AuditDecision::kAllowed, "allowed"},
      {AuditDecision::kAskedAndConfirmed, "asked_and_confirmed"},
      {AuditDecision::kDenied, "denied"},
      {AuditDecision::kNotOwned, "not_owned"},
      {AuditDecision::kAbandoned, "abandoned"}};
  for (const auto& [decision, name] : kinds) {
    AuditRecord record = bash_call();
    record.decision = decision;
    if (decision == AuditDecision::kDenied) {
      record.denied_by = "user";
      record.outcome = "denied";
      record.exit_code.reset();
      record.output.clear();
    }
    log.record(record);
    const json line = json::parse(sink.lines.back());
    EXPECT_EQ(line["decision"], name);
    if (decision == AuditDecision::kDenied) {
      EXPECT_EQ(line["denied_by"], "user");
      EXPECT_EQ(line["outcome"], "denied");
      EXPECT_TRUE(line["exit_code"].is_null());
      EXPECT_EQ(line["output_bytes"], 0);
    }
  }
  EXPECT_EQ(sink.lines.size(), kinds.size());
}

TEST_F(AuditLogTest, TheFullLevelCarriesTheInputAndOutputRedacted) {
  AuditLog log = make(AuditLevel::kFull);
  AuditRecord record = bash_call();
  record.input = {{"command", "curl -H 'Authorization: Bearer abc.def-ghi' https://x"}};
  record.output = "hello\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n";
  log.record(record);
  const json line = only_line();
  EXPECT_EQ(line["level"], "full");
  EXPECT_EQ(line["input"]["command"], "curl -H 'Authorization: Bearer [REDACTED]' https://x");
  EXPECT_EQ(line["output"], "hello\nAWS_ACCESS_KEY_ID=[REDACTED]\n");
  // Digest and sizes are of what was really sent and returned, not of the redacted text.
  EXPECT_EQ(line["input_sha256"], AuditLog::input_digest(record.input));
  EXPECT_EQ(line["output_bytes"], record.output.size());
}

TEST_F(AuditLogTest, TheTokenTheSecretAndTheKeyAreInNoLineAtAnyLevel) {
  for (AuditLevel level : {AuditLevel::kMetadata, AuditLevel::kFull}) {
    sink.lines.clear();
    AuditLog log = make(level);
    AuditRecord record = bash_call();
    // Everywhere the model could put them, including where no pattern applies.
    record.tool = std::string("x") + kToken;
    record.tool_use_id = std::string("tu_") + kEnvironmentKey;
    record.input = {{"command", std::string("echo ") + kToken},
                    {std::string(kWorkSecret), {std::string("k ") + kEnvironmentKey}}};
    record.output = std::string("ANTHROPIC_WORK_SECRET=") + kWorkSecret + "\n" + kToken + "\n";
    log.record(record);
    ASSERT_EQ(sink.lines.size(), 1u);
    for (const char* secret : {kToken, kWorkSecret, kEnvironmentKey}) {
      EXPECT_EQ(sink.lines[0].find(secret), std::string::npos)
          << to_string(level) << ": " << sink.lines[0];
    }
    EXPECT_TRUE(json::accept(sink.lines[0])) << sink.lines[0];
  }
}

TEST_F(AuditLogTest, ASecretWithCharactersJsonEscapesIsFoundAsItReadsInTheLine) {
  RecordingSink lines;
  perimeter::testing::FakeClock clock;
  AuditLog log(lines, AuditLevel::kMetadata, {"s", "w", "e"}, {"tok\"en\\1"}, clock);
  AuditRecord record = bash_call();
  record.tool = "tok\"en\\1";
  log.record(record);
  ASSERT_EQ(lines.lines.size(), 1u);
  EXPECT_EQ(lines.lines[0].find(R"(tok\"en\\1)"), std::string::npos) << lines.lines[0];
  EXPECT_EQ(json::parse(lines.lines[0])["tool"], "[REDACTED]");
}

struct RedactionCase {
  std::string in;
  std::string out;
};

TEST(Redactor, ReplacesEachDocumentedCredentialShape) {
  const Redactor redactor({"exact-secret-value"});
  const std::vector<RedactionCase> cases = {
      {"the exact-secret-value here", "the [REDACTED] here"},
      {"key sk-ant-api03-AbC_d-123 end", "key [REDACTED] end"},
      {"openai sk-proj1234567890abcdefghij", "openai [REDACTED]"},
      {"id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED]."},
      {"gh ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", "gh [REDACTED]"},
      {"slack xoxb-1234567890-abcdef", "slack [REDACTED]"},
      {"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl x", "jwt [REDACTED] x"},
      {"Authorization: Bearer abc.DEF-123_~+/==", "Authorization: Bearer [REDACTED]"},
      {"authorization: Basic dXNlcjpwYXNz", "authorization: Basic [REDACTED]"},
      {"password=hunter2&user=bob", "password=[REDACTED]&user=bob"},
      {R"({"db_password": "hunter2", "user": "bob"})",
       R"({"db_password": "[REDACTED]", "user": "bob"})"},
      {"GITHUB_TOKEN=abc123 next", "GITHUB_TOKEN=[REDACTED] next"},
      {"api_key: xyz", "api_key: [REDACTED]"},
      {"a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbC=\n-----END RSA PRIVATE KEY-----\nb",
       "a\n[REDACTED]\nb"},
      {"cut -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNz", "cut [REDACTED]"},
      // Ordinary text stays as it is.
      {"tokens: 5, basic usage, skip the password prompt",
       "tokens: 5, basic usage, skip the password prompt"},
      {"-----BEGIN CERTIFICATE-----\nMIIB\n", "-----BEGIN CERTIFICATE-----\nMIIB\n"},
  };
  for (const auto& c : cases) EXPECT_EQ(redactor.redact(c.in), c.out) << c.in;
}

TEST(Redactor, ATextThatGrowsPastItsFirstBufferIsRedactedWhole) {
  // Each replacement adds characters: the substitution has to retry with the size it needs.
  const Redactor redactor({});
  std::string in, out;
  for (int i = 0; i < 2000; ++i) {
    in += "password=x" + std::to_string(i) + "\n";
    out += "password=[REDACTED]\n";
  }
  EXPECT_EQ(redactor.redact(in), out);
}

TEST(Redactor, RedactsKeysAndValuesOfAJsonValue) {
  const Redactor redactor({"s3cr3t-value"});
  const json in = {{"s3cr3t-value", {"a", "x s3cr3t-value", 3}}, {"n", nullptr}};
  EXPECT_EQ(redactor.redact_json(in),
            json({{"[REDACTED]", {"a", "x [REDACTED]", 3}}, {"n", nullptr}}));
}

TEST(AuditLevelTest, OnlyMetadataAndFullAreLevels) {
  EXPECT_EQ(parse_audit_level("metadata"), AuditLevel::kMetadata);
  EXPECT_EQ(parse_audit_level("full"), AuditLevel::kFull);
  EXPECT_EQ(parse_audit_level("FULL"), std::nullopt);
  EXPECT_EQ(parse_audit_level("none"), std::nullopt);
  EXPECT_EQ(parse_audit_level(""), std::nullopt);
}

TEST(StdoutAuditSinkTest, EachLineIsInTheFileWhenWriteLineReturnsWithNothingBuffered) {
  char path[] = "/tmp/audit-sink-XXXXXX";
  const int file = ::mkstemp(path);
  ASSERT_GE(file, 0);
  const int saved = ::dup(STDOUT_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(file, STDOUT_FILENO), STDOUT_FILENO);
  StdoutAuditSink sink;
  sink.write_line(R"({"type":"perimeter.audit.v1","n":1})");
  // Read through another descriptor before anything else runs: no flush was needed.
  std::ifstream first(path);
  std::stringstream after_one;
  after_one << first.rdbuf();
  sink.write_line(R"({"type":"perimeter.audit.v1","n":2})");
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(file);
  std::ifstream second(path);
  std::stringstream after_two;
  after_two << second.rdbuf();
  ::unlink(path);
  EXPECT_EQ(after_one.str(), "{\"type\":\"perimeter.audit.v1\",\"n\":1}\n");
  EXPECT_EQ(
      after_two.str(),
      "{\"type\":\"perimeter.audit.v1\",\"n\":1}\n{\"type\":\"perimeter.audit.v1\",\"n\":2}\n");
}

}  // namespace
}  // namespace perimeter::runner
