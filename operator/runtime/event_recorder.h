#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/log.h"
#include "core/token_bucket.h"
#include "kube/resource_client.h"
#include "runtime/metrics.h"

namespace perimeter::runtime {

struct EventRecorderOptions {
  std::string component;  // source.component / reportingComponent, e.g. "perimeter-operator"
  std::string host;       // source.host / reportingInstance
  size_t queue_capacity = 1000;
  // The same object+type+reason+message within this window bumps count on the existing Event.
  std::chrono::minutes aggregation_window{10};
  // Per involved object, like client-go's spam filter: a burst, then one Event per 5 minutes.
  int burst_per_object = 25;
  double qps_per_object = 1.0 / 300.0;
};

// Writes core/v1 Events for the objects a controller manages. record() never blocks: it queues
// and returns; one background thread writes. A repeat (same object, type, reason and message
// within the window) becomes a merge patch of count and lastTimestamp on the Event already
// written, not a new Event. A full queue or a noisy object drops Events and counts
// perimeter_events_dropped_total{reason}.
class EventRecorder {
 public:
  EventRecorder(kube::ResourceClient& events, EventRecorderOptions options, RuntimeMetrics& metrics,
                Logger logger, Clock& clock = SystemClock::instance());
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  // type is "Normal" or "Warning"; reason is CamelCase.
  void record(const nlohmann::json& involved_object, const std::string& type,
              const std::string& reason, const std::string& message);
  // Waits until everything recorded so far has been written (or dropped).
  void flush();

 private:
  struct Pending {
    nlohmann::json involved;
    std::string type, reason, message;
    std::chrono::system_clock::time_point when;
  };
  struct Written {
    std::string ns, name;
    int count;
    Clock::TimePoint last_seen;
  };
  void run();
  void write(const Pending& event);
  void drop(const std::string& reason);

  kube::ResourceClient& events_;
  EventRecorderOptions options_;
  RuntimeMetrics& metrics_;
  Logger logger_;
  Clock& clock_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Pending> queue_;
  bool writing_ = false;
  bool stopping_ = false;
  // Only the writer thread touches these.
  std::map<std::string, Written> written_;
  std::map<std::string, std::unique_ptr<TokenBucket>> per_object_;
  uint64_t sequence_ = 0;
  std::thread thread_;
};

}  // namespace perimeter::runtime
