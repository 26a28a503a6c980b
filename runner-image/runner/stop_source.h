#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace perimeter::runner {

// One-shot cancellation shared by the threads serving a work item (the SDK's AbortController):
// requested once, never reset. Waiters wake at once when it fires.
class StopSource {
 public:
  void request() {
    {
      std::lock_guard lock(mutex_);
      requested_.store(true);
    }
    changed_.notify_all();
  }
  bool requested() const { return requested_.load(); }
  // The flag the API client's stream call polls.
  const std::atomic<bool>& flag() const { return requested_; }
  // Waits up to `delay`; true when the stop was requested.
  bool wait_for(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, delay, [this] { return requested_.load(); });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::atomic<bool> requested_{false};
};

// Waiting that a stop cuts short: the boundary that lets unit tests assert every delay exactly.
class StoppableSleeper {
 public:
  virtual ~StoppableSleeper() = default;
  // Waits `delay` or until `stop` fires, whichever is first.
  virtual void sleep_for(std::chrono::milliseconds delay, StopSource& stop) = 0;
};

class RealStoppableSleeper final : public StoppableSleeper {
 public:
  void sleep_for(std::chrono::milliseconds delay, StopSource& stop) override {
    stop.wait_for(delay);
  }
};

}  // namespace perimeter::runner
