// The in-memory FakeApiServer that other areas' unit tests use, checked through the real client,
// informer and controller so its answers keep the apiserver's shapes.
#include "kube/fake_api_server.h"

#include <gtest/gtest.h>

#include "core/capturing_log_sink.h"
#include "core/fake_random.h"
#include "kube/api_error.h"
#include "kube/metric_value.h"
#include "kube/resource_client.h"
#include "runtime/controller.h"
#include "runtime/informer.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;

json config_map(const std::string& name, json labels = json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"labels", labels}}}};
}

template <typename Predicate>
bool eventually(Predicate&& done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

class FakeApiServerTest : public ::testing::Test {
 protected:
  InformerOptions fast_options(const std::string& ns) {
    InformerOptions options;
    options.ns = ns;
    options.backoff =
        BackoffPolicy{std::chrono::milliseconds(1), std::chrono::milliseconds(5), 2.0, 0.0};
    return options;
  }
  perimeter::testing::FakeApiServer server;
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics{registry};
  RuntimeMetrics metrics{registry};
  kube::ResourceClient config_maps{server, kube::resources::config_maps(), client_metrics};
  std::shared_ptr<perimeter::testing::CapturingLogSink> sink =
      std::make_shared<perimeter::testing::CapturingLogSink>();
  perimeter::testing::FakeRandom random;
};

TEST_F(FakeApiServerTest, AnswersLikeAnApiserverForCrudAndErrors) {
  const auto created = config_maps.create("a", config_map("c"));
  EXPECT_EQ(created["metadata"]["namespace"], "a");
  EXPECT_FALSE(created["metadata"]["uid"].get<std::string>().empty());
  EXPECT_THROW(
      {
        try {
          config_maps.create("a", config_map("c"));
        } catch (const kube::ApiError& e) {
          EXPECT_EQ(e.kind(), kube::ErrorKind::kAlreadyExists);
          throw;
        }
      },
      kube::ApiError);
  auto stale = created;
  config_maps.merge_patch("a", "c", {{"data", {{"k", "v"}}}});
  stale["data"] = {{"k", "stale"}};
  try {
    config_maps.update("a", stale);
    FAIL();
  } catch (const kube::ApiError& e) {
    EXPECT_TRUE(kube::is_conflict(e));
  }
  EXPECT_EQ(config_maps.get("a", "c")["data"]["k"], "v");
  config_maps.remove("a", "c");
  try {
    config_maps.get("a", "c");
    FAIL();
  } catch (const kube::ApiError& e) {
    EXPECT_TRUE(kube::is_not_found(e));
  }
}

TEST_F(FakeApiServerTest, SelectorsPagesFinalizersAndStatus) {
  for (int i = 0; i < 5; ++i)
    config_maps.create("a",
                       config_map("c" + std::to_string(i), {{"even", i % 2 == 0 ? "yes" : "no"}}));
  config_maps.create("b", config_map("other"));
  kube::ListOptions even;
  even.label_selector = "even=yes";
  EXPECT_EQ(config_maps.list_all("a", even)["items"].size(), 3u);
  kube::ListOptions paged;
  paged.limit = 2;
  EXPECT_EQ(config_maps.list("a", paged)["items"].size(), 2u);
  EXPECT_EQ(config_maps.list_all("a", paged)["items"].size(), 5u);
  EXPECT_EQ(config_maps.list_all("")["items"].size(), 6u);  // all namespaces

  auto with_finalizer = config_map("held");
  with_finalizer["metadata"]["finalizers"] = json::array({"perimeter.dev/cleanup"});
  config_maps.create("a", with_finalizer);
  config_maps.remove("a", "held");
  const auto terminating = config_maps.get("a", "held");
  EXPECT_TRUE(terminating["metadata"].contains("deletionTimestamp"));
  config_maps.json_patch("a", "held",
                         json::array({{{"op", "remove"}, {"path", "/metadata/finalizers"}}}));
  EXPECT_THROW(config_maps.get("a", "held"), kube::ApiError);

  config_maps.merge_patch_status("a", "c0", {{"status", {{"ready", true}}}});
  config_maps.merge_patch("a", "c0", {{"status", {{"ready", false}}}, {"data", {{"x", "y"}}}});
  const auto object = config_maps.get("a", "c0");
  EXPECT_EQ(object["status"]["ready"], true);  // only /status writes status
  EXPECT_EQ(object["data"]["x"], "y");
}

TEST_F(FakeApiServerTest, InformerFollowsWatchesRewatchesAndRelistsAfterCompaction) {
  config_maps.create("a", config_map("first"));
  Informer informer(config_maps, fast_options("a"), metrics, Logger("i", sink), random);
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(std::chrono::seconds(10)));
  config_maps.create("a", config_map("second"));
  config_maps.create("b", config_map("elsewhere"));
  ASSERT_TRUE(eventually([&] { return informer.store().size() == 2; }));

  server.close_watches();  // like an apiserver restart: resume from the last version
  config_maps.create("a", config_map("third"));
  ASSERT_TRUE(eventually([&] { return informer.store().size() == 3; }));

  // History gone and the watch broken: the resumed watch gets 410 and the informer relists.
  server.compact();
  server.close_watches();
  config_maps.remove("a", "first");
  ASSERT_TRUE(eventually([&] { return informer.store().get("a/first") == nullptr; }));
  informer.stop();
  EXPECT_EQ(informer.store().size(), 2u);
}

class CountingReconciler : public Reconciler {
 public:
  explicit CountingReconciler(kube::ResourceClient& client) : client_(client) {}
  ReconcileResult reconcile(const kube::ObjectKey& key) override {
    // Level-triggered: read the object, converge its status.
    try {
      const auto object = client_.get(key.ns, key.name);
      client_.merge_patch_status(
          key.ns, key.name, {{"status", {{"observed", object["metadata"]["resourceVersion"]}}}});
    } catch (const kube::ApiError& e) {
      if (!kube::is_not_found(e)) throw;
    }
    ++reconciles;
    return ReconcileResult::done();
  }
  std::atomic<int> reconciles{0};

 private:
  kube::ResourceClient& client_;
};

TEST_F(FakeApiServerTest, AControllerConvergesEveryObjectAndRetriesAServerError) {
  for (int i = 0; i < 20; ++i) config_maps.create("a", config_map("c" + std::to_string(i)));
  server.fail_next(
      "PATCH", "/configmaps/c3/status", 500,
      R"({"kind":"Status","code":500,"reason":"InternalError","message":"etcd hiccup"})");
  CountingReconciler reconciler(config_maps);
  Informer informer(config_maps, fast_options("a"), metrics, Logger("i", sink), random);
  ControllerOptions options;
  options.workers = 3;
  Controller controller("configmaps", reconciler, std::move(options), metrics, Logger("c", sink));
  controller.watch(informer);
  informer.start();
  controller.start();
  const bool converged = eventually([&] {
    for (int i = 0; i < 20; ++i) {
      auto object = server.object_at("/api/v1/namespaces/a/configmaps/c" + std::to_string(i));
      if (!object || !object->contains("status")) return false;
    }
    return true;
  });
  controller.stop();
  informer.stop();
  EXPECT_TRUE(converged);
  EXPECT_GE(perimeter::testing::metric_value(registry, "perimeter_controller_reconcile_total",
                                             {{"controller", "configmaps"}, {"result", "error"}}),
            1);
}

}  // namespace
}  // namespace perimeter::runtime
