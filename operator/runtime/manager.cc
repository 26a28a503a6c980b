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

std::vector<std::string> namespaces_to_watch(
    const std::string& watch_namespace, const std::optional<std::set<std::string>>& opted_in) {
  if (!watch_namespace.empty()) return {watch_namespace};
  if (opted_in) return {opted_in->begin(), opted_in->end()};
  return {""};
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

bool Manager::lead(std::stop_token stop) {
  SharedCache cache(metrics_, logger_.child("cache"));
  std::vector<std::unique_ptr<ManagedController>> controllers;
  size_t started = 0;
  // Controllers first (their reconciles may read the cache), then the informers.
  const auto stop_all = [&] {
    ready_ = false;
    for (size_t i = controllers.size(); i > 0; --i) controllers[i - 1]->stop();
    cache.stop();
  };
  try {
    for (const auto& factory : factories_) controllers.push_back(factory());
    for (auto& controller : controllers) controller->setup(cache);
    cache.start();
    for (auto& controller : controllers) {
      controller->start();
      ++started;
    }
  } catch (const std::exception& e) {
    // controller-runtime's "failed to wait for caches to sync": say which and why, stop what
    // runs, and let the process exit non-zero rather than terminate mid-flight.
    logger_.error("controllers failed to start",
                  {{"error", e.what()}, {"started", started}, {"controllers", controllers.size()}});
    stop_all();
    return false;
  }
  ready_ = true;
  logger_.info("controllers started",
               {{"controllers", controllers.size()}, {"informers", cache.size()}});

  std::mutex mutex;
  std::condition_variable_any wake;
  std::unique_lock lock(mutex);
  wake.wait(lock, stop, [] { return false; });

  logger_.info("stopping controllers");
  stop_all();
  return true;
}

bool Manager::run(std::stop_token stop) {
  if (!options_.leader_elect) return lead(stop) && stop.stop_requested();
  ready_ = true;  // a follower is ready: it stands by to take over
  // A term whose controllers cannot start ends the campaign too: the process exits and its
  // Deployment restarts it, instead of a leader that holds the lease and does nothing.
  std::stop_source campaign;
  std::stop_callback forward(stop, [&campaign] { campaign.request_stop(); });
  bool failed = false;
  LeaderCallbacks callbacks;
  callbacks.on_started_leading = [this, &campaign, &failed](std::stop_token term) {
    ready_ = false;
    if (!lead(term)) {
      failed = true;
      campaign.request_stop();
    }
  };
  callbacks.on_new_leader = [this](const std::string& identity) {
    logger_.info("leader observed", {{"leader", identity}});
  };
  LeaderElector elector(leases_, options_.election, std::move(callbacks), metrics_,
                        logger_.child("leader-election"));
  elector.run(campaign.get_token());
  return !failed && stop.stop_requested();
}

}  // namespace perimeter::runtime
