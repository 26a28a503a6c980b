#pragma once

#include <csignal>

namespace perimeter {

// Blocks SIGINT and SIGTERM for the whole process so that no thread is interrupted by them, and
// lets one thread wait for them. Construct it in main() before any thread starts: threads inherit
// the blocked mask. The destructor restores the previous mask.
class ShutdownSignal {
 public:
  ShutdownSignal();
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Waits for SIGINT or SIGTERM and returns its number.
  int wait();
  // Waits at most timeout_ms; returns the signal number, or 0 when none arrived in time.
  int wait_for(int timeout_ms);

 private:
  sigset_t signals_{};
  sigset_t previous_{};
};

}  // namespace perimeter
