#include "tools/bash_session.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tools/bash_tool.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class BashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/perimeter-bash-test-XXXXXX";
    dir_ = fs::canonical(::mkdtemp(tmpl));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Waits (bounded) for a process to be gone; the kernel delivers SIGKILL asynchronously.
  static bool gone(pid_t pid) {
    for (int i = 0; i < 200; ++i) {
      if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
      std::this_thread::sleep_for(25ms);
    }
    return false;
  }
  static pid_t read_pid(const fs::path& file) {
    std::ifstream in(file);
    pid_t pid = 0;
    in >> pid;
    return pid;
  }

  fs::path dir_;
};

TEST_F(BashTest, StatePersistsAcrossCommands) {
  BashSession session(dir_.string(), scrubbed_environment());
  EXPECT_EQ(session.exec("mkdir sub && cd sub && X=42", 10s).exit_code, 0);
  const auto result = session.exec("pwd; echo $X", 10s);
  EXPECT_EQ(result.output, dir_.string() + "/sub\n42");
  EXPECT_EQ(result.exit_code, 0);
}

// The runner's own descriptors (its API connections, which Boost.Asio opens without
// close-on-exec) must not reach the agent's shell, as Node's never reach the official worker's.
TEST_F(BashTest, TheShellInheritsNoDescriptorBeyondItsStandardStreams) {
  int leaky[2];
  ASSERT_EQ(::pipe(leaky), 0);  // deliberately without O_CLOEXEC
  BashSession session(dir_.string(), scrubbed_environment());
  const auto result = session.exec(
      "for fd in " + std::to_string(leaky[0]) + " " + std::to_string(leaky[1]) +
          "; do if [ -e /proc/$$/fd/$fd ]; then echo inherited $fd; fi; done; echo checked",
      10s);
  ::close(leaky[0]);
  ::close(leaky[1]);
  EXPECT_EQ(result.output, "checked");
}

TEST_F(BashTest, ReportsExitStatusAndInterleavesStderr) {
  BashSession session(dir_.string(), scrubbed_environment());
  const auto result =
      session.exec("echo out; echo err >&2; exit_with() { return $1; }; exit_with 7", 10s);
  EXPECT_EQ(result.output, "out\nerr");
  EXPECT_EQ(result.exit_code, 7);
}

TEST_F(BashTest, SentinelPrintedByTheCommandCannotSpoofCompletion) {
  BashSession session(dir_.string(), scrubbed_environment());
  const auto result = session.exec("echo __ANT_CMD_fake_DONE__0; echo real", 10s);
  EXPECT_EQ(result.output, "__ANT_CMD_fake_DONE__0\nreal");
}

TEST_F(BashTest, TimeoutThenDestructionKillsTheWholeProcessGroup) {
  pid_t background = 0;
  {
    BashSession session(dir_.string(), scrubbed_environment());
    EXPECT_THROW(session.exec("sleep 300 & echo $! > bg.pid; sleep 300", 200ms), BashTimeout);
    background = read_pid(dir_ / "bg.pid");
    ASSERT_GT(background, 0);
    EXPECT_EQ(::kill(background, 0), 0) << "still running until the session is discarded";
  }
  EXPECT_TRUE(gone(background)) << "the background job of a discarded session must die with it";
}

TEST_F(BashTest, ShellExitIsTermination) {
  BashSession session(dir_.string(), scrubbed_environment());
  EXPECT_THROW(session.exec("exit 3", 10s), BashTerminated);
  EXPECT_TRUE(session.closed());
  EXPECT_THROW(session.exec("echo again", 10s), BashTerminated);
}

TEST_F(BashTest, OutputIsCappedToItsTail) {
  BashSession session(dir_.string(), scrubbed_environment());
  const auto result = session.exec("seq 1 100000", 30s);
  EXPECT_EQ(result.output.rfind("[output truncated]\n", 0), 0u);
  EXPECT_EQ(result.output.substr(result.output.size() - 7), "\n100000");
  EXPECT_LE(result.output.size(), kBashOutputLimit + 32);
}

TEST_F(BashTest, ToolScrubsCredentialsAndRestarts) {
  ::setenv("ANTHROPIC_WORK_SECRET", "s3cr3t", 1);
  ::setenv("anthropic_lower", "s3cr3t", 1);
  BashTool tool(dir_.string(), std::nullopt);
  EXPECT_EQ(tool.run({{"command", "env | grep -ci anthropic_ || true"}}), "0");
  ::unsetenv("ANTHROPIC_WORK_SECRET");
  ::unsetenv("anthropic_lower");
  tool.run({{"command", "export KEEP=1"}});
  EXPECT_EQ(tool.run({{"restart", true}}), "bash session restarted");
  EXPECT_EQ(tool.run({{"command", "echo ${KEEP:-gone}"}}), "gone");
  try {
    tool.run({{"command", "sleep 5"}, {"timeout_ms", 100}});
    FAIL();
  } catch (const ToolError& e) {
    EXPECT_STREQ(e.what(), "bash: bash command timed out after 100ms");
  }
  EXPECT_EQ(tool.run({{"command", "echo fresh"}}), "fresh") << "a timed-out session is replaced";
}

TEST_F(BashTest, ToolWithExplicitEnvironmentUsesItVerbatim) {
  BashTool tool(dir_.string(), std::vector<std::string>{"ONLY=this", "PATH=/usr/bin:/bin"});
  EXPECT_EQ(tool.run({{"command", "echo $ONLY ${HOME:-nohome}"}}), "this nohome");
}

}  // namespace
}  // namespace perimeter::tools
