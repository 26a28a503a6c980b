#include "tools/glob_pattern.h"

#include <gtest/gtest.h>

namespace perimeter::tools {
namespace {

using Strings = std::vector<std::string>;

TEST(ExpandBraces, ListsRangesAndNesting) {
  EXPECT_EQ(expand_braces("{a,b}.txt"), (Strings{"a.txt", "b.txt"}));
  EXPECT_EQ(expand_braces("x{a,{b,c}d}"), (Strings{"xa", "xbd", "xcd"}));
  EXPECT_EQ(expand_braces("v{1..3}"), (Strings{"v1", "v2", "v3"}));
  EXPECT_EQ(expand_braces("v{08..10}"), (Strings{"v08", "v09", "v10"}));
  EXPECT_EQ(expand_braces("{a..c}"), (Strings{"a", "b", "c"}));
  EXPECT_EQ(expand_braces("{1..7..3}"), (Strings{"1", "4", "7"}));
  EXPECT_EQ(expand_braces("a{,b}"), (Strings{"a", "ab"}));
  // Not brace expressions: left as they are.
  EXPECT_EQ(expand_braces("{a}"), (Strings{"{a}"}));
  EXPECT_EQ(expand_braces("{a,b"), (Strings{"{a,b"}));
}

TEST(WildcardMatch, StarQuestionAndClasses) {
  EXPECT_TRUE(wildcard_match("*.c", "main.c"));
  EXPECT_FALSE(wildcard_match("*.c", "main.h"));
  EXPECT_TRUE(wildcard_match("?.txt", "a.txt"));
  EXPECT_FALSE(wildcard_match("?.txt", "ab.txt"));
  EXPECT_TRUE(wildcard_match("[a-c]x", "bx"));
  EXPECT_TRUE(wildcard_match("[!a-c]x", "dx"));
  EXPECT_FALSE(wildcard_match("[^a-c]x", "ax"));
  EXPECT_TRUE(wildcard_match("[[:upper:]]*", "Upper"));
  EXPECT_TRUE(wildcard_match("?", "\xC3\xA9")) << "one code point";
  EXPECT_TRUE(wildcard_match("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(wildcard_match("a*b*c", "aXXbYY"));
  EXPECT_TRUE(wildcard_match("[", "[")) << "an unterminated bracket is a literal";
}

TEST(WildcardMatch, LeadingDotNeedsAnExplicitDot) {
  EXPECT_FALSE(wildcard_match("*", ".hidden"));
  EXPECT_FALSE(wildcard_match("?hidden", ".hidden"));
  EXPECT_FALSE(wildcard_match("[.h]hidden", ".hidden"));
  EXPECT_TRUE(wildcard_match(".*", ".hidden"));
  EXPECT_TRUE(wildcard_match("[.]dot", ".dot"));
}

TEST(GlobPattern, SegmentsPerAlternative) {
  const auto compiled = GlobPattern::compile("./src/**/**/{a,b}.c");
  ASSERT_EQ(compiled.alternatives().size(), 2u);
  const auto& first = compiled.alternatives()[0];
  ASSERT_EQ(first.size(), 3u) << "'.' dropped, repeated ** collapsed";
  EXPECT_EQ(first[0].kind, GlobSegment::Kind::kLiteral);
  EXPECT_EQ(first[1].kind, GlobSegment::Kind::kGlobstar);
  EXPECT_EQ(first[2].text, "a.c");
  EXPECT_TRUE(GlobPattern::compile("src/").alternatives().empty()) << "directories only: no files";
  EXPECT_EQ(GlobPattern::compile("a\\b").alternatives()[0].size(), 2u) << "backslash separates";
}

}  // namespace
}  // namespace perimeter::tools
