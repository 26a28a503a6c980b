#include "runtime/manager.h"

#include <condition_variable>

namespace perimeter::runtime {

SharedCache::SharedCache(RuntimeMetrics& metrics, Logger logger)
    : metrics_(metrics), logger_(std::move(logger)) {}

SharedCache::~SharedCache() {
  stop();
}

std::string SharedCache::key_of(const kube::ResourceClient& client,
                                const InformerOptions& options) {
  return client.type().describe() + "|" + options.ns + "|" + options.label_selector + "|" +
         options.field_selector;
}

Informer& SharedCache::informer(kube::ResourceClient& client, InformerOptions options) {
  const std::string key = key_of(client, options);
  std::lock_guard lock(mutex_);
  if (auto it = informers_.find(key); it != informers_.end()) return *it->second;
  auto created = std::make_unique<Informer>(client, std::move(options), metrics_,
                                            logger_.child(client.type().describe()));
  Informer& informer = *informers_.emplace(key, std::move(created)).first->second;
  if (started_) informer.start();
  return informer;
}

SharedCache::MultiNamespace SharedCache::informers(kube::ResourceClient& client,
                                                   const std::vector<std::string>& namespaces,
                                                   const InformerOptions& options) {
  MultiNamespace result;
  for (const auto& ns : namespaces) {
    InformerOptions per_namespace = options;
    per_namespace.ns = ns;
    if (!result.store) {
      // The first informer's store (an existing one when another controller asked first) is
      // the one the others fill.
      Informer& first = informer(client, per_namespace);
      result.store = first.shared_store();
      result.informers.push_back(&first);
      continue;
    }
    per_namespace.store = result.store;
    result.informers.push_back(&informer(client, per_namespace));
  }
  if (!result.store) result.store = std::make_shared<Store>();
  return result;
}

void SharedCache::start() {
  std::lock_guard lock(mutex_);
  started_ = true;
  for (auto& [key, informer] : informers_) informer->start();
}

void SharedCache::stop() {
  std::lock_guard lock(mutex_);
  for (auto& [key, informer] : informers_) informer->stop();
  started_ = false;
}

size_t SharedCache::size() const {
  std::lock_guard lock(mutex_);
  return informers_.size();
}

Manager::Manager(ManagerOptions options, kube::ResourceClient& leases, RuntimeMetrics& metrics,
                 Logger logger)
    : options_(std::move(options)),
      leases_(leases),
      metrics_(metrics),
      logger_(std::move(logger)) {}

void Manager::add(ControllerFactory factory) {
  factories_.push_back(std::move(factory));
}

void Manager::lead(std::stop_token stop) {
  SharedCache cache(metrics_, logger_.child("cache"));
  std::vector<std::unique_ptr<ManagedController>> controllers;
  for (const auto& factory : factories_) controllers.push_back(factory());
  for (auto& controller : controllers) controller->setup(cache);
  cache.start();
  for (auto& controller : controllers) controller->start();
  ready_ = true;
  logger_.info("controllers started",
               {{"controllers", controllers.size()}, {"informers", cache.size()}});

  std::mutex mutex;
  std::condition_variable_any wake;
  std::unique_lock lock(mutex);
  wake.wait(lock, stop, [] { return false; });

  ready_ = false;
  logger_.info("stopping controllers");
  // Controllers first (their reconciles may read the cache), then the informers.
  for (auto it = controllers.rbegin(); it != controllers.rend(); ++it) (*it)->stop();
  cache.stop();
}

bool Manager::run(std::stop_token stop) {
  if (!options_.leader_elect) {
    lead(stop);
    return true;
  }
  ready_ = true;  // a follower is ready: it stands by to take over
  LeaderCallbacks callbacks;
  callbacks.on_started_leading = [this](std::stop_token term) {
    ready_ = false;
    lead(term);
  };
  callbacks.on_new_leader = [this](const std::string& identity) {
    logger_.info("leader observed", {{"leader", identity}});
  };
  LeaderElector elector(leases_, options_.election, std::move(callbacks), metrics_,
                        logger_.child("leader-election"));
  elector.run(stop);
  return stop.stop_requested();
}

}  // namespace perimeter::runtime
