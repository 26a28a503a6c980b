#include "real_node_cluster.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "agentapi/sim_process.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"
#include "process/process.h"

namespace perimeter::e2e {

namespace {

// The archive a hack/setup/ script built, from its `--check` (which never builds); throws naming
// `make setup` when it is missing or stale.
std::string setup_image_archive(const std::string& script, const std::string& what) {
  const char* source = std::getenv("PERIMETER_SOURCE_DIR");
  if (source == nullptr || *source == '\0') {
    throw std::runtime_error("PERIMETER_SOURCE_DIR is not set (run through ctest, or set it)");
  }
  const process::ShellResult check =
      process::run_shell("'" + std::string(source) + "/hack/setup/" + script + "' --check");
  if (check.exit_code != 0) {
    throw std::runtime_error("the " + what +
                             " image is not built: run `make setup` (it runs hack/setup/" + script +
                             "). " + check.output);
  }
  return check.last_line();
}

}  // namespace

std::string mcp_everything_image_archive() {
  return setup_image_archive("mcp-everything-image.sh", "server-everything");
}

std::string chart_test_image_archive() {
  return setup_image_archive("chart-test-image.sh", "chart's helm test");
}

testing::LocalClusterOptions real_node_cluster_options() {
  testing::LocalClusterOptions options;
  options.controller_manager = true;  // default ServiceAccounts, garbage collection, namespaces
  options.scheduler = true;
  options.real_node = true;
  options.images = {testing::runner_image_archive(),         testing::guard_image_archive(),
                    testing::egress_gateway_image_archive(), testing::operator_image_archive(),
                    mcp_everything_image_archive(),          chart_test_image_archive()};
  return options;
}

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string(name) + " is not set (run through ctest, or set it)");
  }
  return value;
}

