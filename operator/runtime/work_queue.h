#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "core/clock.h"
#include "runtime/metrics.h"
#include "runtime/rate_limiter.h"

namespace prometheus {
class Counter;
class Gauge;
}  // namespace prometheus

namespace perimeter::runtime {

// client-go's rate-limited delaying work queue:
//  - a key is queued at most once however often it is added (dirty set);
//  - a key handed to a worker is never handed to a second one before done() (processing set);
//    an add while it is processing queues it again after done();
//  - add_after() holds a key until its time on the injected clock; add_rate_limited() asks the
//    rate limiter how long; forget() resets the key's backoff after a success;
//  - shut_down() stops new adds and wakes every get(); shut_down_with_drain() also waits for the
//    keys being processed.
// Time comes from a Clock, so tests move it with FakeClock and check delays exactly: every call
// first moves the keys that are due into the queue.
class WorkQueue {
 public:
  WorkQueue(std::string name, std::unique_ptr<RateLimiter> rate_limiter, Clock& clock,
            RuntimeMetrics* metrics = nullptr);
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void add(const std::string& key);
  void add_after(const std::string& key, Clock::Duration delay);
  void add_rate_limited(const std::string& key);
  void forget(const std::string& key);
  int num_requeues(const std::string& key);

  // Blocks until a key is ready; nullopt once the queue is shut down and empty.
  std::optional<std::string> get();
  // Returns a ready key or nullopt at once.
  std::optional<std::string> try_get();
  void done(const std::string& key);

  size_t len();          // keys ready to be handed out
  size_t num_waiting();  // keys held by add_after/add_rate_limited
  // When the earliest waiting key becomes ready, if any.
  std::optional<Clock::TimePoint> next_ready_time();

  void shut_down();
  void shut_down_with_drain();
  bool shutting_down();
  const std::string& name() const { return name_; }

 private:
  void add_locked(const std::string& key);
  void promote_due_locked();
  void update_depth_locked();
  void timer_loop();

  const std::string name_;
  std::unique_ptr<RateLimiter> rate_limiter_;
  Clock& clock_;
  prometheus::Gauge* depth_ = nullptr;
  prometheus::Counter* adds_ = nullptr;
  prometheus::Counter* retries_ = nullptr;

  std::mutex mutex_;
  std::condition_variable ready_;    // a key became ready, or shutdown
  std::condition_variable waiting_;  // the timer must recompute its next wake-up
  std::condition_variable drained_;  // processing became empty
  std::deque<std::string> queue_;
  std::set<std::string> dirty_;
  std::set<std::string> processing_;
  std::map<std::string, Clock::TimePoint> waiting_until_;
  bool shutting_down_ = false;
  bool timer_stop_ = false;
  std::thread timer_;
};

}  // namespace perimeter::runtime
