#include "tools/agent_toolset.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "tools/search_tools.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Every reading of the time moves it on by a second, so a deadline passes after a known number
// of steps without any real waiting.
class SteppingClock final : public Clock {
 public:
  TimePoint now() const override {
    clock_.advance(std::chrono::seconds(1));
    return clock_.now();
  }
  std::chrono::system_clock::time_point wall_now() const override { return clock_.wall_now(); }

 private:
  mutable testing::FakeClock clock_;
};

class AgentToolsetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/perimeter-toolset-test-XXXXXX";
    dir_ = fs::canonical(::mkdtemp(tmpl));
  }
  void TearDown() override { fs::remove_all(dir_); }

  AgentToolsetOptions options() const {
    AgentToolsetOptions o;
    o.workdir = dir_.string();
    return o;
  }

  fs::path dir_;
  testing::FakeClock clock_;
  std::shared_ptr<testing::CapturingLogSink> sink_ = std::make_shared<testing::CapturingLogSink>();
};

TEST_F(AgentToolsetTest, ResultsAreTextBlocksWithTheSdksPlaceholder) {
  AgentToolset toolset(options(), clock_, Logger("tools", sink_));
  EXPECT_EQ(
      toolset.execute("write", {{"file_path", "e"}, {"content", ""}}).to_json(),
      json::parse(
          R"json({"content":[{"type":"text","text":"wrote 0 bytes to e"}],"is_error":false})json"));
  EXPECT_EQ(toolset.execute("read", {{"file_path", "e"}}).to_json(),
            json::parse(
                R"json({"content":[{"type":"text","text":"(no output)"}],"is_error":false})json"));
  EXPECT_EQ(toolset.execute("read", {{"file_path", "missing"}}),
            ToolResult::from_text("read: missing: no such file or directory", true));
}

TEST_F(AgentToolsetTest, OwnsExactlyTheSixTools) {
  AgentToolset toolset(options(), clock_, Logger("tools", sink_));
  for (const char* name : {"bash", "read", "write", "edit", "glob", "grep"})
    EXPECT_TRUE(toolset.owns(name));
  EXPECT_FALSE(toolset.owns("web_fetch"));
  EXPECT_EQ(toolset.execute("web_fetch", json::object()),
            ToolResult::from_text("unknown tool: web_fetch", true));
}

TEST_F(AgentToolsetTest, BadInputIsAnErrorResultNeverACrash) {
  AgentToolset toolset(options(), clock_, Logger("tools", sink_));
  for (const json& input :
       {json(nullptr), json(5), json("text"), json::array(), json::object(),
        json{{"file_path", json::object()}}, json{{"pattern", json::array({1})}}}) {
    for (const char* name : {"read", "write", "edit", "glob", "grep", "bash"}) {
      const ToolResult result = toolset.execute(name, input);
      ASSERT_EQ(result.content.size(), 1u);
      EXPECT_FALSE(result.content[0].text.empty());
      if (std::string(name) != "grep" || !input.contains("pattern")) {
        EXPECT_TRUE(result.is_error)
            << name << " " << input.dump() << ": " << result.content[0].text;
      }
    }
  }
}

TEST_F(AgentToolsetTest, CountsCallsByToolAndOutcome) {
  auto registry = std::make_shared<prometheus::Registry>();
  AgentToolset toolset(options(), clock_, Logger("tools", sink_), registry);
  toolset.execute("read", {{"file_path", "missing"}});
  toolset.execute("write", {{"file_path", "f"}, {"content", "x"}});
  toolset.execute("read", {{"file_path", "f"}});
  double read_errors = 0, read_ok = 0;
  for (const auto& family : registry->Collect()) {
    if (family.name != "perimeter_runner_tool_calls_total") continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : metric.label) labels[l.name] = l.value;
      if (labels["tool"] == "read" && labels["is_error"] == "true")
        read_errors = metric.counter.value;
      if (labels["tool"] == "read" && labels["is_error"] == "false") read_ok = metric.counter.value;
    }
  }
  EXPECT_EQ(read_errors, 1);
  EXPECT_EQ(read_ok, 1);
}

TEST_F(AgentToolsetTest, GrepDeadlineCutsTheSearchShort) {
  fs::create_directories(dir_ / "d");
  for (int i = 0; i < 20; ++i) std::ofstream(dir_ / "d" / ("f" + std::to_string(i))) << "hit\n";
  SteppingClock clock;
  Workspace workspace(dir_.string());
  GrepTool grep(workspace, clock, std::chrono::seconds(30));
  const std::string out = grep.run({{"pattern", "hit"}});
  EXPECT_NE(out.find(":1:hit"), std::string::npos);
  EXPECT_EQ(out.substr(out.rfind('\n') + 1), "[the search was cut short after 30000 ms]");
  GrepTool nothing(workspace, clock, std::chrono::seconds(1));
  try {
    nothing.run({{"pattern", "hit"}});
    FAIL() << "no hits before the deadline is an error";
  } catch (const ToolError& e) {
    EXPECT_STREQ(e.what(), "grep: timed out after 1s");
  }
}

