#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "kube/resource.h"
#include "runtime/informer.h"
#include "runtime/metrics.h"
#include "runtime/rate_limiter.h"
#include "runtime/work_queue.h"

namespace perimeter::runtime {

// What a reconcile asks for next. Polling anything outside the cluster is a requeue_after, never
// a sleeping worker.
struct ReconcileResult {
  std::optional<Clock::Duration> requeue_after;
  static ReconcileResult done() { return {}; }
  static ReconcileResult after(Clock::Duration delay) { return {delay}; }
};

// Thrown by a reconcile that must not be retried (bad spec the user has to fix): counted, logged,
// and the key forgotten until the object changes again.
class TerminalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// GenerationChangedPredicate plus what a controller acts on in metadata: the spec changed (a new
// generation), deletion started, or finalizers, labels or annotations changed. A status-only
// update is not relevant.
bool generation_or_metadata_changed(const nlohmann::json& old_object,
                                    const nlohmann::json& new_object);

// Level-triggered: reconcile(key) reads the current state and converges, whatever woke it. Any
// other exception is an error retried with the key's backoff.
class Reconciler {
 public:
  virtual ~Reconciler() = default;
  virtual ReconcileResult reconcile(const kube::ObjectKey& key) = 0;
};

struct ControllerOptions {
  int workers = 1;
  std::unique_ptr<RateLimiter> rate_limiter;  // null: client-go's default controller limiter
  std::chrono::milliseconds cache_sync_timeout{std::chrono::minutes(2)};
};

// controller-runtime's Controller: informers feed keys into one work queue; N workers take keys
// (a key is never in two workers at once) and call the reconciler; workers start only after every
// watched informer has synced. Metrics: perimeter_controller_reconcile_total{controller,result},
// _reconcile_errors_total, _reconcile_time_seconds, and the queue's depth/adds/retries.
class Controller {
 public:
  Controller(std::string name, Reconciler& reconciler, ControllerOptions options,
             RuntimeMetrics& metrics, Logger logger, Clock& clock = SystemClock::instance());
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Reconcile the objects an informer sees (the primary resource). Call before start().
  void watch(Informer& informer);
  // The same, but an update wakes the reconciler only when `relevant(old, new)` holds
  // (controller-runtime's predicates): e.g. generation_or_metadata_changed, so the controller's
  // own status writes do not wake it again.
  using UpdatePredicate =
      std::function<bool(const nlohmann::json& old_object, const nlohmann::json& new_object)>;
  void watch(Informer& informer, UpdatePredicate relevant);
  // Reconcile the keys `map_to_keys` returns for each object an informer sees (controller-runtime's
  // EnqueueRequestsFromMapFunc): a Service wakes the McpTunnels that route to it.
  void watch_mapped(Informer& informer,
                    std::function<std::vector<std::string>(const nlohmann::json&)> map_to_keys);
  // Reconcile the owner (same namespace, controller ownerReference of owner_kind) of the objects
  // an informer sees: children wake their parent.
  void watch_owned(Informer& informer, const std::string& owner_kind);

  // Waits for every watched informer to sync (throws std::runtime_error after
  // cache_sync_timeout), then starts the workers.
  void start();
  // Stops taking keys, lets reconciles in progress finish, joins the workers.
  void stop();

  // Takes one ready key and reconciles it; false when none was ready. For tests and tools that
  // drive the controller by hand instead of start().
  bool process_next_ready();

  WorkQueue& queue() { return queue_; }
  const std::string& name() const { return name_; }

 private:
  void worker_loop();
  void reconcile_key(const std::string& key);

  std::string name_;
  Reconciler& reconciler_;
  int workers_;
  std::chrono::milliseconds cache_sync_timeout_;
  RuntimeMetrics& metrics_;
  Logger logger_;
  Clock& clock_;
  WorkQueue queue_;
  std::vector<Informer*> informers_;
  std::vector<std::thread> threads_;
  prometheus::Histogram& reconcile_time_;
  prometheus::Counter& errors_;
};

}  // namespace perimeter::runtime
