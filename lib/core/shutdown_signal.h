#pragma once

#include <csignal>

namespace perimeter {

// Blocks SIGINT and SIGTERM (and SIGHUP, for a process that reloads on it) for the whole process
// so that no thread is interrupted by them, and lets one thread wait for them. Construct it in
// main() before any thread starts: threads inherit the blocked mask. The destructor restores the
// previous mask.
class ShutdownSignal {
 public:
  enum class Reload { kNone, kOnSighup };
  explicit ShutdownSignal(Reload reload = Reload::kNone);
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Waits for one of the signals and returns its number.
  int wait();
  // Waits at most timeout_ms; returns the signal number, or 0 when none arrived in time.
  int wait_for(int timeout_ms);

 private:
  sigset_t signals_{};
  sigset_t previous_{};
};

}  // namespace perimeter
