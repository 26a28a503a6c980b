#include "cluster/local_cluster.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "localcluster/cluster_dirs.h"

namespace perimeter::testing {
namespace {

namespace fs = std::filesystem;

// Generous: a cold machine under a parallel build can take a while; a healthy start takes seconds.
constexpr auto kStartTimeout = std::chrono::seconds(300);
constexpr auto kRestartTimeout = std::chrono::seconds(180);
constexpr auto kStopTimeout = std::chrono::seconds(60);

std::string supervisor_log_tail(const std::string& dir) {
  std::string tail = localcluster::tail_of_file(dir + "/supervisor.log", 30);
  return tail.empty() ? "" : "\n--- last lines of the supervisor's log ---\n" + tail;
}

}  // namespace

namespace {

// <build>/images/<file>, found from the build's bin/ folder; `target` builds it.
std::string built_image_archive(const std::string& file, const std::string& what,
                                const std::string& target) {
  fs::path bin_dir = fs::path(local_cluster_binary()).parent_path();
  fs::path archive = bin_dir.parent_path() / "images" / file;
  if (!fs::is_regular_file(archive)) {
    throw std::runtime_error("the " + what + " image archive " + archive.string() +
                             " is not built: `make build` (target " + target +
                             "; needs umoci, which `make deps` installs)");
  }
  return archive.string();
}

}  // namespace

std::string runner_image_archive() {
  return built_image_archive("perimeter-runner.tar", "runner", "runner-image-archive");
}

std::string guard_image_archive() {
  return built_image_archive("perimeter-mcp-guard.tar", "perimeter-mcp-guard",
                             "mcp-guard-image-archive");
}

std::string egress_gateway_image_archive() {
  return built_image_archive("perimeter-egress-gateway.tar", "perimeter-egress-gateway",
                             "egress-gateway-image-archive");
}

std::string operator_image_archive() {
  return built_image_archive("perimeter-operator.tar", "perimeter-operator",
                             "operator-image-archive");
}

std::string local_cluster_binary() {
  const std::string name = localcluster::kSupervisorProgram;
  if (const char* bin = std::getenv("PERIMETER_BIN_DIR"); bin && *bin) {
    return fs::absolute(std::string(bin) + "/" + name).string();
  }
  std::error_code error;
  fs::path self = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    for (fs::path candidate :
         {self.parent_path() / name, self.parent_path().parent_path() / "bin" / name}) {
      if (fs::exists(candidate)) return candidate.string();
    }
  }
  std::string on_path = process::find_executable(name);
  return on_path.empty() ? name : on_path;
}

std::unique_ptr<LocalCluster> LocalCluster::start(const LocalClusterOptions& options) {
  const std::string binary = local_cluster_binary();
  if (binary.find('/') == std::string::npos || !fs::exists(binary)) {
    throw std::runtime_error(std::string(localcluster::kSupervisorProgram) +
                             " is not built (looked for " + binary +
                             "): build it with `cmake --build <builddir> --target "
                             "perimeter-local-cluster` or `make build`");
  }
  const std::string root = localcluster::default_clusters_root();
  localcluster::sweep_stale_clusters(root);

  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  cluster->options_ = options;
  cluster->dir_ = localcluster::make_cluster_dir(root);
  process::ProcessSpec spec;
  spec.argv = {binary, "serve", "--dir", cluster->dir_, "--control-stdin"};
  if (options.controller_manager) spec.argv.push_back("--controller-manager");
  if (options.scheduler) spec.argv.push_back("--scheduler");
  if (options.real_node) spec.argv.push_back("--real-node");
  for (const auto& image : options.images) spec.argv.insert(spec.argv.end(), {"--image", image});
  if (options.kwok_nodes > 0) {
    spec.argv.insert(spec.argv.end(), {"--nodes", std::to_string(options.kwok_nodes)});
  }
  for (const auto& flag : options.extra_apiserver_flags) {
    spec.argv.push_back("--apiserver-flag=" + flag);
  }
  spec.log_path = cluster->dir_ + "/supervisor.log";
  spec.pipe_stdin = true;
  spec.capture_stdout = true;
  // SIGTERM, not SIGKILL: the supervisor must get to stop its children and remove the folder.
  spec.parent_death_signal = SIGTERM;
  try {
    cluster->supervisor_ = process::Process::spawn(spec);
    nlohmann::json ready = nlohmann::json::parse(cluster->command(
        "", "ready", std::chrono::duration_cast<std::chrono::seconds>(kStartTimeout)));
    cluster->kubeconfig_ = ready.at("kubeconfig");
    cluster->apiserver_url_ = ready.at("apiserver_url");
    cluster->ca_file_ = ready.at("ca_file");
    cluster->client_cert_file_ = ready.at("client_cert_file");
    cluster->client_key_file_ = ready.at("client_key_file");
    cluster->etcd_url_ = ready.at("etcd_url");
    for (const auto& component : ready.at("components")) {
      cluster->component_pids_.push_back(component.at("pid").get<pid_t>());
    }
    cluster->phases_ = ready.value("phases", nlohmann::json::object());
    cluster->real_node_ = ready.value("real_node", nlohmann::json());
    if (cluster->real_node_.is_object()) {
      for (const char* pid : {"containerd_pid", "kubelet_pid"}) {
        cluster->component_pids_.push_back(cluster->real_node_.at(pid).get<pid_t>());
      }
    }
  } catch (const std::exception& e) {
    cluster.reset();  // stops the supervisor if it runs, removes the folder
    throw std::runtime_error(std::string("local cluster did not start: ") + e.what());
  }
  return cluster;
}

