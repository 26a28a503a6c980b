// The chart as a user installs it, on the real node: the real `helm` installs charts/perimeter
// with the operator image built locally (operator/image/build-image.sh), whose pods run under
// PodSecurity `restricted` with the chart's own security context and NetworkPolicy, read their
// in-cluster configuration (the kubernetes Service's address, the ServiceAccount's token), take
// the leader-election Lease and serve metrics. Then `helm test` runs the chart's hook pod for real
// (its image from hack/setup/chart-test-image.sh: sh, curl, sed, grep) and it passes; and it fails
// when its checks should: with the metrics Service sent to a port that is not the metrics port
// (the Lease still held), and with no replica running (the Lease released). Until this test the
// hook had only run under KWOK, where no container runs.
//
// Shares the real-node cluster of real_node_e2e_test. Needs root.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "cluster/local_cluster.h"
#include "kube/api_error.h"
#include "kube/resource.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"
#include "process/process.h"
#include "real_node_cluster.h"

namespace perimeter::e2e {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// The release's objects are <release> (the name contains "perimeter"): the Deployment, the Lease,
// <release>-metrics and the hook pod <release>-test.
constexpr const char* kRelease = "perimeter-chart";

long long millis_since(steady_clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - start).count();
}

class HelmChartRealNodeTest : public RealNodeTest {
 protected:
  void SetUp() override {
    RealNodeTest::SetUp();
    if (HasFatalFailure()) return;
    const char* source = std::getenv("PERIMETER_SOURCE_DIR");
    ASSERT_TRUE(source != nullptr && *source != '\0')
        << "PERIMETER_SOURCE_DIR is not set (run through ctest, or set it)";
    chart_ = std::string(source) + "/charts/perimeter";
    const std::string tools = localcluster::tools_bin_dir();
    helm_ = localcluster::require_tool(tools, "helm") + " --kubeconfig " +
            cluster_->kubeconfig_path() + " --namespace " + ns_;
    kubectl_ = localcluster::require_tool(tools, "kubectl") + " --kubeconfig " +
               cluster_->kubeconfig_path() + " --namespace " + ns_;
    values_file_ = std::filesystem::temp_directory_path() / (ns_ + "-values.json");
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- pods ----\n"
                << process::run_shell(kubectl_ + " get pods -o wide").output << "---- events ----\n"
                << process::run_shell(kubectl_ + " get events --sort-by=.lastTimestamp").output
                << "---- operator logs (tail) ----\n"
                << process::run_shell(kubectl_ + " logs --tail=30 --prefix -l " +
                                      "app.kubernetes.io/component=operator")
                       .output;
    }
    if (installed_) {
      const auto uninstall = process::run_shell(helm_ + " uninstall " + kRelease + " --wait");
      EXPECT_EQ(uninstall.exit_code, 0) << uninstall.output;
    }
    std::filesystem::remove(values_file_);
    RealNodeTest::TearDown();
  }

  // The chart's values for the real node: the locally built images (never pulled), both pods
  // placed on the node, and the apiserver's own port in the operator's NetworkPolicy (the node
  // sends the kubernetes Service's 443 there, and a NetworkPolicy sees the translated port, as
  // it sees 6443 on most clusters). JSON is YAML.
  void write_values() {
    const std::string server = config_.server;
    const std::string apiserver_port = server.substr(server.rfind(':') + 1);
    const json placement = real_node_placement();
    const json values = {
        {"image", {{"repository", testing::kOperatorImageRepository}, {"pullPolicy", "Never"}}},
        {"nodeSelector", placement["nodeSelector"]},
        {"tolerations", placement["tolerations"]},
        {"networkPolicy", {{"egressPorts", {443, 6443, std::stoi(apiserver_port)}}}},
        {"tests",
         {{"image",
           {{"repository", kChartTestImageRepository},
            {"tag", kChartTestImageTag},
            {"pullPolicy", "Never"}}},
          {"nodeSelector", placement["nodeSelector"]},
          {"tolerations", placement["tolerations"]}}}};
    std::ofstream(values_file_) << values.dump(2) << "\n";
  }

  std::string lease_holder() {
    try {
      return client(kube::resources::leases())
          ->get(ns_, kRelease)
          .value("spec", json::object())
          .value("holderIdentity", "");
    } catch (const std::exception& e) {
      if (!kube::is_not_found(e)) throw;
      return "";  // no Lease yet
    }
  }

  json operator_pods() {
    kube::ListOptions options;
    options.label_selector = std::string("app.kubernetes.io/instance=") + kRelease +
                             ",app.kubernetes.io/component=operator";
    return client(kube::resources::pods())->list(ns_, options).value("items", json::array());
  }

  // `helm test`, timed; the hook pod's log is read from the API (Helm keeps a failed hook pod).
  struct HelmTest {
    process::ShellResult result;
    std::string log;
    long long ms = 0;
  };
  // A passed hook pod is deleted at once (hook-succeeded), so its log is read while `helm test`
  // runs, every 100 ms, keeping the longest seen.
  // A failed hook pod of the run before is deleted first (Helm would delete it too, as
  // before-hook-creation), so that only this run's pod is read.
  HelmTest helm_test() {
    HelmTest test;
    const std::string pod = std::string(kRelease) + "-test";
    kube::DeleteOptions now;
    now.grace_period_seconds = 0;
    try {
      client(kube::resources::pods())->remove(ns_, pod, now);
    } catch (const std::exception& e) {
      if (!kube::is_not_found(e)) throw;
    }
    eventually(
        [&] {
          try {
            client(kube::resources::pods())->get(ns_, pod);
            return false;
          } catch (const std::exception& e) {
            if (!kube::is_not_found(e)) throw;
            return true;
          }
        },
        seconds(30), "the previous hook pod to be gone");
    std::atomic<bool> done{false};
    std::thread reader([&] {
      kube::HttpTransport transport(config_);
      kube::HttpRequest request;
      request.method = "GET";
      request.path_and_query =
          "/api/v1/namespaces/" + ns_ + "/pods/" + std::string(kRelease) + "-test/log";
      for (bool last = false; !last;) {
        last = done.load();
        try {
          const kube::HttpResponse response = transport.send(request);
          if (response.status == 200 && response.body.size() > test.log.size()) {
            test.log = response.body;
          }
        } catch (const std::exception&) {
        }
        if (!last) std::this_thread::sleep_for(milliseconds(100));
      }
    });
    const auto started = steady_clock::now();
    test.result = process::run_shell(helm_ + " test " + kRelease + " --timeout 90s");
    test.ms = millis_since(started);
    done = true;
    reader.join();
    return test;
  }

  // What the metrics Service's ClusterIP answers for /metrics, from the host (kube-proxy
  // translates the host's own connections too): the HTTP status, "000" when nothing answered.
  std::string metrics_service_status() {
    const std::string cluster_ip = client(kube::resources::services())
                                       ->get(ns_, std::string(kRelease) + "-metrics")["spec"]
                                       .value("clusterIP", "");
    return process::run_shell("curl -s -o /dev/null --max-time 2 -w '%{http_code}' http://" +
                              cluster_ip + ":8080/metrics")
        .last_line();
  }

  void set_metrics_target_port(const std::string& port) {
    const auto patch = process::run_shell(
        kubectl_ + " patch service " + kRelease +
        "-metrics --type=json -p '[{\"op\":\"replace\",\"path\":\"/spec/ports/0/targetPort\","
        "\"value\":\"" +
        port + "\"}]'");
    ASSERT_EQ(patch.exit_code, 0) << patch.output;
  }

  std::string chart_, helm_, kubectl_;
  std::filesystem::path values_file_;
  bool installed_ = false;
};

