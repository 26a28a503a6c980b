#include "process/process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace perimeter::process {
namespace {

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// The environment for the child: the parent's (optionally) with the spec's entries laid over it.
std::vector<std::string> build_environment(const ProcessSpec& spec) {
  std::map<std::string, std::string> entries;
  auto add = [&entries](const std::string& entry) {
    auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::runtime_error("environment entry '" + entry + "' is not NAME=value");
    }
    entries[entry.substr(0, eq)] = entry;
  };
  if (spec.inherit_environment) {
    for (char** e = environ; e && *e; ++e) {
      std::string entry(*e);
      if (entry.find('=') != std::string::npos && entry.front() != '=') add(entry);
    }
  }
  for (const auto& entry : spec.env) add(entry);
  std::vector<std::string> result;
  result.reserve(entries.size());
  for (auto& [name, entry] : entries) result.push_back(std::move(entry));
  return result;
}

std::vector<char*> as_c_strings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

// Reports an errno from the child to the parent over the exec-status pipe, then exits. Only
// async-signal-safe calls: this runs between fork and exec.
[[noreturn]] void child_fail(int status_fd, int stage, int err) {
  int message[2] = {stage, err};
  ssize_t ignored = ::write(status_fd, message, sizeof(message));
  (void)ignored;
  ::_exit(127);
}

enum ChildStage { kStageSetsid = 1, kStageDeathSignal, kStageDup, kStageChdir, kStageExec };

const char* stage_text(int stage) {
  switch (stage) {
    case kStageSetsid:
      return "creating its process group";
    case kStageDeathSignal:
      return "setting its parent-death signal";
    case kStageDup:
      return "redirecting its stdio";
    case kStageChdir:
      return "changing to its working directory";
    case kStageExec:
      return "exec";
  }
  return "starting";
}

}  // namespace

std::string ExitStatus::describe() const {
  if (signal != 0) {
    const char* name = ::sigdescr_np(signal);  // thread-safe, unlike strsignal
    return "killed by signal " + std::to_string(signal) + " (" + (name ? name : "?") + ")";
  }
  return "exited with code " + std::to_string(code);
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  // A zombie still answers kill(0) until its parent reaps it, but runs nothing any more.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(stat, content)) return false;
  auto close_paren = content.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= content.size()) return true;
  char state = content[close_paren + 2];
  return state != 'Z' && state != 'X';
}

std::string find_executable(const std::string& program) {
  if (program.empty()) return "";
  if (program.find('/') != std::string::npos) return program;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing here calls setenv concurrently
  const char* path = ::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    if (dir.empty()) dir = ".";
    dir += '/';
    dir += program;
    if (::access(dir.c_str(), X_OK) == 0) return dir;
    start = end + 1;
  }
  return "";
}

