#include "real_node_cluster.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "process/process.h"

namespace perimeter::e2e {

std::string mcp_everything_image_archive() {
  const char* source = std::getenv("PERIMETER_SOURCE_DIR");
  if (source == nullptr || *source == '\0') {
    throw std::runtime_error("PERIMETER_SOURCE_DIR is not set (run through ctest, or set it)");
  }
  const process::ShellResult check = process::run_shell(
      "'" + std::string(source) + "/hack/setup/mcp-everything-image.sh' --check");
  if (check.exit_code != 0) {
    throw std::runtime_error(
        "the server-everything image is not built: run `make setup` (it runs "
        "hack/setup/mcp-everything-image.sh). " +
        check.output);
  }
  return check.last_line();
}

testing::LocalClusterOptions real_node_cluster_options() {
  testing::LocalClusterOptions options;
  options.controller_manager = true;  // default ServiceAccounts, garbage collection, namespaces
  options.scheduler = true;
  options.real_node = true;
  options.images = {testing::runner_image_archive(), testing::guard_image_archive(),
                    testing::egress_gateway_image_archive(), mcp_everything_image_archive()};
  return options;
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

void RealNodeTest::TearDown() {
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
  return std::make_unique<kube::ResourceClient>(*transport_, type, metrics_);
}

nlohmann::json RealNodeTest::list(const kube::ResourceType& type) {
  return client(type)->list(ns_).value("items", nlohmann::json::array());
}

}  // namespace perimeter::e2e
