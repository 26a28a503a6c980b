#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::process {

// What to start and how. Everything is resolved before fork(), so the child only calls
// async-signal-safe functions between fork and exec.
struct ProcessSpec {
  // argv[0] is the program: a path, or a bare name looked up on PATH.
  std::vector<std::string> argv;
  // "NAME=value" entries laid over the parent's environment (or over nothing, see below).
  std::vector<std::string> env;
  bool inherit_environment = true;
  // stdout and stderr are appended here; empty sends them to /dev/null.
  std::string log_path;
  std::string working_dir;
  // stdout goes to a pipe read with read_stdout_line() instead of the log (stderr stays in it).
  bool capture_stdout = false;
  // stdin is a pipe written with write_stdin(); otherwise /dev/null.
  bool pipe_stdin = false;
  // setsid() instead of a new process group: for daemons that must leave the caller's session.
  bool new_session = false;
  // Delivered to the child when the thread that spawned it exits (PR_SET_PDEATHSIG); 0 for none.
  // The kernel ties this to the spawning *thread*: spawn from a thread that outlives the child.
  int parent_death_signal = SIGKILL;
};

struct ExitStatus {
  int code = -1;   // exit code when the process exited
  int signal = 0;  // the signal that killed it, otherwise 0
  bool success() const { return signal == 0 && code == 0; }
  std::string describe() const;  // "exited with code 1", "killed by signal 9 (Killed)"
};

// The outcome of reading one line of a child's captured stdout.
struct LineRead {
  enum class Result { kLine, kTimeout, kEof };
  Result result = Result::kTimeout;
  std::string line;  // without the trailing newline
};

// A child process in its own process group, owned by this object: destroying it terminates the
// whole group (SIGTERM, a grace period, then SIGKILL) and reaps the child, unless release()d.
class Process {
 public:
  // Starts the process. Throws std::runtime_error naming the program when it cannot be started
  // (not found, not executable, log not writable, exec failed).
  static std::unique_ptr<Process> spawn(const ProcessSpec& spec);

  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // True until the child has exited (reaping it when it has).
  bool running();
  // The exit status once the child has exited and been reaped.
  const std::optional<ExitStatus>& exit_status() const { return status_; }
  // Waits up to `timeout` for the child to exit.
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout);
  ExitStatus wait();

  // Sends `sig` to the child's whole process group.
  void signal(int sig);
  // SIGTERM to the group, up to `grace` for the child to exit, then SIGKILL. Also kills whatever
  // is left of the group after the child exits, so grandchildren do not linger. A child already
  // known to have exited is left alone (its group id may belong to someone else by now).
  ExitStatus terminate(std::chrono::milliseconds grace = std::chrono::seconds(5));

  // Writes to the child's stdin pipe (pipe_stdin). Returns false when the child closed it.
  bool write_stdin(std::string_view data);
  void close_stdin();
  // Reads one line of captured stdout (capture_stdout), waiting at most `timeout`.
  LineRead read_stdout_line(std::chrono::milliseconds timeout);

  // Gives up ownership: the child keeps running after this object is destroyed.
  void release() { released_ = true; }

 private:
  Process(pid_t pid, std::string name, int stdin_fd, int stdout_fd);
  void reap(int wait_status);
  void kill_group_leftovers();

  pid_t pid_;
  std::string name_;
  int stdin_fd_;
  int stdout_fd_;
  std::string stdout_buffer_;
  bool stdout_eof_ = false;
  bool released_ = false;
  std::optional<ExitStatus> status_;
};

// True when a process with this pid exists and is not a zombie.
bool process_alive(pid_t pid);

// Finds `program` the way execvp would: returned unchanged when it contains a '/', otherwise the
// first executable match on PATH. Returns an empty string when there is none.
std::string find_executable(const std::string& program);

// A shell command run to completion: its exit code (-1 when it did not exit normally) and its
// stdout and stderr together. For tests and tools that drive kubectl, helm and the like.
struct ShellResult {
  int exit_code = -1;
  std::string output;
  // The last non-empty line, where such tools put their answer ("yes", a name) below warnings.
  std::string last_line() const;
};
ShellResult run_shell(const std::string& command);

}  // namespace perimeter::process
