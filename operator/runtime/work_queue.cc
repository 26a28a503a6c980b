#include "runtime/work_queue.h"

#include <algorithm>

#include "core/thread_name.h"

namespace perimeter::runtime {

namespace {
// The timer thread sleeps on the real clock towards a time on the injected one; with a fake
// clock the two drift apart, so it never sleeps longer than this before looking again.
constexpr auto kMaxTimerSleep = std::chrono::seconds(1);
}  // namespace

WorkQueue::WorkQueue(std::string name, std::unique_ptr<RateLimiter> rate_limiter, Clock& clock,
                     RuntimeMetrics* metrics)
    : name_(std::move(name)), rate_limiter_(std::move(rate_limiter)), clock_(clock) {
  if (metrics != nullptr) {
    depth_ = &metrics->workqueue_depth.Add({{"name", name_}});
    adds_ = &metrics->workqueue_adds_total.Add({{"name", name_}});
    retries_ = &metrics->workqueue_retries_total.Add({{"name", name_}});
  }
  timer_ = std::thread([this] { timer_loop(); });
}

WorkQueue::~WorkQueue() {
  shut_down();
  {
    std::lock_guard lock(mutex_);
    timer_stop_ = true;
  }
  waiting_.notify_all();
  timer_.join();
}

void WorkQueue::add_locked(const std::string& key) {
  if (shutting_down_) return;
  if (adds_ != nullptr) adds_->Increment();
  if (!dirty_.insert(key).second) return;   // already queued
  if (processing_.count(key) != 0) return;  // re-queued by done()
  queue_.push_back(key);
  update_depth_locked();
  ready_.notify_one();
}

void WorkQueue::update_depth_locked() {
  if (depth_ != nullptr) depth_->Set(static_cast<double>(queue_.size()));
}

void WorkQueue::promote_due_locked() {
  const auto now = clock_.now();
  for (auto it = waiting_until_.begin(); it != waiting_until_.end();) {
    if (it->second <= now) {
      const std::string key = it->first;
      it = waiting_until_.erase(it);
      add_locked(key);
    } else {
      ++it;
    }
  }
}

void WorkQueue::add(const std::string& key) {
  std::lock_guard lock(mutex_);
  promote_due_locked();
  add_locked(key);
}

void WorkQueue::add_after(const std::string& key, Clock::Duration delay) {
  std::lock_guard lock(mutex_);
  if (shutting_down_) return;
  if (delay <= Clock::Duration::zero()) {
    add_locked(key);
    return;
  }
  const auto ready_at = clock_.now() + delay;
  // A key already waiting keeps the earlier of its two times.
  auto [it, inserted] = waiting_until_.emplace(key, ready_at);
  if (!inserted && ready_at < it->second) it->second = ready_at;
  promote_due_locked();
  waiting_.notify_all();
}

void WorkQueue::add_rate_limited(const std::string& key) {
  const auto delay = rate_limiter_->when(key);
  if (retries_ != nullptr) retries_->Increment();
  add_after(key, delay);
}

void WorkQueue::forget(const std::string& key) {
  rate_limiter_->forget(key);
}

int WorkQueue::num_requeues(const std::string& key) {
  return rate_limiter_->num_requeues(key);
}

std::optional<std::string> WorkQueue::get() {
  std::unique_lock lock(mutex_);
  promote_due_locked();
  ready_.wait(lock, [&] { return !queue_.empty() || shutting_down_; });
  if (queue_.empty()) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  processing_.insert(key);
  dirty_.erase(key);
  update_depth_locked();
  return key;
}

std::optional<std::string> WorkQueue::try_get() {
  std::lock_guard lock(mutex_);
  promote_due_locked();
  if (queue_.empty()) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  processing_.insert(key);
  dirty_.erase(key);
  update_depth_locked();
  return key;
}

void WorkQueue::done(const std::string& key) {
  std::lock_guard lock(mutex_);
  processing_.erase(key);
  if (dirty_.count(key) != 0) {
    queue_.push_back(key);
    update_depth_locked();
    ready_.notify_one();
  }
  if (processing_.empty()) drained_.notify_all();
}

size_t WorkQueue::len() {
  std::lock_guard lock(mutex_);
  promote_due_locked();
  return queue_.size();
}

size_t WorkQueue::num_waiting() {
  std::lock_guard lock(mutex_);
  promote_due_locked();
  return waiting_until_.size();
}

std::optional<Clock::TimePoint> WorkQueue::next_ready_time() {
  std::lock_guard lock(mutex_);
  promote_due_locked();
  std::optional<Clock::TimePoint> earliest;
  for (const auto& [key, at] : waiting_until_) {
    if (!earliest || at < *earliest) earliest = at;
  }
  return earliest;
}

void WorkQueue::shut_down() {
  std::lock_guard lock(mutex_);
  shutting_down_ = true;
  waiting_until_.clear();
  ready_.notify_all();
  waiting_.notify_all();
}

void WorkQueue::shut_down_with_drain() {
  std::unique_lock lock(mutex_);
  shutting_down_ = true;
  waiting_until_.clear();
  ready_.notify_all();
  waiting_.notify_all();
  drained_.wait(lock, [&] { return processing_.empty(); });
}

bool WorkQueue::shutting_down() {
  std::lock_guard lock(mutex_);
  return shutting_down_;
}

void WorkQueue::timer_loop() {
  name_this_thread("queue-timer");
  std::unique_lock lock(mutex_);
  while (!timer_stop_) {
    promote_due_locked();
    if (waiting_until_.empty()) {
      waiting_.wait(lock);
      continue;
    }
    auto earliest = waiting_until_.begin()->second;
    for (const auto& [key, at] : waiting_until_) earliest = std::min(earliest, at);
    const auto sleep = std::min<Clock::Duration>(earliest - clock_.now(), kMaxTimerSleep);
    waiting_.wait_for(lock, std::max(sleep, Clock::Duration::zero()));
  }
}

}  // namespace perimeter::runtime
