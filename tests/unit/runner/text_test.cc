#include "tools/text.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tools/js_value.h"

namespace perimeter::tools {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(DecodeUtf8Lossy, KeepsValidText) {
  EXPECT_EQ(decode_utf8_lossy("plain"), "plain");
  EXPECT_EQ(decode_utf8_lossy("na\xC3\xAFve \xE2\x9C\x93 \xF0\x9F\x98\x80"),
            "na\xC3\xAFve \xE2\x9C\x93 \xF0\x9F\x98\x80");
}

TEST(DecodeUtf8Lossy, ReplacesEachMaximalInvalidSubpartOnce) {
  EXPECT_EQ(decode_utf8_lossy("a\xFF"
                              "b"),
            "a" + kFffd + "b");
  // A truncated 3-byte sequence is one replacement, and the next byte is read afresh.
  EXPECT_EQ(decode_utf8_lossy("\xE2\x82"
                              "x"),
            kFffd + "x");
  // Overlong and surrogate encodings: each byte is its own invalid subpart.
  EXPECT_EQ(decode_utf8_lossy("\xC0\xAF"), kFffd + kFffd);
  EXPECT_EQ(decode_utf8_lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(decode_utf8_lossy("\xF0\x9F\x98"), kFffd);
}

TEST(Utf8StreamDecoder, JoinsSequencesSplitAcrossWrites) {
  Utf8StreamDecoder decoder;
  EXPECT_EQ(decoder.write("ok \xF0\x9F"), "ok ");
  EXPECT_EQ(decoder.write("\x98\x80!"), "\xF0\x9F\x98\x80!");
  EXPECT_EQ(decoder.write("\xE2\x82"), "");
  EXPECT_EQ(decoder.finish(), kFffd);
}

TEST(Utf16Length, CountsSurrogatePairsAsTwo) {
  EXPECT_EQ(utf16_length(""), 0u);
  EXPECT_EQ(utf16_length("abc"), 3u);
  EXPECT_EQ(utf16_length("\xC3\xA9"), 1u);
  EXPECT_EQ(utf16_length("\xF0\x9F\x98\x80"), 2u);
}

TEST(JsonQuote, QuotesAsJsonStringify) {
  EXPECT_EQ(json_quote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(json_quote("caf\xC3\xA9"), "\"caf\xC3\xA9\"");
}

TEST(JsNumberToString, FollowsEcmaScriptNotation) {
  EXPECT_EQ(js_number_to_string(5), "5");
  EXPECT_EQ(js_number_to_string(1.5), "1.5");
  EXPECT_EQ(js_number_to_string(-0.25), "-0.25");
  EXPECT_EQ(js_number_to_string(1e21), "1e+21");
  EXPECT_EQ(js_number_to_string(123456789012), "123456789012");
  EXPECT_EQ(js_number_to_string(0.000001), "0.000001");
  EXPECT_EQ(js_number_to_string(1e-7), "1e-7");
  EXPECT_EQ(js_number_to_string(2.5e-8), "2.5e-8");
}

TEST(JsCoercions, MatchJavaScript) {
  using nlohmann::json;
  EXPECT_FALSE(js_truthy(nullptr));
  const json zero = 0, empty = "", one = 1, text = "x", obj = json::object();
  EXPECT_FALSE(js_truthy(&zero));
  EXPECT_FALSE(js_truthy(&empty));
  EXPECT_TRUE(js_truthy(&one));
  EXPECT_TRUE(js_truthy(&text));
  EXPECT_TRUE(js_truthy(&obj));
  EXPECT_EQ(js_to_string(json::array({1, nullptr, "a"})), "1,,a");
  EXPECT_EQ(js_to_string(json::object()), "[object Object]");
  EXPECT_EQ(js_to_string(json(true)), "true");
  EXPECT_EQ(js_to_number(json(" 12 ")), 12);
  EXPECT_TRUE(std::isnan(js_to_number(json("12px"))));
  EXPECT_EQ(node_received(json(7)), "type number (7)");
  EXPECT_EQ(node_received(json::array()), "an instance of Array");
}

}  // namespace
}  // namespace perimeter::tools
