#include "sim/session_follower.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace perimeter::sim {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

json step(int index, const std::string& tool, json received, bool matched,
          const std::string& mismatch = "") {
  return {{"index", index},     {"tool", tool},         {"received", std::move(received)},
          {"matched", matched}, {"mismatch", mismatch}, {"permission", "allow"}};
}

json snapshot(json steps, bool finished, const std::string& status = "running") {
  bool all = finished;
  for (const auto& s : steps) all = all && s["matched"].get<bool>();
  return {{"data",
           {{{"session_id", "sesn_1"},
             {"scenario", "builtin-tools"},
             {"status", status},
             {"finished", finished},
             {"all_matched", all},
             {"steps", std::move(steps)}}}}};
}

TEST(SessionFollowerTest, EachResultAndEachFinishIsPrintedOnce) {
  SessionFollower follower;
  const json written = {{"is_error", false}, {"text", "wrote 17 bytes to todo.txt"}};
  const json read = {{"is_error", false}, {"text", "alpha\nbeta\n"}};

  auto first = follower.update(snapshot(
      {step(0, "write", written, true), step(1, "read", nullptr, false, "no result")}, false));
  EXPECT_THAT(first, ElementsAre("[tool] sesn_1 builtin-tools step 1/2 write -> \"wrote 17 bytes "
                                 "to todo.txt\""));
  // The same level again prints nothing new.
  EXPECT_THAT(
      follower.update(snapshot(
          {step(0, "write", written, true), step(1, "read", nullptr, false, "no result")}, false)),
      IsEmpty());
  EXPECT_EQ(follower.sessions_finished(), 0u);

  auto last = follower.update(
      snapshot({step(0, "write", written, true), step(1, "read", read, true)}, true, "terminated"));
  EXPECT_THAT(last, ElementsAre("[tool] sesn_1 builtin-tools step 2/2 read -> \"alpha…\"",
                                "[session] sesn_1 builtin-tools finished (terminated): 2/2 "
                                "results as scripted"));
  EXPECT_EQ(follower.sessions_finished(), 1u);
  EXPECT_TRUE(follower.all_matched());
  EXPECT_THAT(follower.table(), HasSubstr("sesn_1"));
  EXPECT_THAT(follower.table(), HasSubstr("2/2"));
}

TEST(SessionFollowerTest, AResultThatIsNotAsScriptedIsSaidSo) {
  SessionFollower follower;
  const json wrong = {{"is_error", true}, {"text", "file not found"}};
  auto lines =
      follower.update(snapshot({step(0, "read", wrong, false, "text differs")}, true, "idle"));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("-> error \"file not found\"  NOT AS EXPECTED: text differs"));
  EXPECT_THAT(lines[1], HasSubstr("0/1 results as scripted; NOT AS EXPECTED"));
  EXPECT_FALSE(follower.all_matched());
  EXPECT_THAT(follower.table(), HasSubstr("step 1 read: text differs"));
}

TEST(SessionFollowerTest, AnUnexpectedSnapshotIsReportedAndChangesNothing) {
  SessionFollower follower;
  auto lines = follower.update(json{{"error", "boom"}});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("without a `data` array"));
  EXPECT_EQ(follower.sessions_seen(), 0u);
  EXPECT_FALSE(follower.all_matched());  // nothing seen is not success
}

}  // namespace
}  // namespace perimeter::sim
