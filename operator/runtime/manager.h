#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <vector>

#include "core/log.h"
#include "kube/resource_client.h"
#include "runtime/informer.h"
#include "runtime/leader_election.h"
#include "runtime/metrics.h"

namespace perimeter::runtime {

// The informers of one term of leadership, shared by every controller (controller-runtime's
// cache): asking twice for the same kind, namespace and selectors returns the same informer, so
// two controllers that watch Pods cost one watch and see one state.
class SharedCache {
 public:
  SharedCache(RuntimeMetrics& metrics, Logger logger);
  ~SharedCache();
  SharedCache(const SharedCache&) = delete;
  SharedCache& operator=(const SharedCache&) = delete;

  // The informer for client's kind with these options (namespace, label and field selector);
  // created on first request. `options.store` and `options.transform` apply on creation only.
  Informer& informer(kube::ResourceClient& client, InformerOptions options);
  // One informer per namespace for client's kind, all filling one store (the multi-namespace
  // cache); an empty list gives an empty store and no informer.
  struct MultiNamespace {
    std::shared_ptr<Store> store;
    std::vector<Informer*> informers;
  };
  MultiNamespace informers(kube::ResourceClient& client, const std::vector<std::string>& namespaces,
                           const InformerOptions& options);

  // Starts every informer created so far (informers asked for later start at once).
  void start();
  void stop();
  size_t size() const;

 private:
  static std::string key_of(const kube::ResourceClient& client, const InformerOptions& options);

  RuntimeMetrics& metrics_;
  Logger logger_;
  mutable std::mutex mutex_;
  bool started_ = false;                                        // guarded by mutex_
  std::map<std::string, std::unique_ptr<Informer>> informers_;  // guarded by mutex_
};

// The namespaces a controller's namespaced informers cover: the one it is confined to, else the
// ones that opted in (nullopt: every namespace, as {""}). An empty opt-in list gives none.
std::vector<std::string> namespaces_to_watch(
    const std::string& watch_namespace, const std::optional<std::set<std::string>>& opted_in);

// One controller as the Manager runs it. A fresh one is made for each term of leadership, so no
// state of a lost term survives into the next.
class ManagedController {
 public:
  virtual ~ManagedController() = default;
  virtual std::string name() const = 0;
  // Before the cache starts: ask it for informers, build the reconciler and its controller.
  virtual void setup(SharedCache& cache) = 0;
  // After the cache started: start the workers (a controller waits for its caches to sync).
  virtual void start() = 0;
  // Leadership ended or shutdown: stop taking keys and stop every thread of its own.
  virtual void stop() = 0;
};
using ControllerFactory = std::function<std::unique_ptr<ManagedController>()>;

struct ManagerOptions {
  bool leader_elect = true;
  LeaderElectionConfig election;
};

// controller-runtime's Manager: one shared cache, the controllers registered against it, one
// leader election. The leader sets every controller up, starts the cache, then the controllers;
// leadership lost stops them all. `ready` is what /readyz reports: true on a follower (it stands
// by to take over) and, on the leader, once its controllers have started.
class Manager {
 public:
  Manager(ManagerOptions options, kube::ResourceClient& leases, RuntimeMetrics& metrics,
          Logger logger);

  // Call before run().
  void add(ControllerFactory factory);

  // Runs until `stop` is requested; returns false when leadership was lost or the controllers
  // could not start (the process should exit so that no leader-only work can linger, as
  // controller-runtime does).
  bool run(std::stop_token stop);
  bool ready() const { return ready_.load(); }

 private:
  // One term: set up, start, wait for the token, stop. False when a controller failed to start
  // (everything started is stopped again).
  bool lead(std::stop_token stop);

  ManagerOptions options_;
  kube::ResourceClient& leases_;
  RuntimeMetrics& metrics_;
  Logger logger_;
  std::vector<ControllerFactory> factories_;
  std::atomic<bool> ready_{false};
};

}  // namespace perimeter::runtime
