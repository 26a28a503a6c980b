#include "proxy/field_lookup.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace perimeter::mcpguard {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

GuardFields make(const Fields& in) {
  GuardFields fields;
  for (const auto& [name, value] : in) fields.insert(name, value);
  return fields;
}

// Each lookup answers as Beast's own, which it replaces for speed.
void expect_as_beast(const Fields& in) {
  SCOPED_TRACE(::testing::PrintToString(in));
  for (const unsigned version : {10u, 11u}) {
    http::request<http::empty_body, GuardFields> request;
    request.version(version);
    for (const auto& [name, value] : in) request.insert(name, value);
    EXPECT_EQ(keeps_alive(request, version), request.keep_alive()) << "HTTP/1." << version % 10;
    EXPECT_EQ(is_chunked(request), request.chunked());
    EXPECT_EQ(has_content_length_field(request), request.has_content_length());
  }
  const auto fields = make(in);
  for (const auto name : {http::field::connection, http::field::content_type,
                          http::field::transfer_encoding, http::field::expect, http::field::host}) {
    const auto beast_found = fields.find(name);
    const auto* found = find_field(fields, name);
    ASSERT_EQ(found == nullptr, beast_found == fields.end()) << http::to_string(name);
    if (found != nullptr) {
      EXPECT_EQ(found, &*beast_found) << http::to_string(name);
    }
    const auto beast_value = fields[name];
    EXPECT_EQ(field_value(fields, name), std::string_view(beast_value.data(), beast_value.size()))
        << http::to_string(name);
  }
}

TEST(FieldLookup, AnswersAsBeastsOwnLookups) {
  expect_as_beast({});
  expect_as_beast({{"Host", "a"}, {"Content-Type", "application/json"}, {"Content-Length", "3"}});
  expect_as_beast({{"connection", "close"}, {"CONTENT-TYPE", "text/event-stream"}});
  expect_as_beast({{"Connection", "keep-alive, Upgrade"}, {"Expect", "100-continue"}});
  expect_as_beast({{"Connection", "Close"}, {"Connection", "keep-alive"}});
  expect_as_beast({{"Transfer-Encoding", "chunked"}});
  expect_as_beast({{"Transfer-Encoding", "gzip, chunked"}, {"Transfer-Encoding", "gzip"}});
  expect_as_beast({{"Transfer-Encoding", "chunked, gzip"}});
  expect_as_beast({{"transfer-encoding", "CHUNKED"}, {"Content-Length", "5"}});
  expect_as_beast({{"Transfer-Encoding", ""}, {"X-Other", "chunked"}});
  expect_as_beast({{"Content-Type", "a"}, {"content-type", "b"}, {"Host", "h1"}, {"HOST", "h2"}});
}

TEST(FieldLookup, FindsTheFirstOfARepeatedField) {
  const auto fields = make({{"X-A", "1"}, {"Content-Type", "first"}, {"content-type", "second"}});
  EXPECT_EQ(field_value(fields, http::field::content_type), "first");
  EXPECT_EQ(find_field(fields, http::field::host), nullptr);
  EXPECT_EQ(field_value(fields, http::field::host), "");
}

}  // namespace
}  // namespace perimeter::mcpguard
