// A small controller on a real apiserver: parents (ConfigMaps) get an owned child (Secret) by
// server-side apply; a deleted child comes back because its owner is woken; Events aggregate.
#include <gtest/gtest.h>

#include <thread>

#include "cluster/local_cluster.h"
#include "core/log.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "runtime/controller.h"
#include "runtime/event_recorder.h"
#include "runtime/informer.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;

template <typename Predicate>
bool eventually(Predicate&& done, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// Reads the parent from the cache, writes the child with server-side apply, records an Event.
class ChildSecretReconciler : public Reconciler {
 public:
  ChildSecretReconciler(Store& parents, kube::ResourceClient& secrets, EventRecorder& events)
      : parents_(parents), secrets_(secrets), events_(events) {}

  ReconcileResult reconcile(const kube::ObjectKey& key) override {
    const auto parent = parents_.get(key.str());
    if (parent == nullptr) return ReconcileResult::done();  // gone: garbage collection's job
    const auto& meta = (*parent)["metadata"];
    json child = {{"apiVersion", "v1"},
                  {"kind", "Secret"},
                  {"metadata",
                   {{"name", key.name + "-child"},
                    {"ownerReferences", json::array({{{"apiVersion", "v1"},
                                                      {"kind", "ConfigMap"},
                                                      {"name", key.name},
                                                      {"uid", meta["uid"]},
                                                      {"controller", true}}})}}},
                  {"stringData", {{"copy", (*parent)["data"].value("value", "")}}}};
    secrets_.apply(key.ns, child, kube::ApplyOptions{"perimeter-test-controller", true});
    events_.record(*parent, "Normal", "ChildSynced", "child secret in sync");
    return ReconcileResult::done();
  }

 private:
  Store& parents_;
  kube::ResourceClient& secrets_;
  EventRecorder& events_;
};

TEST(ControllerIntegrationTest, OwnsChildrenRecreatesDeletedOnesAndAggregatesEvents) {
  auto& cluster = perimeter::testing::shared_cluster();
  auto config = kube::Config::from_kubeconfig_file(cluster.kubeconfig_path());
  kube::HttpTransport transport(config);
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics(registry);
  RuntimeMetrics metrics(registry);
  kube::ResourceClient namespaces(transport, kube::resources::namespaces(), client_metrics);
  kube::ResourceClient config_maps(transport, kube::resources::config_maps(), client_metrics);
  kube::ResourceClient secrets(transport, kube::resources::secrets(), client_metrics);
  kube::ResourceClient events(transport, kube::resources::events(), client_metrics);
  const std::string ns = "controller-it-" + std::to_string(::getpid());
  namespaces.create("",
                    {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});

  InformerOptions parent_options;
  parent_options.ns = ns;
  parent_options.label_selector = "role=parent";
  Informer parents(config_maps, parent_options, metrics, Logger("parents"));
  InformerOptions child_options;
  child_options.ns = ns;
  Informer children(secrets, child_options, metrics, Logger("children"));
  EventRecorderOptions event_options;
  event_options.component = "perimeter-test-controller";
  event_options.host = "test";
  EventRecorder recorder(events, event_options, metrics, Logger("events"));
  ChildSecretReconciler reconciler(parents.store(), secrets, recorder);
  ControllerOptions options;
  options.workers = 2;
  Controller controller("child-secrets", reconciler, std::move(options), metrics,
                        Logger("controller"));
  controller.watch(parents);
  controller.watch_owned(children, "ConfigMap");
  parents.start();
  children.start();
  controller.start();

  for (int i = 0; i < 5; ++i) {
    config_maps.create(
        ns, {{"apiVersion", "v1"},
             {"kind", "ConfigMap"},
             {"metadata", {{"name", "p" + std::to_string(i)}, {"labels", {{"role", "parent"}}}}},
             {"data", {{"value", "v1"}}}});
  }
  const auto all_children_have = [&](const std::string& value) {
    for (int i = 0; i < 5; ++i) {
      const auto child = children.store().get(ns + "/p" + std::to_string(i) + "-child");
      if (child == nullptr) return false;
      if ((*child)["data"].value("copy", "") != value) return false;  // base64 of value
    }
    return true;
  };
  // Secrets store data base64-encoded: "v1" is "djE=", "v2" is "djI=".
  EXPECT_TRUE(eventually([&] { return all_children_have("djE="); }));

  // A deleted child wakes its owner, which recreates it.
  const std::string old_uid = secrets.get(ns, "p2-child")["metadata"]["uid"];
  secrets.remove(ns, "p2-child");
  EXPECT_TRUE(eventually([&] {
    const auto child = children.store().get(ns + "/p2-child");
    return child != nullptr && (*child)["metadata"]["uid"] != old_uid;
  }));

  // A parent change flows to its child.
  for (int i = 0; i < 5; ++i)
    config_maps.merge_patch(ns, "p" + std::to_string(i), {{"data", {{"value", "v2"}}}});
  EXPECT_TRUE(eventually([&] { return all_children_have("djI="); }));

  controller.stop();
  parents.stop();
  children.stop();
  recorder.flush();

  // p0 was reconciled at least twice with the same message: one Event, its count bumped.
  kube::ListOptions about_p0;
  about_p0.field_selector = "involvedObject.name=p0,reason=ChildSynced";
  const auto listed = events.list(ns, about_p0);
  ASSERT_EQ(listed["items"].size(), 1u) << listed.dump();
  EXPECT_GE(listed["items"][0]["count"].get<int>(), 2);
  EXPECT_EQ(listed["items"][0]["source"]["component"], "perimeter-test-controller");
  EXPECT_EQ(listed["items"][0]["involvedObject"]["kind"], "ConfigMap");
}

}  // namespace
}  // namespace perimeter::runtime
