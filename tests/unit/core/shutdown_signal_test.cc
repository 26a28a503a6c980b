#include "core/shutdown_signal.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

namespace perimeter {
namespace {

// A stop requested twice (Process::signal sends SIGTERM to the group and to the child, and a busy
// machine delivers them apart) must not kill a process that is already stopping cleanly: the
// second one, still pending when the mask is restored, used to end it by signal 15.
TEST(ShutdownSignalTest, ASecondStopRequestWhileStoppingDoesNotKillTheProcess) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    {
      ShutdownSignal signals;
      ::kill(::getpid(), SIGTERM);
      if (signals.wait() != SIGTERM) ::_exit(3);
      ::kill(::getpid(), SIGTERM);  // arrives while stopping; pending as the mask is restored
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_FALSE(WIFSIGNALED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace perimeter
