#include "process/process.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace perimeter::process {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/perimeter-process-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream content;
    content << in.rdbuf();
    return content.str();
  }

  // Polls until `pid` is gone; processes signalled by the kernel die asynchronously.
  bool gone_within(pid_t pid, std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (process_alive(pid)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return true;
  }

  std::string dir_;
};

TEST_F(ProcessTest, RunsCommandAndReportsExitCodeAndOutputInLog) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"};
  spec.log_path = dir_ + "/out.log";
  auto process = Process::spawn(spec);
  ExitStatus status = process->wait();
  EXPECT_EQ(status.code, 3);
  EXPECT_EQ(status.signal, 0);
  EXPECT_FALSE(status.success());
  EXPECT_EQ(status.describe(), "exited with code 3");
  EXPECT_EQ(read_file(spec.log_path), "to-stdout\nto-stderr\n");
}

TEST_F(ProcessTest, LaysEnvironmentOverParentsAndCanStartFromEmpty) {
  ::setenv("PERIMETER_PROCESS_TEST_INHERITED", "from-parent", 1);
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", "echo \"$PERIMETER_PROCESS_TEST_INHERITED:$EXTRA\""};
  spec.env = {"EXTRA=added"};
  spec.capture_stdout = true;
  auto process = Process::spawn(spec);
  LineRead read = process->read_stdout_line(seconds(10));
  ASSERT_EQ(read.result, LineRead::Result::kLine);
  EXPECT_EQ(read.line, "from-parent:added");
  EXPECT_TRUE(process->wait().success());

  spec.inherit_environment = false;
  auto isolated = Process::spawn(spec);
  read = isolated->read_stdout_line(seconds(10));
  ASSERT_EQ(read.result, LineRead::Result::kLine);
  EXPECT_EQ(read.line, ":added");
  ::unsetenv("PERIMETER_PROCESS_TEST_INHERITED");
}

TEST_F(ProcessTest, RejectsMalformedEnvironmentEntry) {
  ProcessSpec spec;
  spec.argv = {"true"};
  spec.env = {"NO_EQUALS_SIGN"};
  EXPECT_THAT([&] { Process::spawn(spec); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("NO_EQUALS_SIGN")));
}

TEST_F(ProcessTest, MissingProgramIsNamedInTheError) {
  ProcessSpec spec;
  spec.argv = {"perimeter-no-such-program"};
  EXPECT_THAT([&] { Process::spawn(spec); },
              ::testing::ThrowsMessage<std::runtime_error>(
                  HasSubstr("cannot start perimeter-no-such-program: not found on PATH")));
  spec.argv = {dir_ + "/absent"};
  EXPECT_THAT([&] { Process::spawn(spec); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr(dir_ + "/absent")));
}

TEST_F(ProcessTest, ExecFailureIsReportedByTheParent) {
  // Executable bit set but not a program the kernel can run: exec itself fails in the child.
  std::string bogus = dir_ + "/not-a-program";
  std::ofstream(bogus) << "\x7f"
                          "ELF garbage";
  ::chmod(bogus.c_str(), 0755);
  ProcessSpec spec;
  spec.argv = {bogus};
  EXPECT_THAT([&] { Process::spawn(spec); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("exec failed")));
}

TEST_F(ProcessTest, UnwritableLogIsReported) {
  ProcessSpec spec;
  spec.argv = {"true"};
  spec.log_path = dir_ + "/no-such-dir/out.log";
  EXPECT_THAT([&] { Process::spawn(spec); },
              ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("cannot open log")));
}

TEST_F(ProcessTest, WorkingDirectoryIsApplied) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "pwd"};
  spec.working_dir = dir_;
  spec.capture_stdout = true;
  auto process = Process::spawn(spec);
  LineRead read = process->read_stdout_line(seconds(10));
  EXPECT_EQ(read.line, std::filesystem::canonical(dir_).string());
}

TEST_F(ProcessTest, TerminateStopsWithSigtermFirst) {
  ProcessSpec spec;
  spec.argv = {"sleep", "1000"};
  auto process = Process::spawn(spec);
  EXPECT_TRUE(process->running());
  ExitStatus status = process->terminate(seconds(30));
  EXPECT_EQ(status.signal, SIGTERM);
  EXPECT_FALSE(process_alive(process->pid()));
}

TEST_F(ProcessTest, ChildrenStartWithDefaultSignalsWhateverTheParentBlocks) {
  // A supervisor that sigwait()s for SIGTERM blocks it; its children must still be stoppable.
  sigset_t term, previous;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &term, &previous);
  ProcessSpec spec;
  spec.argv = {"sleep", "1000"};
  auto process = Process::spawn(spec);
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  EXPECT_EQ(process->terminate(seconds(30)).signal, SIGTERM);
}

TEST_F(ProcessTest, TerminateKillsAProcessThatIgnoresSigterm) {
  ProcessSpec spec;
  // The shell announces when its trap is in place, so SIGTERM cannot arrive before it.
  spec.argv = {"sh", "-c", "trap '' TERM; echo trapped; while :; do sleep 1; done"};
  spec.capture_stdout = true;
  auto process = Process::spawn(spec);
  ASSERT_EQ(process->read_stdout_line(seconds(10)).line, "trapped");
  ExitStatus status = process->terminate(milliseconds(100));
  EXPECT_EQ(status.signal, SIGKILL);
}

