// Informers against a real kube-apiserver + etcd: every change delivered in order, recovery from
// an apiserver restart, and a relist after 410 Gone forced by etcd compaction.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <thread>

#include "cluster/local_cluster.h"
#include "core/log.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/metric_value.h"
#include "kube/resource_client.h"
#include "runtime/informer.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;
using perimeter::testing::metric_value;

// Retries a write across an apiserver restart (the pool's old connections fail once).
template <typename F>
void with_retries(F&& write) {
  for (int attempt = 0;; ++attempt) {
    try {
      write();
      return;
    } catch (const kube::TransportError&) {
      if (attempt >= 50) throw;
    } catch (const kube::ApiError& e) {
      if (e.code() < 500 || attempt >= 50) throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

template <typename Predicate>
bool eventually(Predicate&& done, std::chrono::seconds limit = std::chrono::seconds(120)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

class InformerIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = &perimeter::testing::shared_cluster();
    auto config = kube::Config::from_kubeconfig_file(cluster_->kubeconfig_path());
    config.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config);
    config_maps_ = std::make_unique<kube::ResourceClient>(
        *transport_, kube::resources::config_maps(), client_metrics_);
    ns_ = make_namespace();
  }

  std::string make_namespace() {
    kube::ResourceClient namespaces(*transport_, kube::resources::namespaces(), client_metrics_);
    const std::string name =
        "informer-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    namespaces.create(
        "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}});
    return name;
  }

  static json config_map(const std::string& name, const std::string& value) {
    return {{"apiVersion", "v1"},
            {"kind", "ConfigMap"},
            {"metadata", {{"name", name}}},
            {"data", {{"v", value}}}};
  }

  // Runs `work(i)` for i in [0, count) on four threads.
  static void parallel(int count, const std::function<void(int)>& work) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < count; i += 4) work(i);
      });
    }
    for (auto& thread : threads) thread.join();
  }

  // The etcd revision now, through etcd's JSON gateway.
  int64_t etcd_revision(kube::Transport& etcd) {
    kube::HttpRequest request{"POST", "/v3/kv/range", {}, R"({"key":"Lw==","limit":1})", {}};
    const auto response = etcd.send(request);
    EXPECT_EQ(response.status, 200) << response.body;
    return std::stoll(json::parse(response.body)["header"]["revision"].get<std::string>());
  }

  static inline int counter_ = 0;
  perimeter::testing::LocalCluster* cluster_ = nullptr;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  RuntimeMetrics metrics_{registry_};
  std::unique_ptr<kube::HttpTransport> transport_;
  std::unique_ptr<kube::ResourceClient> config_maps_;
  std::string ns_;
};