std::unique_ptr<Process> Process::spawn(const ProcessSpec& spec) {
  if (spec.argv.empty() || spec.argv.front().empty()) {
    throw std::runtime_error("cannot start a process: empty command line");
  }
  const std::string& program = spec.argv.front();
  std::string path = find_executable(program);
  if (path.empty()) throw std::runtime_error("cannot start " + program + ": not found on PATH");
  if (::access(path.c_str(), X_OK) != 0) {
    throw std::runtime_error("cannot start " + program + ": " + path + ": " + errno_text(errno));
  }

  std::vector<std::string> argv_storage = spec.argv;
  std::vector<char*> argv = as_c_strings(argv_storage);
  std::vector<std::string> env_storage = build_environment(spec);
  std::vector<char*> envp = as_c_strings(env_storage);

  // Every descriptor is close-on-exec on our side, so concurrent spawns never leak them into
  // each other's children; the child dup2()s what it needs onto 0, 1 and 2.
  int output_fd = spec.log_path.empty() ? ::open("/dev/null", O_WRONLY | O_CLOEXEC)
                                        : ::open(spec.log_path.c_str(),
                                                 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (output_fd < 0) {
    throw std::runtime_error("cannot start " + program + ": cannot open log " +
                             (spec.log_path.empty() ? "/dev/null" : spec.log_path) + ": " +
                             errno_text(errno));
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int stdin_pipe[2] = {-1, -1};
  int stdout_pipe[2] = {-1, -1};
  int status_pipe[2] = {-1, -1};
  auto close_all = [&] {
    close_fd(output_fd);
    close_fd(null_fd);
    for (int* fds : {stdin_pipe, stdout_pipe, status_pipe}) {
      close_fd(fds[0]);
      close_fd(fds[1]);
    }
  };
  if (null_fd < 0 || ::pipe2(status_pipe, O_CLOEXEC) != 0 ||
      (spec.pipe_stdin && ::pipe2(stdin_pipe, O_CLOEXEC) != 0) ||
      (spec.capture_stdout && ::pipe2(stdout_pipe, O_CLOEXEC) != 0)) {
    int err = errno;
    close_all();
    throw std::runtime_error("cannot start " + program + ": " + errno_text(err));
  }

  const pid_t parent = ::getpid();
  const char* working_dir = spec.working_dir.empty() ? nullptr : spec.working_dir.c_str();
  const bool new_session = spec.new_session;
  const int death_signal = spec.parent_death_signal;
  const int child_stdin = spec.pipe_stdin ? stdin_pipe[0] : null_fd;
  const int child_stdout = spec.capture_stdout ? stdout_pipe[1] : output_fd;

  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    close_all();
    throw std::runtime_error("cannot start " + program + ": fork: " + errno_text(err));
  }
  if (pid == 0) {
    const int report = status_pipe[1];
    if (new_session ? ::setsid() < 0 : ::setpgid(0, 0) != 0)
      child_fail(report, kStageSetsid, errno);
    if (death_signal != 0) {
      if (::prctl(PR_SET_PDEATHSIG, death_signal) != 0) {
        child_fail(report, kStageDeathSignal, errno);
      }
      // The parent may have died before prctl took effect; then nobody would ever signal us.
      if (::getppid() != parent) ::_exit(127);
    }
    // Blocked signals and ignored dispositions survive exec: a parent that blocks SIGTERM to
    // sigwait() for it would otherwise start children that cannot be stopped politely.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // NOLINT(concurrency-mt-unsafe): one thread here
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD}) {
      ::signal(sig, SIG_DFL);  // NOLINT(concurrency-mt-unsafe): the forked child has one thread
    }
    if (::dup2(child_stdin, 0) < 0 || ::dup2(child_stdout, 1) < 0 || ::dup2(output_fd, 2) < 0) {
      child_fail(report, kStageDup, errno);
    }
    if (working_dir && ::chdir(working_dir) != 0) child_fail(report, kStageChdir, errno);
    // Descriptors some library opened without O_CLOEXEC must not leak into the child either;
    // the status pipe is close-on-exec and stays open until exec succeeds.
    if (report > 3) ::close_range(3, static_cast<unsigned>(report) - 1, 0);
    ::close_range(static_cast<unsigned>(report) + 1, ~0U, 0);
    ::execve(path.c_str(), argv.data(), envp.data());
    child_fail(report, kStageExec, errno);
  }

  // Parent: the child's ends are closed here so EOF on the status pipe means exec succeeded.
  close_fd(status_pipe[1]);
  close_fd(stdin_pipe[0]);
  close_fd(stdout_pipe[1]);
  close_fd(output_fd);
  close_fd(null_fd);
  int message[2] = {0, 0};
  ssize_t got;
  do {
    got = ::read(status_pipe[0], message, sizeof(message));
  } while (got < 0 && errno == EINTR);
  close_fd(status_pipe[0]);
  auto process = std::unique_ptr<Process>(new Process(pid, program, stdin_pipe[1], stdout_pipe[0]));
  if (got > 0) {
    process->wait();
    throw std::runtime_error("cannot start " + program + ": " + stage_text(message[0]) +
                             " failed: " + errno_text(message[1]));
  }
  return process;
}

