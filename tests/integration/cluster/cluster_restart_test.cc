// The apiserver can be restarted under a watching client, extra apiserver flags take effect and
// survive the restart, and etcd's HTTP gateway is reachable for tests that compact it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "cluster/local_cluster.h"
#include "core/backoff.h"
#include "core/random.h"
#include "kube_api.h"

namespace perimeter::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

LocalClusterOptions restartable() {
  LocalClusterOptions options;
  options.extra_apiserver_flags = {"--service-node-port-range=30000-30099"};
  return options;
}

// A client that watches ConfigMaps the way an informer does: from a resourceVersion, and when
// the connection ends it reconnects (with jittered backoff) from the last version it saw.
class ConfigMapWatcher {
 public:
  ConfigMapWatcher(LocalCluster& cluster, std::string ns, std::string from_version)
      : api_(cluster), ns_(std::move(ns)), version_(std::move(from_version)) {
    thread_ = std::thread([this] { run(); });
  }
  ~ConfigMapWatcher() {
    stop_ = true;
    thread_.join();
  }

  bool saw(const std::string& name) {
    std::lock_guard lock(mutex_);
    return added_.count(name) > 0;
  }
  int connections() const { return connections_; }

 private:
  void run() {
    Backoff backoff({std::chrono::milliseconds(50), std::chrono::seconds(1), 2.0, 0.2},
                    SystemRandom::instance());
    while (!stop_) {
      ++connections_;
      try {
        api_.client().stream_lines(
            "/api/v1/namespaces/" + ns_ + "/configmaps?watch=1&resourceVersion=" + version(),
            [this, &backoff](std::string_view line) {
              backoff.reset();
              handle(json::parse(line));
              return true;
            },
            &stop_);
      } catch (const std::exception&) {
        // The apiserver is down or restarting; try again shortly.
      }
      if (!stop_) std::this_thread::sleep_for(backoff.next());
    }
  }
  void handle(const json& event) {
    std::lock_guard lock(mutex_);
    const std::string type = event.value("type", "");
    if (type == "ADDED") added_.insert(event["object"]["metadata"]["name"].get<std::string>());
    if (type != "ERROR") version_ = event["object"]["metadata"]["resourceVersion"];
  }
  std::string version() {
    std::lock_guard lock(mutex_);
    return version_;
  }

  KubeApi api_;
  std::string ns_;
  std::mutex mutex_;
  std::string version_;
  std::set<std::string> added_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

json config_map(const std::string& name) {
  return {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", name}}}};
}

TEST(ClusterRestartTest, WatchingClientSeesChangesMadeAfterAnApiserverRestart) {
  LocalCluster& cluster = shared_cluster(restartable());
  KubeApi api(cluster);
  const std::string configmaps = "/api/v1/namespaces/default/configmaps";
  json list = api.get_json(configmaps);
  ASSERT_FALSE(list.is_null());
  ConfigMapWatcher watcher(cluster, "default", list["metadata"]["resourceVersion"]);

  ASSERT_EQ(api.post(configmaps, config_map("before-restart")).status, 201);
  ASSERT_TRUE(eventually([&] { return watcher.saw("before-restart"); }));
  const int connections_before = watcher.connections();
  const std::string url_before = cluster.apiserver_url();

  cluster.restart_apiserver();
  EXPECT_EQ(cluster.apiserver_url(), url_before);

  // Data lives in etcd, so what was there before is still there.
  EXPECT_EQ(api.get(configmaps + "/before-restart").status, 200);
  ASSERT_EQ(api.post(configmaps, config_map("after-restart")).status, 201);
  EXPECT_TRUE(eventually([&] { return watcher.saw("after-restart"); }))
      << "the watcher never saw the ConfigMap created after the restart";
  // The old watch connection really ended: the watcher had to reconnect.
  EXPECT_GT(watcher.connections(), connections_before);
}

TEST(ClusterRestartTest, ExtraApiserverFlagsApplyAndSurviveRestarts) {
  LocalCluster& cluster = shared_cluster(restartable());
  KubeApi api(cluster);
  json service = {{"apiVersion", "v1"},
                  {"kind", "Service"},
                  {"metadata", {{"name", "outside-range"}}},
                  {"spec",
                   {{"type", "NodePort"},
                    {"selector", {{"app", "x"}}},
                    {"ports", {{{"port", 80}, {"nodePort", 31000}}}}}}};
  auto refused = api.post("/api/v1/namespaces/default/services", service);
  EXPECT_EQ(refused.status, 422) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("30000-30099"));

  service["metadata"]["name"] = "inside-range";
  service["spec"]["ports"][0]["nodePort"] = 30042;
  auto accepted = api.post("/api/v1/namespaces/default/services", service);
  EXPECT_EQ(accepted.status, 201) << accepted.body;
}

TEST(ClusterRestartTest, EtcdGatewayAnswersAndCompacts) {
  LocalCluster& cluster = shared_cluster(restartable());
  localcluster::HttpClientConfig config;
  config.base_url = cluster.etcd_url();
  localcluster::HttpClient etcd(config);
  auto status = etcd.request("POST", "/v3/maintenance/status", "{}");
  ASSERT_EQ(status.status, 200) << status.body;
  json parsed = json::parse(status.body);
  EXPECT_THAT(parsed.value("version", ""), HasSubstr("3.5."));
  const std::string revision = parsed["header"]["revision"];

  auto compacted = etcd.request("POST", "/v3/kv/compaction",
                                json{{"revision", revision}, {"physical", true}}.dump());
  EXPECT_EQ(compacted.status, 200) << compacted.body;
  // Compacting the same revision again is refused: the first compaction really happened.
  auto again = etcd.request("POST", "/v3/kv/compaction", json{{"revision", revision}}.dump());
  EXPECT_NE(again.status, 200);
  EXPECT_THAT(again.body, HasSubstr("compacted"));
}

}  // namespace
}  // namespace perimeter::testing