TEST_F(InformerIntegrationTest, DeliversEveryChangeToAThousandObjectsInOrder) {
  constexpr int kObjects = 1000;
  std::mutex mutex;
  std::map<std::string, std::vector<std::string>> seen;
  std::map<std::string, int64_t> last_version;
  std::atomic<int> out_of_order{0};
  std::atomic<int> deleted{0};
  auto record = [&](const ObjectPtr& object, const std::string& what) {
    const auto& meta = (*object)["metadata"];
    const int64_t version = std::stoll(meta["resourceVersion"].get<std::string>());
    std::lock_guard lock(mutex);
    const std::string name = meta["name"];
    if (version < last_version[name]) ++out_of_order;
    last_version[name] = version;
    seen[name].push_back(what + " " + (*object)["data"].value("v", ""));
  };
  InformerOptions options;
  options.ns = ns_;
  Informer informer(*config_maps_, options, metrics_, Logger("informer"));
  informer.add_handlers({[&](const ObjectPtr& o) { record(o, "add"); },
                         [&](const ObjectPtr&, const ObjectPtr& o) { record(o, "update"); },
                         [&](const ObjectPtr& o) {
                           record(o, "delete");
                           ++deleted;
                         }});
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(std::chrono::seconds(30)));

  const auto name = [](int i) { return "obj-" + std::to_string(i); };
  parallel(kObjects, [&](int i) { config_maps_->create(ns_, config_map(name(i), "1")); });
  parallel(kObjects, [&](int i) {
    config_maps_->merge_patch(ns_, name(i), {{"data", {{"v", "2"}}}});
  });
  parallel(kObjects, [&](int i) { config_maps_->remove(ns_, name(i)); });

  ASSERT_TRUE(eventually([&] { return deleted.load() >= kObjects; })) << deleted.load();
  informer.stop();
  std::lock_guard lock(mutex);
  ASSERT_EQ(seen.size(), static_cast<size_t>(kObjects));
  int wrong = 0;
  for (const auto& [object, events] : seen) {
    if (events != std::vector<std::string>{"add 1", "update 2", "delete 2"}) {
      if (++wrong <= 5) ADD_FAILURE() << object << " saw " << json(events).dump();
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(out_of_order, 0);
  EXPECT_EQ(informer.store().size(), 0u);
}

TEST_F(InformerIntegrationTest, RecoversFromAnApiserverRestart) {
  for (int i = 0; i < 10; ++i)
    config_maps_->create(ns_, config_map("before-" + std::to_string(i), "1"));
  InformerOptions options;
  options.ns = ns_;
  options.backoff.initial = std::chrono::milliseconds(200);
  options.backoff.max = std::chrono::seconds(2);
  Informer informer(*config_maps_, options, metrics_, Logger("informer"));
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(std::chrono::seconds(30)));
  EXPECT_EQ(informer.store().size(), 10u);

  cluster_->restart_apiserver();
  for (int i = 0; i < 10; ++i) {
    with_retries([&] { config_maps_->create(ns_, config_map("after-" + std::to_string(i), "1")); });
    with_retries([&] {
      config_maps_->merge_patch(ns_, "before-" + std::to_string(i), {{"data", {{"v", "2"}}}});
    });
  }
  const bool caught_up = eventually([&] {
    if (informer.store().size() != 20) return false;
    for (const auto& object : informer.store().list()) {
      const std::string name = (*object)["metadata"]["name"];
      const std::string v = (*object)["data"]["v"];
      if (name.rfind("before-", 0) == 0 && v != "2") return false;
    }
    return true;
  });
  informer.stop();
  EXPECT_TRUE(caught_up) << "store has " << informer.store().size() << " objects";
  const double restarts =
      std::max(0.0, metric_value(registry_, "perimeter_watch_restarts_total",
                                 {{"resource", "configmaps.v1"}, {"reason", "error"}})) +
      std::max(0.0, metric_value(registry_, "perimeter_watch_restarts_total",
                                 {{"resource", "configmaps.v1"}, {"reason", "closed"}}));
  EXPECT_GE(restarts, 1);
}

TEST_F(InformerIntegrationTest, RelistsAfterGoneForcedByEtcdCompaction) {
  for (int i = 0; i < 5; ++i)
    config_maps_->create(ns_, config_map("old-" + std::to_string(i), "1"));
  InformerOptions options;
  options.ns = ns_;
  options.backoff.initial = std::chrono::milliseconds(200);
  options.backoff.max = std::chrono::seconds(2);
  Informer informer(*config_maps_, options, metrics_, Logger("informer"));
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(std::chrono::seconds(30)));
  const std::string version_before = informer.resource_version();

  // Move etcd past the informer's version with writes it does not watch, then compact them away,
  // so the informer's next watch asks for history that no longer exists.
  const std::string elsewhere = make_namespace();
  for (int i = 0; i < 20; ++i)
    config_maps_->create(elsewhere, config_map("noise-" + std::to_string(i), "1"));
  kube::Config etcd_config;
  etcd_config.server = cluster_->etcd_url();
  etcd_config.qps = 0;
  kube::HttpTransport etcd(etcd_config);
  const int64_t revision = etcd_revision(etcd);
  ASSERT_GT(revision, std::stoll(version_before));
  const auto compacted =
      etcd.send({"POST",
                 "/v3/kv/compaction",
                 {},
                 json{{"revision", std::to_string(revision)}, {"physical", true}}.dump(),
                 {}});
  ASSERT_EQ(compacted.status, 200) << compacted.body;

  // Deletions while the watch is down can only be seen by a relist.
  cluster_->restart_apiserver();
  with_retries([&] { config_maps_->remove(ns_, "old-0"); });
  with_retries([&] { config_maps_->create(ns_, config_map("new-0", "1")); });

  const bool relisted = eventually([&] {
    return metric_value(registry_, "perimeter_watch_restarts_total",
                        {{"resource", "configmaps.v1"}, {"reason", "gone"}}) >= 1 &&
           informer.store().get(ns_ + "/old-0") == nullptr &&
           informer.store().get(ns_ + "/new-0") != nullptr;
  });
  informer.stop();
  EXPECT_TRUE(relisted) << "gone restarts: "
                        << metric_value(registry_, "perimeter_watch_restarts_total",
                                        {{"resource", "configmaps.v1"}, {"reason", "gone"}})
                        << ", store size " << informer.store().size();
  EXPECT_EQ(informer.store().size(), 5u);
}

}  // namespace
}  // namespace perimeter::runtime
