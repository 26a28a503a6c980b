#include "controllers/agentenvironment/runner_naming.h"

#include <gtest/gtest.h>

#include <regex>

namespace perimeter::agentenvironment {
namespace {

bool is_dns_label(const std::string& name) {
  static const std::regex kDnsLabel("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
  return name.size() <= 63 && std::regex_match(name, kDnsLabel);
}

TEST(RunnerObjectNameTest, IsDeterministicAndAValidDnsLabel) {
  const std::string name = runner_object_name("work_01HZX3Q7ABCDEF");
  EXPECT_EQ(name, runner_object_name("work_01HZX3Q7ABCDEF"));
  EXPECT_TRUE(is_dns_label(name)) << name;
  EXPECT_EQ(name.rfind("run-work-01hzx3q7abcdef-", 0), 0u) << name;
}

TEST(RunnerObjectNameTest, IdsThatDifferOnlyInCaseGetDifferentNames) {
  EXPECT_NE(runner_object_name("work_abc"), runner_object_name("work_ABC"));
}

TEST(RunnerObjectNameTest, LongAndOddIdsStayWithinALabel) {
  const std::string long_id(300, 'x');
  EXPECT_TRUE(is_dns_label(runner_object_name(long_id)));
  EXPECT_TRUE(is_dns_label(runner_object_name("__--..!!")));
  EXPECT_TRUE(is_dns_label(runner_object_name("")));
  EXPECT_NE(runner_object_name(long_id), runner_object_name(long_id + "y"));
}

TEST(LabelValueTest, KeepsValidValuesAndHashesOthers) {
  EXPECT_EQ(label_value_for("work_01HZX3"), "work_01HZX3");
  const std::string hashed = label_value_for(std::string(80, 'a'));
  EXPECT_EQ(hashed.rfind("h-", 0), 0u);
  EXPECT_EQ(hashed.size(), 18u);
  EXPECT_EQ(hashed, label_value_for(std::string(80, 'a')));
  EXPECT_NE(label_value_for("_leading"), "_leading");
}

TEST(StableHashTest, MatchesTheFnv1aReferenceValues) {
  // Reference values of 64-bit FNV-1a: the names derived from it must never change across
  // releases, or a restarted operator would not recognise its own pods.
  EXPECT_EQ(stable_hash(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(stable_hash("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(stable_hash("foobar"), 0x85944171f73967e8ULL);
}

}  // namespace
}  // namespace perimeter::agentenvironment
