// The runner's hardening, attacked the way the agent's shell would attack it: a process of the
// same uid reading the runner's /proc/PID/environ and memory. A probe (hardening_probe.cc) is
// exec'ed with a secret in its environment, hardened or not; a sibling of the same uid then tries.
// As root the test runs both as uid 65534, since root's CAP_SYS_PTRACE would pass every check.
#include "runner/process_hardening.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>

namespace perimeter::runner {
namespace {

uid_t attacker_uid() {
  return ::geteuid() == 0 ? 65534 : ::geteuid();
}

// In a forked child: become the unprivileged uid (a no-op when not root).
bool drop_to_attacker_uid() {
  if (::geteuid() != 0) return true;
  const uid_t uid = attacker_uid();
  return ::setgroups(0, nullptr) == 0 && ::setresgid(uid, uid, uid) == 0 &&
         ::setresuid(uid, uid, uid) == 0;
}

std::string read_all(int fd) {
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<size_t>(n));
  return out;
}

std::string random_secret() {
  std::random_device device;
  return "probe-secret-" + std::to_string(device()) + std::to_string(device());
}

// The probe, running as the attacker's uid, until destroyed (its stdin closes).
class Probe {
 public:
  Probe(const char* mode, const std::string& secret) {
    const char* path = std::getenv("HARDENING_PROBE");
    if (path == nullptr) throw std::runtime_error("HARDENING_PROBE is not set (run through ctest)");
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe");
    const std::string secret_var = "PROBE_SECRET=" + secret;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], STDIN_FILENO);
      ::dup2(out[1], STDOUT_FILENO);
      if (!drop_to_attacker_uid()) ::_exit(120);
      char* argv[] = {const_cast<char*>(path), const_cast<char*>(mode), nullptr};
      char* envp[] = {const_cast<char*>("KEPT=still-here"), const_cast<char*>(secret_var.c_str()),
                      nullptr};
      ::execve(path, argv, envp);
      ::_exit(121);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    // Until "ready": the probe has hardened itself (or not) by then.
    char buffer[4096];
    while (output_.find("\nready\n") == std::string::npos) {
      const ssize_t n = ::read(stdout_, buffer, sizeof buffer);
      if (n <= 0) throw std::runtime_error("the probe ended early: " + output_);
      output_.append(buffer, static_cast<size_t>(n));
    }
  }
  ~Probe() {
    ::close(stdin_);
    ::close(stdout_);
    ::kill(pid_, SIGKILL);  // whatever state an attack left it in
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  // What the probe read of its own /proc/self/environ, and whether it was dumpable.
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::string output_;
};

struct Attack {
  int environ_errno = 0;
  std::string environ_text;
  int mem_errno = 0;
  int vm_readv_errno = 0;
  int ptrace_errno = 0;
};