kube::ResourceType agent_environments() {
  return {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<pid_t> pod_processes(const std::string& pod_uid) {
  std::vector<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (read_file(entry.path().string() + "/cgroup").find("pod" + pod_uid) != std::string::npos) {
      pids.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return pids;
}

bool eventually(const std::function<bool()>& done, std::chrono::seconds limit,
                const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ADD_FAILURE() << "timed out waiting for " << what;
  return false;
}

void RealNodeTest::apply_crds() {
  if (crds_applied_) return;
  const std::string kubectl = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
                              " --kubeconfig " + cluster_->kubeconfig_path();
  const std::string command = kubectl + " apply -f " + required_env("PERIMETER_SOURCE_DIR") +
                              "/crds/ >/dev/null && " + kubectl +
                              " wait --for condition=established --timeout=60s" +
                              " crd/agentenvironments.perimeter.dev >/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  crds_applied_ = true;
}

void RealNodeTest::SetUp() {
  ASSERT_EQ(::geteuid(), 0u) << "the real-node e2e tests need root (run them as root)";
  cluster_ = &testing::shared_cluster(real_node_cluster_options());
  node_ = cluster_->real_node();
  ASSERT_TRUE(node_.is_object()) << "the local cluster started without its real node";
  config_ = kube::Config::from_kubeconfig_file(cluster_->kubeconfig_path());
  config_.qps = 0;
  transport_ = std::make_unique<kube::HttpTransport>(config_);
  static int counter = 0;
  ns_ = "real-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  client(kube::resources::namespaces())
      ->create(
          "",
          {{"apiVersion", "v1"},
           {"kind", "Namespace"},
           {"metadata",
            {{"name", ns_}, {"labels", {{"pod-security.kubernetes.io/enforce", "restricted"}}}}}});
}

void RealNodeTest::wait_for_cluster_dns() {
  // An EndpointSlice of kube-dns with a ready endpoint: the pod passed its readiness probe
  // (CoreDNS's `ready` plugin: its kubernetes plugin has synced) and kube-proxy can route to it.
  const bool ready = eventually(
      [&] {
        const kube::ResourceType endpoint_slices{"discovery.k8s.io", "v1", "endpointslices",
                                                 "EndpointSlice", true};
        kube::ListOptions options;
        options.label_selector = "kubernetes.io/service-name=kube-dns";
        const auto slices = client(endpoint_slices)
                                ->list("kube-system", options)
                                .value("items", nlohmann::json::array());
        for (const auto& slice : slices) {
          for (const auto& endpoint : slice.value("endpoints", nlohmann::json::array())) {
            if (endpoint.value("conditions", nlohmann::json::object()).value("ready", false)) {
              return true;
            }
          }
        }
        return false;
      },
      std::chrono::seconds(120), "the cluster DNS (kube-system/kube-dns) to have a ready endpoint");
  static bool reported = false;
  if (!ready || reported) return;
  reported = true;
  kube::ListOptions dns_pods;
  dns_pods.label_selector = "k8s-app=kube-dns";
  for (const auto& pod : client(kube::resources::pods())
                             ->list("kube-system", dns_pods)
                             .value("items", nlohmann::json::array())) {
    std::string ready_at;
    for (const auto& condition : pod["status"].value("conditions", nlohmann::json::array())) {
      if (condition.value("type", "") == "Ready")
        ready_at = condition.value("lastTransitionTime", "");
    }
    std::cerr << "cluster DNS pod " << pod["metadata"].value("name", "") << ": created "
              << pod["metadata"].value("creationTimestamp", "") << ", Ready " << ready_at << "\n";
  }
}

void RealNodeTest::add_dns_hosts(
    const std::vector<std::pair<std::string, std::string>>& address_and_name) {
  std::vector<std::string> lines;
  for (const auto& [address, name] : address_and_name) lines.push_back(address + " " + name);
  write_dns_hosts({}, lines);
  dns_host_lines_.insert(dns_host_lines_.end(), lines.begin(), lines.end());
}

void RealNodeTest::write_dns_hosts(const std::vector<std::string>& drop,
                                   const std::vector<std::string>& add) {
  const std::string path = node_.value("cluster_dns_hosts_file", "");
  ASSERT_FALSE(path.empty()) << "the real node describes no cluster DNS hosts file";
  std::string kept;
  std::istringstream current(read_file(path));
  for (std::string line; std::getline(current, line);) {
    if (std::find(drop.begin(), drop.end(), line) == drop.end()) kept += line + "\n";
  }
  for (const auto& line : add) kept += line + "\n";
  // Whole, then renamed: CoreDNS never reads half a file.
  std::ofstream(path + ".tmp") << kept;
  std::filesystem::permissions(path + ".tmp", std::filesystem::perms(0644));
  std::filesystem::rename(path + ".tmp", path);
}

void RealNodeTest::TearDown() {
  if (!dns_host_lines_.empty()) write_dns_hosts(dns_host_lines_, {});
  if (!transport_) return;
  try {
    auto pods = client(kube::resources::pods());
    kube::DeleteOptions now;
    now.grace_period_seconds = 0;
    for (const auto& pod : list(kube::resources::pods())) {
      pods->remove(ns_, pod["metadata"]["name"], now);
    }
    client(kube::resources::namespaces())->remove("", ns_);
    eventually([&] { return list(kube::resources::pods()).empty(); }, std::chrono::seconds(120),
               "the namespace's pods to be gone");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cleaning up namespace " << ns_ << ": " << e.what();
  }
}

std::unique_ptr<kube::ResourceClient> RealNodeTest::client(const kube::ResourceType& type) {
  // A test's TearDown may ask for its pods' logs after a SetUp that never reached the cluster
  // (another real node held the machine too long): an error it can catch, not a crash.
  if (!transport_) throw std::logic_error("the real-node cluster did not start for this test");
  return std::make_unique<kube::ResourceClient>(*transport_, type, metrics_);
}

std::string RealNodeTest::create_sim_environment_with_key(const std::string& sim_url) {
  const auto created = testing::http_call(sim_url, "POST", "/admin/environments",
                                          nlohmann::json{{"name", ns_}}.dump())
                           .json();
  client(kube::resources::secrets())
      ->create(ns_,
               {{"apiVersion", "v1"},
                {"kind", "Secret"},
                {"metadata",
                 {{"name", "env-key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
                {"stringData", {{"environment-key", created.at("key")}}}});
  return created.at("id");
}

nlohmann::json RealNodeTest::list(const kube::ResourceType& type) {
  return client(type)->list(ns_).value("items", nlohmann::json::array());
}

nlohmann::json real_node_placement() {
  return {{"nodeSelector", {{localcluster::kRealNodeLabel, "true"}}},
          {"tolerations",
           {{{"key", localcluster::kRealNodeTaintKey},
             {"operator", "Equal"},
             {"value", "true"},
             {"effect", "NoSchedule"}}}}};
}

nlohmann::json runner_image_pod(const std::string& name, const nlohmann::json& labels,
                                const nlohmann::json& command, const std::string& restart_policy) {
  nlohmann::json spec = {{"automountServiceAccountToken", false},
                         {"enableServiceLinks", false},
                         {"terminationGracePeriodSeconds", 0},
                         {"restartPolicy", restart_policy},
                         {"securityContext",
                          {{"runAsNonRoot", true},
                           {"runAsUser", 65532},
                           {"runAsGroup", 65532},
                           {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
                         {"containers",
                          {{{"name", "main"},
                            {"image", testing::kRunnerImage},
                            {"imagePullPolicy", "Never"},
                            {"command", command},
                            {"securityContext",
                             {{"allowPrivilegeEscalation", false},
                              {"readOnlyRootFilesystem", true},
                              {"capabilities", {{"drop", {"ALL"}}}}}}}}}};
  spec.update(real_node_placement());
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"labels", labels}}},
          {"spec", spec}};
}

}  // namespace perimeter::e2e
