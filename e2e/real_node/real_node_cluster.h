#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/local_cluster.h"
#include "kube/client_metrics.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"

namespace perimeter::e2e {

// server-everything's image (hack/setup/mcp-everything-image.sh, which `make setup` runs), as the
// real node imports it: localhost/perimeter/mcp-everything:<server-everything's version>.
inline constexpr const char* kMcpEverythingImage = "localhost/perimeter/mcp-everything:2026.8.31";

// Where that script left the archive; throws std::runtime_error naming `make setup` when it is
// missing or stale.
std::string mcp_everything_image_archive();

// The chart's `helm test` pod's image (hack/setup/chart-test-image.sh, which `make setup` runs),
// as the real node imports it: localhost/perimeter/chart-test:1.
inline constexpr const char* kChartTestImageRepository = "localhost/perimeter/chart-test";
inline constexpr const char* kChartTestImageTag = "1";

// Where that script left the archive; throws std::runtime_error naming `make setup` when it is
// missing or stale.
std::string chart_test_image_archive();

// The one real-node cluster every test of real_node_e2e_test shares (testing::shared_cluster):
// a scheduler, the controller manager, and the runner, perimeter-mcp-guard,
// perimeter-egress-gateway, perimeter-operator, server-everything and chart-test images imported
// into the node's containerd.
testing::LocalClusterOptions real_node_cluster_options();

// What puts a pod on the real node: its label as node selector, its taint tolerated.
nlohmann::json real_node_placement();

// A pod of the runner image running `command` under PodSecurity `restricted`, on the real node.
nlohmann::json runner_image_pod(const std::string& name, const nlohmann::json& labels,
                                const nlohmann::json& command,
                                const std::string& restart_policy = "Always");

// Waits for `done`, polling every 200 ms; fails the calling test with `what` when it does not
// happen within `limit` (a generous bound on a shared machine, not a performance assertion).
bool eventually(const std::function<bool()>& done, std::chrono::seconds limit,
                const std::string& what);

// A file's whole content ("" when it cannot be read).
std::string read_file(const std::string& path);

// An environment variable ctest sets (PERIMETER_SOURCE_DIR, PERIMETER_BIN_DIR); run by hand, the
// binary needs it too. Throws std::runtime_error naming it when unset.
std::string required_env(const char* name);

// The AgentEnvironment resource, for a ResourceClient.
kube::ResourceType agent_environments();

// The host pids of every process of a running pod, found through its cgroup (the node's cgroupfs
// layout ends .../pod<uid>/<container id>).
std::vector<pid_t> pod_processes(const std::string& pod_uid);

// What every test of the binary starts from: root (containerd, runc, mounts, cgroups and a bridge
// cannot exist without it), the shared real-node cluster, a client of its apiserver, and a
// namespace of the test's own under PodSecurity `restricted`. At the end the namespace's pods go
// at once (nothing in them is worth a grace period), then the namespace, and the test waits until
// they are gone, so the next test starts on a node with no container of this one.
class RealNodeTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  std::unique_ptr<kube::ResourceClient> client(const kube::ResourceType& type);
  // Waits until the node's cluster DNS (CoreDNS behind kube-system/kube-dns, deployed by the
  // node at its start) has a Ready endpoint; fails the test otherwise. The first wait of the
  // process prints how long its pod took from creation to Ready.
  void wait_for_cluster_dns();
  // Stand-in host names the cluster DNS answers (its hosts file, re-read within a second), for
  // this test only: TearDown takes them out again.
  void add_dns_hosts(const std::vector<std::pair<std::string, std::string>>& address_and_name);
  // The items of `type` in the test's namespace.
  nlohmann::json list(const kube::ResourceType& type);
  // Applies this tree's CRDs (crds/) and waits until AgentEnvironment is served; once per test
  // binary, as apply is idempotent and every test shares the one cluster.
  void apply_crds();
  // An environment on the simulator at `sim_url`, and its key in the Secret `env-key` (marked as
  // an environment key) of the test's namespace; returns the environment's id.
  std::string create_sim_environment_with_key(const std::string& sim_url);

  testing::LocalCluster* cluster_ = nullptr;
  nlohmann::json node_;  // the real node's description (LocalCluster::real_node())
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  std::string ns_;

 private:
  void write_dns_hosts(const std::vector<std::string>& drop, const std::vector<std::string>& add);
  std::vector<std::string> dns_host_lines_;
  static inline bool crds_applied_ = false;
};

}  // namespace perimeter::e2e
