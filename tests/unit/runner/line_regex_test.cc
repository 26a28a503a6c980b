#include "tools/line_regex.h"

#include <gtest/gtest.h>

#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

std::string error_of(const std::string& pattern) {
  try {
    LineRegex regex(pattern);
  } catch (const ToolError& e) {
    return e.what();
  }
  return "";
}

TEST(LineRegex, MatchesAsJavaScriptRegExpTest) {
  EXPECT_TRUE(LineRegex("^int \\w+\\(").test("int main() {"));
  EXPECT_TRUE(LineRegex("\\s").test("nbsp\xC2\xA0here")) << "\\s includes U+00A0 in JavaScript";
  EXPECT_FALSE(LineRegex("^.$").test("\xE2\x80\xA8")) << "'.' excludes U+2028";
  EXPECT_TRUE(LineRegex("^.$").test("\xC3\xA9"));
  EXPECT_TRUE(LineRegex("\\p{L}").test("p{L}")) << "identity escape without the u flag";
  EXPECT_TRUE(LineRegex("a{").test("a{")) << "a brace that is no quantifier is literal";
  EXPECT_TRUE(LineRegex("[^]x").test("yx"));
  EXPECT_FALSE(LineRegex("[]").test("anything"));
  EXPECT_TRUE(LineRegex("\\u00e9").test("caf\xC3\xA9"));
  EXPECT_TRUE(LineRegex("(?<=foo)\\d+").test("foo123"));
  EXPECT_TRUE(LineRegex("[[:a]").test(":")) << "'[' inside a class is a literal";
}

TEST(LineRegex, RefusesWhatJavaScriptRefusesInV8Words) {
  EXPECT_EQ(error_of("("),
            "grep: invalid regex: Invalid regular expression: /(/: Unterminated group");
  EXPECT_EQ(error_of("(?i)x"),
            "grep: invalid regex: Invalid regular expression: /(?i)x/: Invalid group");
  EXPECT_EQ(error_of("a*+"),
            "grep: invalid regex: Invalid regular expression: /a*+/: Nothing to repeat");
  EXPECT_EQ(error_of("a{2}+"),
            "grep: invalid regex: Invalid regular expression: /a{2}+/: Nothing to repeat");
  EXPECT_EQ(error_of("a*?"), "") << "lazy quantifiers are fine";
}

TEST(LineRegex, PathologicalPatternCostsBoundedWork) {
  // Catastrophic backtracking: the match limit turns it into "no match" instead of a hang.
  LineRegex regex("^(a+)+$");
  EXPECT_FALSE(regex.test(std::string(1500, 'a') + "!"));
}

}  // namespace
}  // namespace perimeter::tools