TEST_F(ProcessTest, TerminateTakesGrandchildrenWithIt) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "sleep 1000 & echo $!; wait"};
  spec.capture_stdout = true;
  auto process = Process::spawn(spec);
  LineRead read = process->read_stdout_line(seconds(10));
  ASSERT_EQ(read.result, LineRead::Result::kLine);
  pid_t grandchild = std::stoi(read.line);
  ASSERT_TRUE(process_alive(grandchild));
  process->terminate(seconds(5));
  EXPECT_TRUE(gone_within(grandchild, seconds(10)));
}

TEST_F(ProcessTest, TerminateAfterANaturalExitKeepsItsStatusAndSignalsNobody) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "exit 4"};
  auto process = Process::spawn(spec);
  EXPECT_EQ(process->wait().code, 4);
  ExitStatus status = process->terminate(seconds(1));
  EXPECT_EQ(status.code, 4);
  EXPECT_EQ(status.signal, 0);
}

TEST_F(ProcessTest, DestructorTerminatesTheChild) {
  pid_t pid;
  {
    ProcessSpec spec;
    spec.argv = {"sleep", "1000"};
    auto process = Process::spawn(spec);
    pid = process->pid();
    ASSERT_TRUE(process_alive(pid));
  }
  EXPECT_FALSE(process_alive(pid));
}

TEST_F(ProcessTest, ReleasedChildOutlivesTheObject) {
  pid_t pid;
  {
    ProcessSpec spec;
    spec.argv = {"sleep", "1000"};
    spec.parent_death_signal = 0;
    auto process = Process::spawn(spec);
    pid = process->pid();
    process->release();
  }
  EXPECT_TRUE(process_alive(pid));
  ::kill(pid, SIGKILL);
  int ignored;
  ::waitpid(pid, &ignored, 0);
}

TEST_F(ProcessTest, ChildDiesWhenTheSpawningThreadExits) {
  std::unique_ptr<Process> process;
  std::thread spawner([&] {
    ProcessSpec spec;
    spec.argv = {"sleep", "1000"};
    spec.parent_death_signal = SIGKILL;
    process = Process::spawn(spec);
  });
  spawner.join();
  ASSERT_NE(process, nullptr);
  auto status = process->wait_for(seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->signal, SIGKILL);
}

TEST_F(ProcessTest, StdinPipeAndStdoutCaptureRoundTrip) {
  ProcessSpec spec;
  spec.argv = {"cat"};
  spec.pipe_stdin = true;
  spec.capture_stdout = true;
  auto process = Process::spawn(spec);
  ASSERT_TRUE(process->write_stdin("first\nsecond\n"));
  EXPECT_EQ(process->read_stdout_line(seconds(10)).line, "first");
  EXPECT_EQ(process->read_stdout_line(seconds(10)).line, "second");
  process->close_stdin();
  EXPECT_EQ(process->read_stdout_line(seconds(10)).result, LineRead::Result::kEof);
  EXPECT_TRUE(process->wait().success());
}

TEST_F(ProcessTest, ReadTimesOutWhileTheChildIsSilent) {
  ProcessSpec spec;
  spec.argv = {"sleep", "1000"};
  spec.capture_stdout = true;
  auto process = Process::spawn(spec);
  EXPECT_EQ(process->read_stdout_line(milliseconds(20)).result, LineRead::Result::kTimeout);
}

TEST_F(ProcessTest, WritingToAnExitedChildFailsWithoutKillingUs) {
  ProcessSpec spec;
  spec.argv = {"true"};
  spec.pipe_stdin = true;
  auto process = Process::spawn(spec);
  process->wait();
  EXPECT_FALSE(process->write_stdin("nobody reads this\n"));
}

TEST_F(ProcessTest, WaitForReturnsNothingWhileRunning) {
  ProcessSpec spec;
  spec.argv = {"sleep", "1000"};
  auto process = Process::spawn(spec);
  EXPECT_FALSE(process->wait_for(milliseconds(20)).has_value());
  EXPECT_TRUE(process->running());
}

TEST(FindExecutable, SearchesPathAndKeepsPaths) {
  EXPECT_EQ(find_executable("./relative/tool"), "./relative/tool");
  std::string sh = find_executable("sh");
  ASSERT_FALSE(sh.empty());
  EXPECT_EQ(::access(sh.c_str(), X_OK), 0);
  EXPECT_EQ(find_executable("perimeter-no-such-program"), "");
}

TEST(ProcessAlive, FalseForZombiesAndUnknownPids) {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  // Unreaped, the child becomes a zombie: it exists but is not alive.
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (process_alive(child) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_FALSE(process_alive(child));
  EXPECT_EQ(::kill(child, 0), 0);  // still there as a zombie
  int ignored;
  ::waitpid(child, &ignored, 0);
  EXPECT_FALSE(process_alive(child));
  EXPECT_FALSE(process_alive(0));
  EXPECT_TRUE(process_alive(::getpid()));
}

}  // namespace
}  // namespace perimeter::process
