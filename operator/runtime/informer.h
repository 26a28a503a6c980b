#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/backoff.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "kube/resource_client.h"
#include "runtime/metrics.h"
#include "runtime/store.h"

namespace perimeter::runtime {

struct InformerOptions {
  std::string ns;  // empty: all namespaces
  std::string label_selector;
  std::string field_selector;
  int64_t page_size = 500;
  int watch_timeout_seconds = 300;
  // Reconnect backoff (kube-rs's default: 0.8 s doubling to 30 s, with jitter), reset once a
  // watch has been healthy for healthy_after or has delivered an event.
  BackoffPolicy backoff{std::chrono::milliseconds(800), std::chrono::seconds(30), 2.0, 0.2};
  std::chrono::milliseconds healthy_after{std::chrono::seconds(30)};
  // Applied to every object before it is cached (client-go's SetTransform): drop what the
  // controller never reads to save memory. Must not change namespace or name.
  std::function<void(nlohmann::json&)> transform;
  // What of each watched object to build at all (null: everything), before the transform: an
  // informer that keeps a few fields need not build the rest (managedFields above all) first.
  // Must keep metadata.name, namespace and resourceVersion, and kind.
  std::shared_ptr<const kube::JsonFilter> decode_filter;
  // The cache to fill; null: a store of the informer's own. Informers of one kind for several
  // namespaces share one store (controller-runtime's multi-namespace cache): each relist
  // replaces only its own namespace's objects.
  std::shared_ptr<Store> store;
};

// A transform that drops metadata.managedFields, usually the largest part of a cached object.
void strip_managed_fields(nlohmann::json& object);

struct EventHandlers {
  std::function<void(const ObjectPtr&)> on_add;
  std::function<void(const ObjectPtr& old_object, const ObjectPtr& new_object)> on_update;
  std::function<void(const ObjectPtr&)> on_delete;
};

// Keeps a Store equal to what the server has, as a state machine (kube-rs watcher):
//   list (paged) -> swap the cache in one step -> watch from the list's resourceVersion with
//   bookmarks -> apply events -> when the server ends the watch, watch again from the last
//   version seen.
// A 410 Gone (refused watch or ERROR event) and any event that does not decode (which may hide a
// lost change) lead to a relist; connection errors to a jittered-backoff reconnect. Each restart
// is counted in perimeter_watch_restarts_total{resource,reason}. Handlers run on the informer's
// own thread, in event order; they must not block for long.
class Informer {
 public:
  Informer(kube::ResourceClient& client, InformerOptions options, RuntimeMetrics& metrics,
           Logger logger, RandomSource& random = SystemRandom::instance(),
           Clock& clock = SystemClock::instance());
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  Store& store() { return *store_; }
  const std::shared_ptr<Store>& shared_store() const { return store_; }
  // Call before start().
  void add_handlers(EventHandlers handlers);

  void start();
  void stop();
  // True once the first list has been applied to the store.
  bool has_synced() const { return synced_.load(); }
  bool wait_for_sync(std::chrono::milliseconds timeout);
  // The resourceVersion the next watch starts from.
  std::string resource_version() const;
  const kube::ResourceType& type() const { return client_.type(); }

 private:
  enum class Next { kRelist, kRewatch, kStop };
  void run();
  void relist();
  // Runs one watch to its end; returns what to do next.
  Next watch_once();
  void apply(kube::WatchEvent event);
  void count_restart(const std::string& reason);
  void dispatch(const Store::Change& change);
  // Sleeps on the real clock, waking early on stop(); false when stopped.
  bool sleep_for(std::chrono::milliseconds delay);

  kube::ResourceClient& client_;
  InformerOptions options_;
  RuntimeMetrics& metrics_;
  Logger logger_;
  Clock& clock_;
  Backoff backoff_;
  std::shared_ptr<Store> store_;
  std::vector<EventHandlers> handlers_;
  std::array<prometheus::Counter*, 5> event_counters_{};  // by WatchEventType

  std::atomic<bool> synced_{false};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable synced_cv_;
  std::string resource_version_;
  kube::WatchStream* active_watch_ = nullptr;  // guarded by mutex_, for stop() to cancel
  std::thread thread_;
};

}  // namespace perimeter::runtime
