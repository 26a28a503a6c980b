// The Manager and its shared cache over the in-memory API server: controllers share informers,
// a multi-namespace cache sees its namespaces only, and a controller is set up before the cache
// starts, started after it, and stopped when the Manager stops.
#include "runtime/manager.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <thread>

#include "core/capturing_log_sink.h"
#include "kube/fake_api_server.h"
#include "kube/resource_client.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;

json pod(const std::string& ns, const std::string& name) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"namespace", ns}, {"name", name}, {"labels", {{"app", "runner"}}}}}};
}

class ManagerTest : public ::testing::Test {
 protected:
  ManagerTest() {
    for (const char* ns : {"team-a", "team-b", "kube-system"}) {
      server.seed(std::string("/api/v1/namespaces/") + ns + "/pods",
                  pod(ns, std::string(ns) + "-1"));
    }
  }
  Logger logger() { return Logger("manager", sink); }

  perimeter::testing::FakeApiServer server;
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics{registry};
  RuntimeMetrics metrics{registry};
  kube::ResourceClient pods{server, kube::resources::pods(), client_metrics};
  kube::ResourceClient leases{server, kube::resources::leases(), client_metrics};
  std::shared_ptr<perimeter::testing::CapturingLogSink> sink =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

TEST_F(ManagerTest, TheSameKindAndSelectorsGiveOneSharedInformer) {
  SharedCache cache(metrics, logger());
  InformerOptions options;
  options.label_selector = "app=runner";
  Informer& first = cache.informer(pods, options);
  Informer& second = cache.informer(pods, options);
  EXPECT_EQ(&first, &second);
  options.label_selector = "app=other";
  EXPECT_NE(&cache.informer(pods, options), &first);
  EXPECT_EQ(cache.size(), 2u);
}

TEST_F(ManagerTest, AMultiNamespaceCacheHoldsItsNamespacesOnlyInOneStore) {
  SharedCache cache(metrics, logger());
  auto both = cache.informers(pods, {"team-a", "team-b"}, {});
  ASSERT_EQ(both.informers.size(), 2u);
  cache.start();
  for (auto* informer : both.informers)
    ASSERT_TRUE(informer->wait_for_sync(std::chrono::seconds(10)));
  EXPECT_EQ(both.store->size(), 2u);
  EXPECT_NE(both.store->get("team-a/team-a-1"), nullptr);
  EXPECT_NE(both.store->get("team-b/team-b-1"), nullptr);
  EXPECT_EQ(both.store->get("kube-system/kube-system-1"), nullptr);
  // Only namespaced lists and watches were made: nothing across the cluster.
  for (const auto& request : server.requests()) {
    EXPECT_EQ(request.find(" /api/v1/pods"), std::string::npos) << request;
  }
  // A new pod arrives through its namespace's watch; the other namespace's objects stay.
  server.seed("/api/v1/namespaces/team-b/pods", pod("team-b", "team-b-2"));
  for (int i = 0; i < 100 && both.store->size() < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(both.store->size(), 3u);

  auto none = cache.informers(pods, {}, {});
  EXPECT_TRUE(none.informers.empty());
  ASSERT_NE(none.store, nullptr);
  EXPECT_EQ(none.store->size(), 0u);
}

// Records the order in which the Manager drives a controller.
class RecordingController : public ManagedController {
 public:
  RecordingController(kube::ResourceClient& pods, std::vector<std::string>& calls,
                      std::mutex& mutex, Informer** seen)
      : pods_(pods), calls_(calls), mutex_(mutex), seen_(seen) {}
  std::string name() const override { return "recording"; }
  void setup(SharedCache& cache) override {
    informer_ = &cache.informer(pods_, {});
    record(informer_->has_synced() ? "setup after sync" : "setup");
    *seen_ = informer_;
  }
  void start() override {
    ASSERT_TRUE(informer_->wait_for_sync(std::chrono::seconds(10)));
    record("start");
  }
  void stop() override { record("stop"); }

 private:
  void record(const std::string& call) {
    std::lock_guard lock(mutex_);
    calls_.push_back(call);
  }
  kube::ResourceClient& pods_;
  std::vector<std::string>& calls_;
  std::mutex& mutex_;
  Informer** seen_;
  Informer* informer_ = nullptr;
};

TEST_F(ManagerTest, ControllersAreSetUpOnOneCacheStartedAndStoppedWithTheManager) {
  ManagerOptions options;
  options.leader_elect = false;
  Manager manager(options, leases, metrics, logger());
  std::vector<std::string> calls;
  std::mutex mutex;
  Informer* first = nullptr;
  Informer* second = nullptr;
  manager.add([&] { return std::make_unique<RecordingController>(pods, calls, mutex, &first); });
  manager.add([&] { return std::make_unique<RecordingController>(pods, calls, mutex, &second); });
  EXPECT_FALSE(manager.ready());
  std::jthread run([&](std::stop_token stop) { EXPECT_TRUE(manager.run(stop)); });
  for (int i = 0; i < 200 && !manager.ready(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(manager.ready());
  EXPECT_EQ(first, second) << "two controllers watching Pods share one informer";
  run.request_stop();
  run.join();
  EXPECT_FALSE(manager.ready());
  std::lock_guard lock(mutex);
  EXPECT_EQ(calls, (std::vector<std::string>{"setup", "setup", "start", "start", "stop", "stop"}));
}

// A controller whose caches never sync (say, RBAC refuses its list) throws from start().
class FailingController : public RecordingController {
 public:
  using RecordingController::RecordingController;
  void start() override { throw std::runtime_error("caches of failing did not sync"); }
};

TEST_F(ManagerTest, AControllerThatCannotStartStopsTheManagerCleanlyInsteadOfTerminating) {
  ManagerOptions options;
  options.leader_elect = false;
  Manager manager(options, leases, metrics, logger());
  std::vector<std::string> calls;
  std::mutex mutex;
  Informer* first = nullptr;
  Informer* second = nullptr;
  manager.add([&] { return std::make_unique<RecordingController>(pods, calls, mutex, &first); });
  manager.add([&] { return std::make_unique<FailingController>(pods, calls, mutex, &second); });
  std::stop_source never;
  bool result = true;
  EXPECT_NO_THROW(result = manager.run(never.get_token()));
  EXPECT_FALSE(result) << "run() says the manager did not run to a requested stop";
  EXPECT_FALSE(manager.ready());
  std::lock_guard lock(mutex);
  // The controller that had started is stopped again; the failed one is stopped too.
  EXPECT_EQ(calls, (std::vector<std::string>{"setup", "setup", "start", "stop", "stop"}));
}

}  // namespace
}  // namespace perimeter::runtime