Process::Process(pid_t pid, std::string name, int stdin_fd, int stdout_fd)
    : pid_(pid), name_(std::move(name)), stdin_fd_(stdin_fd), stdout_fd_(stdout_fd) {}

Process::~Process() {
  close_fd(stdin_fd_);
  close_fd(stdout_fd_);
  if (released_) return;
  if (!status_) terminate();
}

void Process::reap(int wait_status) {
  ExitStatus status;
  if (WIFEXITED(wait_status)) status.code = WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) status.signal = WTERMSIG(wait_status);
  status_ = status;
}

bool Process::running() {
  if (status_) return false;
  int wait_status = 0;
  pid_t r = ::waitpid(pid_, &wait_status, WNOHANG);
  if (r == pid_) {
    reap(wait_status);
    return false;
  }
  if (r < 0 && errno == ECHILD) {
    // Someone else reaped it (a SIGCHLD handler set to SIG_IGN, say): it is gone all the same.
    status_ = ExitStatus{};
    return false;
  }
  return true;
}

std::optional<ExitStatus> Process::wait_for(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (running()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return status_;
}

ExitStatus Process::wait() {
  while (!status_) {
    int wait_status = 0;
    pid_t r = ::waitpid(pid_, &wait_status, 0);
    if (r == pid_) {
      reap(wait_status);
    } else if (r < 0 && errno != EINTR) {
      status_ = ExitStatus{};
    }
  }
  return *status_;
}

void Process::signal(int sig) {
  if (status_) return;
  // The group first (grandchildren too), the child itself if it left its group.
  ::kill(-pid_, sig);
  ::kill(pid_, sig);
}

void Process::kill_group_leftovers() {
  ::kill(-pid_, SIGKILL);
}

ExitStatus Process::terminate(std::chrono::milliseconds grace) {
  if (status_) return *status_;
  signal(SIGTERM);
  if (!wait_for(grace)) {
    signal(SIGKILL);
    wait();
  }
  // Only now, right after reaping: while members of the group remain, its id cannot be handed
  // to a new process, so this reaches exactly the leftovers. Later it might be someone else's.
  kill_group_leftovers();
  return *status_;
}

bool Process::write_stdin(std::string_view data) {
  if (stdin_fd_ < 0) return false;
  // A child that already exited must not kill us with SIGPIPE: block it on this thread for the
  // write and swallow the one it raised, leaving the process-wide disposition alone.
  sigset_t pipe_only, previous;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
  bool ok = true;
  while (!data.empty()) {
    ssize_t n = ::write(stdin_fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE && !sigismember(&previous, SIGPIPE)) {
        const timespec no_wait{0, 0};
        ::sigtimedwait(&pipe_only, nullptr, &no_wait);
      }
      ok = false;
      break;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return ok;
}

void Process::close_stdin() {
  close_fd(stdin_fd_);
}

LineRead Process::read_stdout_line(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto newline = stdout_buffer_.find('\n');
    if (newline != std::string::npos) {
      LineRead read{LineRead::Result::kLine, stdout_buffer_.substr(0, newline)};
      stdout_buffer_.erase(0, newline + 1);
      return read;
    }
    if (stdout_eof_ || stdout_fd_ < 0) {
      if (!stdout_buffer_.empty()) {
        LineRead read{LineRead::Result::kLine, std::move(stdout_buffer_)};
        stdout_buffer_.clear();
        return read;
      }
      return {LineRead::Result::kEof, ""};
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {LineRead::Result::kTimeout, ""};
    pollfd pfd{stdout_fd_, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    char chunk[4096];
    ssize_t n = ::read(stdout_fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      stdout_eof_ = true;
      continue;
    }
    stdout_buffer_.append(chunk, static_cast<size_t>(n));
  }
}

std::string ShellResult::last_line() const {
  std::string text = output;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  const auto newline = text.rfind('\n');
  return newline == std::string::npos ? text : text.substr(newline + 1);
}

ShellResult run_shell(const std::string& command) {
  ShellResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    result.output = "popen failed: " + std::string(std::strerror(errno));
    return result;
  }
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace perimeter::process
