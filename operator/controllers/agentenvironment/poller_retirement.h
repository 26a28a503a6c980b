#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>

#include "controllers/agentenvironment/session_poller.h"
#include "core/thread_name.h"

namespace perimeter::agentenvironment {

// Ends stopped session pollers off the reconcile workers. A poller told to stop may still be
// inside a long poll or finishing a claim; joining its threads on a reconcile worker would hold
// that worker (and every key queued behind it) for as long.
class PollerRetirement {
 public:
  PollerRetirement() : thread_([this](std::stop_token stop) { run(stop); }) {}
  // Ends every poller handed over, then the thread.
  ~PollerRetirement() {
    thread_.request_stop();
    cv_.notify_all();
  }
  PollerRetirement(const PollerRetirement&) = delete;
  PollerRetirement& operator=(const PollerRetirement&) = delete;

  // Tells the poller to stop claiming now, and ends it in the background.
  void retire(std::unique_ptr<SessionPoller> poller) {
    poller->request_stop();
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(poller));
    }
    cv_.notify_all();
  }

  // Returns once every poller handed over so far has ended (leadership lost, shutdown).
  void drain() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return queue_.empty() && ending_ == 0; });
  }

 private:
  void run(std::stop_token stop) {
    name_this_thread("poller-retire");
    std::unique_lock lock(mutex_);
    while (true) {
      cv_.wait(lock, stop, [this] { return !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and nothing left to end
      auto poller = std::move(queue_.front());
      queue_.pop_front();
      ++ending_;
      lock.unlock();
      poller.reset();  // joins its threads
      lock.lock();
      --ending_;
      cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable_any cv_;
  std::deque<std::unique_ptr<SessionPoller>> queue_;
  int ending_ = 0;
  std::jthread thread_;  // last: started after, and joined before, the members it uses
};

}  // namespace perimeter::agentenvironment
