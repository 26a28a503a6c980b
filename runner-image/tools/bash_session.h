#pragma once

#include <sys/types.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tools/file_io.h"

namespace perimeter::tools {

inline constexpr std::size_t kBashOutputLimit = 100 * 1024;  // UTF-16 units, as the SDK counts

// The command outlived its timeout; the session must be discarded (its command still runs).
class BashTimeout : public std::runtime_error {
 public:
  explicit BashTimeout(const std::string& what) : std::runtime_error(what) {}
};
// The shell exited (or could not start) before the command finished.
class BashTerminated : public std::runtime_error {
 public:
  BashTerminated() : std::runtime_error("bash session terminated") {}
};

// One persistent `/bin/bash --noprofile --norc` in a process group of its own, on pipes (no PTY,
// so input is never echoed). State (cwd, variables, background jobs) survives across commands.
// Completion is a per-command random sentinel printed after the command with its exit status.
// Destruction kills the whole group, so a hung foreground job dies with the shell.
class BashSession {
 public:
  struct Result {
    std::string output;  // stdout and stderr interleaved, ANSI CSI stripped, trailing \n removed
    int exit_code = -1;
  };

  // `env` is the complete environment ("NAME=value"); PS1, PS2 and TERM are set on top.
  BashSession(const std::string& workdir, std::vector<std::string> env);
  ~BashSession();
  BashSession(const BashSession&) = delete;
  BashSession& operator=(const BashSession&) = delete;

  // Runs one command. Throws BashTimeout or BashTerminated.
  Result exec(std::string_view command, std::chrono::milliseconds timeout);
  bool closed() const { return closed_; }
  pid_t pid() const { return pid_; }

 private:
  void kill_group();

  pid_t pid_ = -1;
  UniqueFd stdin_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  bool closed_ = false;
};

// The process environment without ANTHROPIC_* (any case): the runner's credentials stay out of
// the shell, as in the SDK's scrubbedShellEnv.
std::vector<std::string> scrubbed_environment();

}  // namespace perimeter::tools
