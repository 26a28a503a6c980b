#pragma once

#include <chrono>
#include <string>

#include "core/log.h"

namespace perimeter::localcluster {

// An exclusive advisory lock (flock) on a file, held for the object's life: what lets only one
// real node run on a machine at a time, since their service proxies and NetworkPolicy enforcers
// share the host's iptables. flock, so `flock(1)` on the same path takes part too. The holder
// writes its pid into the file for whoever waits.
class MachineLock {
 public:
  // Waits up to `wait_limit` for the lock, logging once that it waits and for whom. Throws
  // std::runtime_error naming the path and the holder's pid when the wait runs out.
  static MachineLock acquire(const std::string& path, std::chrono::milliseconds wait_limit,
                             const Logger& logger);

  MachineLock(MachineLock&& other) noexcept;
  MachineLock& operator=(MachineLock&& other) noexcept;
  MachineLock(const MachineLock&) = delete;
  MachineLock& operator=(const MachineLock&) = delete;
  ~MachineLock();

 private:
  explicit MachineLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace perimeter::localcluster