// A sibling of the same uid as the probe tries each way in, as the agent's shell would.
Attack attack(pid_t target) {
  int report[2];
  if (::pipe(report) != 0) throw std::runtime_error("pipe");
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(report[0]);
    if (!drop_to_attacker_uid()) ::_exit(120);
    std::string out;
    const std::string proc = "/proc/" + std::to_string(target);
    int fd = ::open((proc + "/environ").c_str(), O_RDONLY);
    std::string text;
    out += std::to_string(fd < 0 ? errno : 0) + "\n";
    if (fd >= 0) {
      text = read_all(fd);
      ::close(fd);
    }
    fd = ::open((proc + "/mem").c_str(), O_RDONLY);
    out += std::to_string(fd < 0 ? errno : 0) + "\n";
    if (fd >= 0) ::close(fd);
    char byte = 0;
    iovec local{&byte, 1};
    iovec remote{reinterpret_cast<void*>(0x400000), 1};
    out +=
        std::to_string(::process_vm_readv(target, &local, 1, &remote, 1, 0) < 0 ? errno : 0) + "\n";
    const long attached = ::ptrace(PTRACE_ATTACH, target, nullptr, nullptr);
    out += std::to_string(attached < 0 ? errno : 0) + "\n";
    if (attached == 0) {
      // Detach only from the attach-stop, or the target stays stopped.
      ::waitpid(target, nullptr, __WALL);
      ::ptrace(PTRACE_DETACH, target, nullptr, nullptr);
    }
    out += text;
    (void)!::write(report[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(report[1]);
  const std::string text = read_all(report[0]);
  ::close(report[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("the attacker could not start");
  Attack result;
  std::size_t at = 0;
  int* fields[] = {&result.environ_errno, &result.mem_errno, &result.vm_readv_errno,
                   &result.ptrace_errno};
  for (int* field : fields) {
    const std::size_t end = text.find('\n', at);
    *field = std::stoi(text.substr(at, end - at));
    at = end + 1;
  }
  result.environ_text = text.substr(at);
  return result;
}

TEST(ProcessHardening, WithoutItASameUidProcessReadsTheSecretFromProcEnviron) {
  // The attack works on a plain process: what the runner was before, and what the tests below
  // would see if the hardening did nothing.
  const std::string secret = random_secret();
  Probe probe("plain", secret);
  EXPECT_NE(probe.output().find("dumpable=1"), std::string::npos) << probe.output();
  const Attack result = attack(probe.pid());
  EXPECT_EQ(result.environ_errno, 0);
  EXPECT_NE(result.environ_text.find(secret), std::string::npos);
}

TEST(ProcessHardening, ASameUidProcessCannotReadTheEnvironOrMemoryOfAHardenedProcess) {
  const std::string secret = random_secret();
  Probe probe("harden", secret);
  EXPECT_NE(probe.output().find("dumpable=0"), std::string::npos) << probe.output();
  const Attack result = attack(probe.pid());
  EXPECT_EQ(result.environ_errno, EACCES) << std::strerror(result.environ_errno);
  EXPECT_EQ(result.environ_text, "");
  EXPECT_EQ(result.mem_errno, EACCES) << std::strerror(result.mem_errno);
  EXPECT_EQ(result.vm_readv_errno, EPERM) << std::strerror(result.vm_readv_errno);
  EXPECT_EQ(result.ptrace_errno, EPERM) << std::strerror(result.ptrace_errno);
}

TEST(ProcessHardening, TheScrubbedValueIsGoneFromTheBlockProcEnvironReadsEvenIfItWereReadable) {
  // Scrubbed but left dumpable, so /proc/PID/environ can still be read, by the probe and by the
  // sibling: unsetenv alone would leave the value in the exec-time block that file shows.
  const std::string secret = random_secret();
  Probe probe("scrub", secret);
  EXPECT_EQ(probe.output().find(secret), std::string::npos) << probe.output();
  EXPECT_EQ(probe.output().find("PROBE_SECRET"), std::string::npos) << probe.output();
  EXPECT_NE(probe.output().find("KEPT=still-here"), std::string::npos) << probe.output();
  const Attack result = attack(probe.pid());
  EXPECT_EQ(result.environ_errno, 0);
  EXPECT_NE(result.environ_text.find("KEPT=still-here"), std::string::npos);
  EXPECT_EQ(result.environ_text.find(secret), std::string::npos);
  EXPECT_EQ(result.environ_text.find("PROBE_SECRET"), std::string::npos);
}

TEST(ProcessHardening, ScrubRemovesTheVariableFromThisProcessAndCountsWhatItWiped) {
  ASSERT_EQ(::setenv("HARDENING_TEST_VAR", "x", 1), 0);
  EXPECT_EQ(scrub_environment({"HARDENING_TEST_VAR", "HARDENING_TEST_ABSENT"}), 1);
  EXPECT_EQ(std::getenv("HARDENING_TEST_VAR"), nullptr);
}

TEST(ProcessHardening, TheCredentialVariablesAreTheSecretAndTheKey) {
  EXPECT_EQ(credential_variables(),
            (std::vector<std::string>{"ANTHROPIC_WORK_SECRET", "ANTHROPIC_ENVIRONMENT_KEY"}));
}

}  // namespace
}  // namespace perimeter::runner