LocalCluster::~LocalCluster() {
  if (supervisor_) {
    supervisor_->write_stdin("stop\n");
    supervisor_->close_stdin();
    if (!supervisor_->wait_for(kStopTimeout)) supervisor_->terminate(std::chrono::seconds(5));
    supervisor_.reset();
  }
  std::error_code ignored;
  if (!dir_.empty()) fs::remove_all(dir_, ignored);
}

std::string LocalCluster::command(const std::string& line, const std::string& wanted_event,
                                  std::chrono::seconds timeout) {
  if (!line.empty() && !supervisor_->write_stdin(line + "\n")) {
    throw std::runtime_error("the supervisor is gone (" +
                             (supervisor_->running() ? std::string("stdin closed")
                                                     : supervisor_->exit_status()->describe()) +
                             ")" + supervisor_log_tail(dir_));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error("no '" + wanted_event + "' from the supervisor within " +
                               std::to_string(timeout.count()) + " s" + supervisor_log_tail(dir_));
    }
    process::LineRead read = supervisor_->read_stdout_line(left);
    if (read.result == process::LineRead::Result::kTimeout) continue;
    if (read.result == process::LineRead::Result::kEof) {
      auto status = supervisor_->wait_for(std::chrono::seconds(10));
      throw std::runtime_error("the supervisor exited (" +
                               (status ? status->describe() : std::string("still running")) +
                               ") before '" + wanted_event + "'" + supervisor_log_tail(dir_));
    }
    auto event = nlohmann::json::parse(read.line, nullptr, false);
    if (event.is_discarded()) continue;
    const std::string kind = event.value("event", "");
    if (kind == wanted_event) return read.line;
    if (kind == "error") throw std::runtime_error(event.value("message", read.line));
  }
}

void LocalCluster::restart_apiserver() {
  command("restart-apiserver", "restarted", kRestartTimeout);
}

pid_t LocalCluster::supervisor_pid() const {
  return supervisor_ ? supervisor_->pid() : 0;
}

std::string LocalCluster::log_path(const std::string& component) const {
  return dir_ + "/logs/" + component + ".log";
}

namespace {

std::mutex shared_mutex;
std::unique_ptr<LocalCluster> shared;

class SharedClusterEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    std::lock_guard lock(shared_mutex);
    shared.reset();
  }
};

}  // namespace

LocalCluster& shared_cluster(const LocalClusterOptions& options) {
  std::lock_guard lock(shared_mutex);
  if (shared) {
    if (!(shared->options() == options)) {
      throw std::logic_error(
          "shared_cluster() was already started with other options in this test binary; ask for "
          "the same options everywhere (or start a LocalCluster of your own)");
    }
    return *shared;
  }
  static bool environment_registered = false;
  if (!environment_registered) {
    ::testing::AddGlobalTestEnvironment(new SharedClusterEnvironment);
    environment_registered = true;
  }
  shared = LocalCluster::start(options);
  return *shared;
}

}  // namespace perimeter::testing
