#include "controllers/agentenvironment/duplicates.h"

#include <gtest/gtest.h>

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

class EarlierClaimantTest : public ::testing::Test {
 protected:
  AgentEnvironment add(const std::string& ns, const std::string& name, const std::string& created,
                       const std::string& environment_id = "env_1") {
    json object = {{"apiVersion", "perimeter.dev/v1alpha1"},
                   {"kind", "AgentEnvironment"},
                   {"metadata",
                    {{"name", name},
                     {"namespace", ns},
                     {"uid", ns + name},
                     {"creationTimestamp", created}}},
                   {"spec",
                    {{"environmentId", environment_id},
                     {"apiBaseUrl", "https://api.anthropic.com"},
                     {"environmentKeySecretRef", {{"name", "k"}}},
                     {"runner", {{"image", "runner:1"}}}}}};
    store_.upsert(std::make_shared<const json>(object));
    return parse_agent_environment(object);
  }
  std::optional<std::string> claimant(const AgentEnvironment& env) {
    return earlier_claimant(store_, env, [this](const std::string& ns) {
      return !closed_.contains(ns);
    });
  }

  runtime::Store store_;
  std::set<std::string> closed_;
};

TEST_F(EarlierClaimantTest, TheFirstCreatedServesAndTheSecondIsToldWhichOneDoes) {
  const auto first = add("team-a", "agents", "2026-11-30T01:00:00Z");
  const auto second = add("team-b", "agents", "2026-11-30T02:00:00Z");
  EXPECT_EQ(claimant(first), std::nullopt);
  EXPECT_EQ(claimant(second), "team-a/agents");
}

TEST_F(EarlierClaimantTest, OtherEnvironmentsDoNotCount) {
  const auto one = add("team-a", "agents", "2026-11-30T02:00:00Z", "env_1");
  add("team-b", "agents", "2026-11-30T01:00:00Z", "env_2");
  EXPECT_EQ(claimant(one), std::nullopt);
}

TEST_F(EarlierClaimantTest, ATieOnCreationTimeGoesToTheSmallerName) {
  const auto b = add("team-b", "agents", "2026-11-30T01:00:00Z");
  const auto a = add("team-a", "agents", "2026-11-30T01:00:00Z");
  EXPECT_EQ(claimant(a), std::nullopt);
  EXPECT_EQ(claimant(b), "team-a/agents");
}

TEST_F(EarlierClaimantTest, OneThatCanNeverPollDoesNotShutOutTheOthers) {
  add("closed", "agents", "2026-11-30T01:00:00Z");
  closed_.insert("closed");
  const auto open = add("team-a", "agents", "2026-11-30T02:00:00Z");
  EXPECT_EQ(claimant(open), std::nullopt);
}

TEST_F(EarlierClaimantTest, OneBeingDeletedHandsOver) {
  json going = {{"metadata",
                 {{"name", "agents"},
                  {"namespace", "team-a"},
                  {"creationTimestamp", "2026-11-30T01:00:00Z"},
                  {"deletionTimestamp", "2026-11-30T03:00:00Z"}}},
                {"spec", {{"environmentId", "env_1"}, {"apiBaseUrl", "https://api.anthropic.com"}}}};
  store_.upsert(std::make_shared<const json>(going));
  const auto next = add("team-b", "agents", "2026-11-30T02:00:00Z");
  EXPECT_EQ(claimant(next), std::nullopt);
}

}  // namespace
}  // namespace perimeter::agentenvironment