TEST_F(HelmChartRealNodeTest, OperatorImageLeadsUnderTheChartAndHelmTestPassesOnlyWhileItShould) {
  wait_for_cluster_dns();  // the hook pod reaches the apiserver as kubernetes.default.svc
  write_values();

  // Install: the Deployment's two replicas become Ready on the real node (admitted under
  // `restricted` to exist at all; Ready: /readyz answers).
  const auto started = steady_clock::now();
  const auto install = process::run_shell(helm_ + " install " + kRelease + " " + chart_ + " -f " +
                                          values_file_.string() + " --wait --timeout 120s");
  installed_ = install.exit_code == 0;
  ASSERT_EQ(install.exit_code, 0) << install.output;
  const long long ready_ms = millis_since(started);

  // One of them takes the Lease.
  std::string holder;
  ASSERT_TRUE(eventually(
      [&] {
        holder = lease_holder();
        return !holder.empty();
      },
      seconds(60), "a replica to hold the Lease " + ns_ + "/" + kRelease));
  const long long leader_ms = millis_since(started);
  const json pods = operator_pods();
  ASSERT_EQ(pods.size(), 2u) << pods.dump(2);
  // Each replica serves metrics (from the host, at its pod address); exactly the holder says it
  // leads.
  const std::string is_leader =
      "\nperimeter_leader_election_is_leader{lease=\"" + ns_ + "/" + kRelease + "\"} ";
  int leaders = 0;
  for (const auto& pod : pods) {
    const std::string name = pod["metadata"].value("name", "");
    EXPECT_EQ(pod["spec"].value("nodeName", ""), node_.value("name", "127.0.0.1")) << name;
    EXPECT_EQ(pod["status"].value("phase", ""), "Running") << name;
    for (const auto& status : pod["status"].value("containerStatuses", json::array())) {
      EXPECT_EQ(status.value("image", ""),
                std::string(testing::kOperatorImageRepository) + ":0.1.0");
      EXPECT_EQ(status.value("restartCount", -1), 0) << name << " restarted";
    }
    // The identity is the pod's host name and a suffix.
    const bool leads = holder.rfind(name + "_", 0) == 0;
    leaders += leads ? 1 : 0;
    const auto scrape = process::run_shell("curl -sS --fail --max-time 5 http://" +
                                           pod["status"].value("podIP", "") + ":8080/metrics");
    ASSERT_EQ(scrape.exit_code, 0) << name << ": " << scrape.output;
    const auto line = scrape.output.find(is_leader);
    ASSERT_NE(line, std::string::npos) << name << ": " << scrape.output.substr(0, 1500);
    EXPECT_EQ(scrape.output.substr(line + is_leader.size(), 2), leads ? "1\n" : "0\n") << name;
  }
  EXPECT_EQ(leaders, 1) << "the Lease holder " << holder << " is not exactly one of the pods";

  // `helm test` runs the hook pod on the node, and it passes: it saw the holder and the metrics.
  const HelmTest passing = helm_test();
  EXPECT_EQ(passing.result.exit_code, 0) << passing.result.output;
  EXPECT_NE(passing.result.output.find("Succeeded"), std::string::npos) << passing.result.output;
  EXPECT_NE(passing.log.find("leading: " + holder), std::string::npos) << passing.log;
  EXPECT_NE(passing.log.find(" perimeter_ samples"), std::string::npos) << passing.log;

  // The metrics check asserts something: the Service sent to the health port (which answers 404
  // for /metrics) fails the test while the Lease is held.
  set_metrics_target_port("health");
  ASSERT_TRUE(eventually([&] { return metrics_service_status() == "404"; }, seconds(30),
                         "the metrics Service to lead to the health port"));
  const HelmTest wrong_port = helm_test();
  EXPECT_NE(wrong_port.result.exit_code, 0) << wrong_port.result.output;
  EXPECT_NE(wrong_port.log.find("leading: " + holder), std::string::npos) << wrong_port.log;
  EXPECT_NE(wrong_port.log.find("the metrics Service answered without perimeter_ metrics"),
            std::string::npos)
      << wrong_port.log;
  set_metrics_target_port("metrics");
  ASSERT_TRUE(eventually([&] { return metrics_service_status() == "200"; }, seconds(30),
                         "the metrics Service to lead to the metrics port again"));

  // The Lease check asserts something: with no replica left (each released the Lease as it
  // stopped) the test fails on it.
  const auto scale =
      process::run_shell(kubectl_ + " scale deployment " + kRelease + " --replicas=0");
  ASSERT_EQ(scale.exit_code, 0) << scale.output;
  ASSERT_TRUE(eventually([&] { return operator_pods().empty(); }, seconds(60),
                         "the operator's pods to be gone"));
  EXPECT_EQ(lease_holder(), "") << "the Lease was not released by the stopping leader";
  const HelmTest no_leader = helm_test();
  EXPECT_NE(no_leader.result.exit_code, 0) << no_leader.result.output;
  EXPECT_NE(no_leader.log.find("no replica holds the Lease " + ns_ + "/" + kRelease),
            std::string::npos)
      << no_leader.log;

  std::cerr << "helm install --wait " << ready_ms << " ms; Lease held " << leader_ms
            << " ms after install started (holder " << holder << "); helm test: passing "
            << passing.ms << " ms, wrong metrics port " << wrong_port.ms << " ms, no leader "
            << no_leader.ms << " ms\n";
}

}  // namespace
}  // namespace perimeter::e2e
