#include "runtime/controller.h"

#include "core/thread_name.h"
#include "kube/api_error.h"

namespace perimeter::runtime {

using nlohmann::json;

Controller::Controller(std::string name, Reconciler& reconciler, ControllerOptions options,
                       RuntimeMetrics& metrics, Logger logger, Clock& clock)
    : name_(std::move(name)),
      reconciler_(reconciler),
      workers_(std::max(1, options.workers)),
      cache_sync_timeout_(options.cache_sync_timeout),
      metrics_(metrics),
      logger_(std::move(logger)),
      clock_(clock),
      queue_(name_,
             options.rate_limiter ? std::move(options.rate_limiter)
                                  : default_controller_rate_limiter(clock),
             clock, &metrics),
      reconcile_time_(metrics.reconcile_time_seconds.Add({{"controller", name_}},
                                                         RuntimeMetrics::reconcile_buckets())),
      errors_(metrics.reconcile_errors_total.Add({{"controller", name_}})) {}

Controller::~Controller() {
  stop();
}

void Controller::watch(Informer& informer) {
  informers_.push_back(&informer);
  auto enqueue = [this](const ObjectPtr& object) { queue_.add(Store::key_of(*object)); };
  informer.add_handlers(
      {enqueue, [enqueue](const ObjectPtr&, const ObjectPtr& now) { enqueue(now); }, enqueue});
}

void Controller::watch(Informer& informer, UpdatePredicate relevant) {
  informers_.push_back(&informer);
  auto enqueue = [this](const ObjectPtr& object) { queue_.add(Store::key_of(*object)); };
  informer.add_handlers({enqueue,
                         [enqueue, relevant](const ObjectPtr& old, const ObjectPtr& now) {
                           if (relevant(*old, *now)) enqueue(now);
                         },
                         enqueue});
}

void Controller::watch_mapped(
    Informer& informer, std::function<std::vector<std::string>(const nlohmann::json&)> map_to_keys) {
  informers_.push_back(&informer);
  auto enqueue = [this, map_to_keys](const ObjectPtr& object) {
    for (const auto& key : map_to_keys(*object)) queue_.add(key);
  };
  informer.add_handlers({enqueue,
                         [enqueue](const ObjectPtr& old, const ObjectPtr& now) {
                           enqueue(old);
                           enqueue(now);
                         },
                         enqueue});
}

bool generation_or_metadata_changed(const nlohmann::json& old_object,
                                    const nlohmann::json& new_object) {
  static const nlohmann::json kNone;
  const auto field = [](const nlohmann::json& object, const char* key) -> const nlohmann::json& {
    const auto metadata = object.find("metadata");
    if (metadata == object.end() || !metadata->is_object()) return kNone;
    const auto it = metadata->find(key);
    return it == metadata->end() ? kNone : *it;
  };
  for (const char* key :
       {"generation", "deletionTimestamp", "finalizers", "labels", "annotations"}) {
    if (field(old_object, key) != field(new_object, key)) return true;
  }
  return false;
}

void Controller::watch_owned(Informer& informer, const std::string& owner_kind) {
  informers_.push_back(&informer);
  auto enqueue_owner = [this, owner_kind](const ObjectPtr& object) {
    const auto& meta = (*object)["metadata"];
    if (!meta.contains("ownerReferences") || !meta["ownerReferences"].is_array()) return;
    for (const auto& owner : meta["ownerReferences"]) {
      if (owner.value("kind", "") != owner_kind || !owner.value("controller", false)) continue;
      const std::string ns = meta.value("namespace", "");
      const std::string name = owner.value("name", "");
      if (!name.empty()) queue_.add(kube::ObjectKey{ns, name}.str());
    }
  };
  informer.add_handlers({enqueue_owner,
                         [enqueue_owner](const ObjectPtr& old, const ObjectPtr& now) {
                           // An owner change moves the child: both the old and the new owner must
                           // look.
                           enqueue_owner(old);
                           enqueue_owner(now);
                         },
                         enqueue_owner});
}

void Controller::start() {
  for (auto* informer : informers_) {
    if (!informer->wait_for_sync(cache_sync_timeout_))
      throw std::runtime_error("controller " + name_ + ": cache for " +
                               informer->type().describe() + " did not sync in time");
  }
  logger_.info("caches synced, starting workers", {{"controller", name_}, {"workers", workers_}});
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void Controller::stop() {
  queue_.shut_down_with_drain();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
}

void Controller::worker_loop() {
  name_this_thread("reconcile/" + name_);
  while (auto key = queue_.get()) {
    reconcile_key(*key);
    queue_.done(*key);
  }
}

bool Controller::process_next_ready() {
  auto key = queue_.try_get();
  if (!key) return false;
  reconcile_key(*key);
  queue_.done(*key);
  return true;
}

void Controller::reconcile_key(const std::string& key) {
  const auto started = std::chrono::steady_clock::now();
  std::string result;
  try {
    const auto outcome = reconciler_.reconcile(kube::ObjectKey::parse(key));
    queue_.forget(key);
    if (outcome.requeue_after) {
      queue_.add_after(key, *outcome.requeue_after);
      result = "requeue_after";
    } else {
      result = "success";
    }
  } catch (const TerminalError& e) {
    queue_.forget(key);
    errors_.Increment();
    result = "terminal_error";
    logger_.error("reconcile failed terminally",
                  {{"controller", name_}, {"key", key}, {"error", e.what()}});
  } catch (const std::exception& e) {
    queue_.add_rate_limited(key);
    errors_.Increment();
    result = "error";
    logger_.warn("reconcile failed, will retry", {{"controller", name_},
                                                  {"key", key},
                                                  {"error", e.what()},
                                                  {"retries", queue_.num_requeues(key)}});
  }
  reconcile_time_.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  metrics_.reconcile_total.Add({{"controller", name_}, {"result", result}}).Increment();
}

}  // namespace perimeter::runtime