TEST_F(AgentToolsetTest, EditNeedsExactlyOneMatchUnlessReplaceAll) {
  AgentToolset toolset(options(), clock_, Logger("tools", sink_));
  toolset.execute("write", {{"file_path", "f"}, {"content", "x y x"}});
  EXPECT_EQ(toolset.execute("edit", {{"file_path", "f"}, {"old_string", "x"}, {"new_string", "z"}}),
            ToolResult::from_text("edit: old_string appears 2 times in f (must be unique)", true));
  EXPECT_EQ(
      toolset.execute(
          "edit",
          {{"file_path", "f"}, {"old_string", "x"}, {"new_string", "$&"}, {"replace_all", true}}),
      ToolResult::from_text("edited f (2 replacement(s))", false));
  EXPECT_EQ(toolset.execute("read", {{"file_path", "f"}}), ToolResult::from_text("$& y $&", false));
}

TEST_F(AgentToolsetTest, GlobSortsNewestFirstAndSkipsSymlinkedFiles) {
  AgentToolset toolset(options(), clock_, Logger("tools", sink_));
  std::ofstream(dir_ / "old.txt") << "o";
  std::ofstream(dir_ / "new.txt") << "n";
  const timespec old_times[2] = {{1'000'000'000, 0}, {1'000'000'000, 0}};
  ::utimensat(AT_FDCWD, (dir_ / "old.txt").c_str(), old_times, 0);
  fs::create_symlink("new.txt", dir_ / "link.txt");
  EXPECT_EQ(toolset.execute("glob", {{"pattern", "*.txt"}}),
            ToolResult::from_text((dir_ / "new.txt").string() + "\n" + (dir_ / "old.txt").string(),
                                  false));
}

TEST_F(AgentToolsetTest, BashReportsItsExitStatusAndTimeoutForTheAuditLineOutsideTheResult) {
  AgentToolset toolset(options(), clock_, Logger("tools", sink_));
  const ToolResult ok = toolset.execute("bash", {{"command", "echo hi"}});
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_FALSE(ok.timed_out);
  const ToolResult failed = toolset.execute("bash", {{"command", "echo no; (exit 5)"}});
  EXPECT_TRUE(failed.is_error);
  EXPECT_EQ(failed.exit_code, 5);
  // Neither is part of what the API receives.
  EXPECT_EQ(failed.to_json(), ToolResult::from_text("no", true).to_json());
  const ToolResult cut = toolset.execute("bash", {{"command", "sleep 5"}, {"timeout_ms", 50}});
  EXPECT_TRUE(cut.timed_out);
  EXPECT_EQ(cut.exit_code, std::nullopt);
  const ToolResult other = toolset.execute("glob", {{"pattern", "*"}});
  EXPECT_EQ(other.exit_code, std::nullopt);
  EXPECT_FALSE(other.timed_out);
}

}  // namespace
}  // namespace perimeter::tools

namespace perimeter::tools {
namespace {

// A read-only memory store's folder: write and edit refuse it with the SDK's wording (the root as
// configured), read still works, and the rest of the allowed roots stay writable.
TEST_F(AgentToolsetTest, WriteAndEditRefuseReadOnlyRootsWithTheSdksWording) {
  const fs::path store = dir_ / "memory" / "handbook";
  const fs::path notes = dir_ / "memory" / "notes";
  fs::create_directories(store);
  fs::create_directories(notes);
  { std::ofstream(store / "rules.md") << "be kind\n"; }
  AgentToolsetOptions o = options();
  o.allowed_roots = {store.string(), notes.string()};
  o.read_only_roots = {store.string()};
  AgentToolset toolset(o, clock_, Logger("tools", sink_));
  EXPECT_EQ(
      toolset.execute("write", {{"file_path", "memory/handbook/x.md"}, {"content", "x"}}),
      ToolResult::from_text(
          "write: memory/handbook/x.md is inside read-only directory " + store.string(), true));
  EXPECT_EQ(toolset.execute("edit", {{"file_path", store.string() + "/rules.md"},
                                     {"old_string", "kind"},
                                     {"new_string", "cruel"}}),
            ToolResult::from_text("edit: " + store.string() +
                                      "/rules.md is inside read-only directory " + store.string(),
                                  true));
  EXPECT_FALSE(fs::exists(store / "x.md"));
  EXPECT_EQ(toolset.execute("read", {{"file_path", "memory/handbook/rules.md"}}).is_error, false);
  EXPECT_EQ(toolset.execute("write", {{"file_path", "memory/notes/n.md"}, {"content", "n"}}),
            ToolResult::from_text("wrote 1 bytes to memory/notes/n.md", false));
}

}  // namespace
}  // namespace perimeter::tools
