#include "sim/scenario.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace perimeter::sim {
namespace {

using ::testing::HasSubstr;

TEST(ScenarioTest, ParsesStepsWithPermissionsCustomToolsAndExpectations) {
  const Scenario scenario = parse_scenario(R"(
name: demo
prompt: do it
terminate: false
steps:
  - tool: write
    input: {file_path: a.txt, content: "1\n", count: 3, ratio: 0.5, flag: true, empty: ~}
    expect: {is_error: false, text: "wrote 2 bytes to a.txt"}
  - tool: deploy
    custom: true
    permission: ask
    confirm: deny
  - tool: bash
    permission: deny
)");
  EXPECT_EQ(scenario.name, "demo");
  EXPECT_FALSE(scenario.terminate);
  ASSERT_EQ(scenario.steps.size(), 3u);
  EXPECT_EQ(scenario.steps[0].input["content"], "1\n");
  EXPECT_EQ(scenario.steps[0].input["count"], 3);
  EXPECT_EQ(scenario.steps[0].input["ratio"], 0.5);
  EXPECT_EQ(scenario.steps[0].input["flag"], true);
  EXPECT_TRUE(scenario.steps[0].input["empty"].is_null());
  EXPECT_EQ(*scenario.steps[0].expect.text, "wrote 2 bytes to a.txt");
  EXPECT_TRUE(scenario.steps[1].custom);
  EXPECT_EQ(scenario.steps[1].permission, Permission::kAsk);
  EXPECT_FALSE(scenario.steps[1].confirm_allow);
  EXPECT_TRUE(scenario.steps[1].expect.no_result);
  EXPECT_TRUE(scenario.steps[2].expect.no_result);
}

TEST(ScenarioTest, SkillsListTheirFilesAndScriptsAreExecutable) {
  const Scenario scenario = parse_scenario(R"(
steps: []
skills:
  - name: notes
    files: {SKILL.md: "# notes", scripts/go.sh: "echo go"}
)");
  ASSERT_EQ(scenario.skills.size(), 1u);
  EXPECT_EQ(scenario.skills[0].name, "notes");
  ASSERT_EQ(scenario.skills[0].files.size(), 2u);
  EXPECT_FALSE(scenario.skills[0].files[0].executable);
  EXPECT_TRUE(scenario.skills[0].files[1].executable);
}

TEST(ScenarioTest, QuotedNumbersStayStrings) {
  const Scenario scenario = parse_scenario("steps: [{tool: t, input: {id: \"007\"}}]");
  EXPECT_EQ(scenario.steps[0].input["id"], "007");
}

TEST(ScenarioTest, BadInputNamesTheStepAndField) {
  auto error_of = [](const char* text) {
    try {
      parse_scenario(text);
    } catch (const ScenarioError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error_of("name: x\nsteps: [{input: {}}]"), HasSubstr("step 1: `tool`"));
  EXPECT_THAT(error_of("steps: [{tool: a, permission: maybe}]"), HasSubstr("`permission`"));
  EXPECT_THAT(error_of("steps: [{tool: a, expect: {exactly: 1}}]"), HasSubstr("unknown field"));
  EXPECT_THAT(error_of("steps: {tool: a}"), HasSubstr("`steps` must be a list"));
  EXPECT_THAT(error_of("[1, 2"), HasSubstr("not valid YAML"));
  EXPECT_THAT(error_of("just text"), HasSubstr("must be a mapping"));
  EXPECT_THAT(error_of("steps: []\nskills: [{name: s, files: {../evil: x}}]"),
              HasSubstr("without `..`"));
  EXPECT_THAT(error_of("steps: []\nskills: [{name: s, files: {/etc/passwd: x}}]"),
              HasSubstr("must be relative"));
  EXPECT_THAT(error_of("steps: []\nskills: [{name: a/b, files: {f: x}}]"),
              HasSubstr("one plain path component"));
}

TEST(ScenarioTest, AScenarioWithoutTurnsIsOneTurnOfItsOwnPromptStepsAndMessage) {
  const Scenario scenario =
      parse_scenario("prompt: go\nfinal_message: done\nsteps: [{tool: a}, {tool: b}]");
  ASSERT_EQ(scenario.turns.size(), 1u);
  EXPECT_EQ(scenario.turns[0].prompt, "go");
  EXPECT_EQ(scenario.turns[0].final_message, "done");
  EXPECT_EQ(scenario.turns[0].first_step, 0u);
  EXPECT_EQ(scenario.turns[0].step_count, 2u);
  EXPECT_FALSE(scenario.interrupt_after_failure.has_value());
}

TEST(ScenarioTest, TurnsCarryTheirStepsTriggersAndDelays) {
  const Scenario scenario = parse_scenario(R"(
name: multi
interrupt_after_failure_ms: 250
turns:
  - prompt: one
    steps:
      - {tool: write, input: {file_path: a, content: b}}
      - {tool: bash, stop_item: true, expect: {interrupted: true}}
  - prompt: two
    after: released
    delay_ms: 1500
    steps: [{tool: read}]
  - after: admin
  - final_message: bye
)");
  ASSERT_EQ(scenario.turns.size(), 4u);
  ASSERT_EQ(scenario.steps.size(), 3u);
  EXPECT_TRUE(scenario.steps[1].stop_item);
  EXPECT_TRUE(scenario.steps[1].expect.interrupted);
  EXPECT_EQ(*scenario.interrupt_after_failure, std::chrono::milliseconds(250));
  EXPECT_EQ(scenario.turns[0].step_count, 2u);
  EXPECT_EQ(scenario.turns[0].final_message, "Turn 1 complete.");
  EXPECT_EQ(scenario.turns[1].first_step, 2u);
  EXPECT_EQ(scenario.turns[1].step_count, 1u);
  EXPECT_EQ(scenario.turns[1].after, TurnTrigger::kReleased);
  EXPECT_EQ(scenario.turns[1].delay, std::chrono::milliseconds(1500));
  EXPECT_EQ(scenario.turns[2].after, TurnTrigger::kAdmin);
  EXPECT_EQ(scenario.turns[2].first_step, 3u);
  EXPECT_EQ(scenario.turns[2].step_count, 0u);
  EXPECT_EQ(scenario.turns[2].prompt, "Continue the scripted scenario (turn 3).");
  EXPECT_EQ(scenario.turns[3].after, TurnTrigger::kEndTurn);
  EXPECT_EQ(scenario.turns[3].delay, std::chrono::milliseconds(0));
  EXPECT_EQ(scenario.turns[3].final_message, "bye");
}

TEST(ScenarioTest, BadTurnsAreRefusedWithTheReason) {
  auto error_of = [](const char* text) {
    try {
      parse_scenario(text);
    } catch (const ScenarioError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error_of("turns: []"), HasSubstr("`turns` must be a non-empty list"));
  EXPECT_THAT(error_of("steps: []\nturns: [{}]"), HasSubstr("`steps` belongs to each turn"));
  EXPECT_THAT(error_of("prompt: x\nturns: [{}]"), HasSubstr("`prompt` belongs to each turn"));
  EXPECT_THAT(error_of("turns: [{delay_ms: 5}]"), HasSubstr("the first turn starts"));
  EXPECT_THAT(error_of("turns: [{}, {after: later}]"), HasSubstr("turn 2: `after`"));
  EXPECT_THAT(error_of("turns: [{}, {delay_ms: -1}]"), HasSubstr("`delay_ms` must be"));
  EXPECT_THAT(error_of("turns: [{}, {delay_ms: soon}]"), HasSubstr("`delay_ms` must be"));
  EXPECT_THAT(error_of("turns: [{}, {wait: 1}]"), HasSubstr("turn 2: unknown field `wait`"));
  EXPECT_THAT(error_of("turns: [{steps: [{input: {}}]}]"), HasSubstr("turn 1 step 1: `tool`"));
  EXPECT_THAT(error_of("interrupt_after_failure_ms: -5\nsteps: []"),
              HasSubstr("`interrupt_after_failure_ms` must be"));
  EXPECT_THAT(error_of("steps: [{tool: a, permission: deny, expect: {interrupted: true}}]"),
              HasSubstr("cannot be interrupted"));
  EXPECT_THAT(error_of("steps: [{tool: a, stop_item: yes}]"), HasSubstr("`stop_item`"));
}

}  // namespace
}  // namespace perimeter::sim
