#include "runtime/event_recorder.h"

#include <cstdio>

#include "core/thread_name.h"
#include "kube/api_error.h"
#include "runtime/leader_election.h"

namespace perimeter::runtime {

using nlohmann::json;

EventRecorder::EventRecorder(kube::ResourceClient& events, EventRecorderOptions options,
                             RuntimeMetrics& metrics, Logger logger, Clock& clock)
    : events_(events),
      options_(std::move(options)),
      metrics_(metrics),
      logger_(std::move(logger)),
      clock_(clock),
      thread_([this] { run(); }) {}

EventRecorder::~EventRecorder() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void EventRecorder::drop(const std::string& reason) {
  metrics_.events_dropped_total.Add({{"reason", reason}}).Increment();
}

void EventRecorder::record(const json& involved_object, const std::string& type,
                           const std::string& reason, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= options_.queue_capacity || stopping_) {
      drop("queue_full");
      return;
    }
    queue_.push_back({involved_object, type, reason, message, clock_.wall_now()});
  }
  changed_.notify_all();
}

void EventRecorder::flush() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return (queue_.empty() && !writing_) || stopping_; });
}

void EventRecorder::run() {
  name_this_thread("events");
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return !queue_.empty() || stopping_; });
    if (stopping_) return;
    Pending next = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    write(next);
    lock.lock();
    writing_ = false;
    changed_.notify_all();
  }
}

void EventRecorder::write(const Pending& event) {
  const json& involved = event.involved;
  const json& meta = involved.contains("metadata") ? involved["metadata"] : json::object();
  const std::string object_ns = meta.value("namespace", "");
  const std::string ns = object_ns.empty() ? "default" : object_ns;
  const std::string object_name = meta.value("name", "");
  const std::string object_key =
      involved.value("kind", "") + "/" + ns + "/" + object_name + "/" + meta.value("uid", "");
  const std::string key = object_key + "/" + event.type + "/" + event.reason + "/" + event.message;
  const std::string timestamp = LeaderElector::format_micro_time(event.when).substr(0, 19) + "Z";
  const auto now = clock_.now();

  auto& bucket = per_object_[object_key];
  if (!bucket)
    bucket =
        std::make_unique<TokenBucket>(options_.qps_per_object, options_.burst_per_object, clock_);
  if (bucket->reserve() > Clock::Duration::zero()) {
    drop("rate_limited");
    return;
  }

  try {
    auto seen = written_.find(key);
    if (seen != written_.end() && now - seen->second.last_seen < options_.aggregation_window) {
      try {
        const int count = seen->second.count + 1;
        events_.merge_patch(seen->second.ns, seen->second.name,
                            {{"count", count}, {"lastTimestamp", timestamp}});
        seen->second.count = count;
        seen->second.last_seen = now;
        return;
      } catch (const kube::ApiError& e) {
        if (e.kind() != kube::ErrorKind::kNotFound) throw;
        written_.erase(seen);  // the Event expired on the server: write a fresh one
      }
    }
    char suffix[32];
    std::snprintf(suffix, sizeof(suffix), ".%llx%04llx",
                  static_cast<unsigned long long>(event.when.time_since_epoch().count()),
                  static_cast<unsigned long long>(++sequence_ & 0xffff));
    const std::string name = object_name + suffix;
    json body = {{"apiVersion", "v1"},
                 {"kind", "Event"},
                 {"metadata", {{"name", name}, {"namespace", ns}}},
                 {"involvedObject",
                  {{"apiVersion", involved.value("apiVersion", "")},
                   {"kind", involved.value("kind", "")},
                   {"name", object_name},
                   {"namespace", object_ns},
                   {"uid", meta.value("uid", "")},
                   {"resourceVersion", meta.value("resourceVersion", "")}}},
                 {"reason", event.reason},
                 {"message", event.message},
                 {"type", event.type},
                 {"source", {{"component", options_.component}, {"host", options_.host}}},
                 {"reportingComponent", options_.component},
                 {"reportingInstance", options_.host},
                 {"firstTimestamp", timestamp},
                 {"lastTimestamp", timestamp},
                 {"count", 1}};
    events_.create(ns, body);
    written_[key] = Written{ns, name, 1, now};
  } catch (const std::exception& e) {
    drop("error");
    logger_.warn("could not write event",
                 {{"object", object_key}, {"reason", event.reason}, {"error", e.what()}});
  }
}

}  // namespace perimeter::runtime
