// perimeter-local-cluster: a real Kubernetes control plane on 127.0.0.1 (see usage_text()).
//
// `serve` is the supervisor: it owns every component process, and when it goes (its parent
// died, SIGTERM, or EOF on its control stdin) it stops them and removes the cluster folder.
// `up`/`down`/`status` manage one background supervisor for people at a shell.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "core/log.h"
#include "core/shutdown_signal.h"
#include "localcluster/cluster_dirs.h"
#include "localcluster/command_line.h"
#include "localcluster/control_plane.h"
#include "localcluster/tools.h"
#include "process/process.h"

namespace perimeter::localcluster {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStateFile = "state.json";
constexpr const char* kDevClusterName = "cluster-dev";

void emit(const nlohmann::json& line) {
  std::cout << line.dump() << std::endl;  // flushed: the reader is waiting for whole lines
}

std::string dev_cluster_dir(const CommandLine& line) {
  return line.dir.empty() ? default_clusters_root() + "/" + kDevClusterName : line.dir;
}

// Copies the logs of a failed start where they survive the folder's removal.
std::string keep_failure_logs(const std::string& dir) {
  std::string kept = fs::path(dir).parent_path().string() + "/last-failure";
  std::error_code ignored;
  fs::remove_all(kept, ignored);
  fs::create_directories(kept, ignored);
  fs::copy(dir + "/logs", kept, fs::copy_options::recursive, ignored);
  if (fs::exists(dir + "/supervisor.log")) fs::copy(dir + "/supervisor.log", kept, ignored);
  return kept;
}

// Reads control commands from stdin without blocking the loop; EOF means the parent is gone.
class StdinCommands {
 public:
  // Waits up to `timeout_ms` for input; returns complete lines, and sets eof().
  std::vector<std::string> poll_lines(int timeout_ms) {
    std::vector<std::string> lines;
    pollfd pfd{0, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) <= 0) return lines;
    char chunk[1024];
    ssize_t n = ::read(0, chunk, sizeof(chunk));
    if (n <= 0) {
      eof_ = true;
      return lines;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    for (auto newline = buffer_.find('\n'); newline != std::string::npos;
         newline = buffer_.find('\n')) {
      lines.push_back(buffer_.substr(0, newline));
      buffer_.erase(0, newline + 1);
    }
    return lines;
  }
  bool eof() const { return eof_; }

 private:
  std::string buffer_;
  bool eof_ = false;
};

int serve(const CommandLine& line, bool human) {
  // Before any thread exists, so SIGTERM (also our parent-death signal) and SIGINT wait for us.
  ShutdownSignal shutdown;
  // Whoever read our stdout may be gone (`up` returns at once). Set before any thread starts.
  ::signal(SIGPIPE, SIG_IGN);  // NOLINT(concurrency-mt-unsafe)
  Logger logger("local-cluster", StderrSink::instance(),
                line.verbose ? LogLevel::kDebug : LogLevel::kInfo);
  const std::string dir = line.dir;
  std::error_code error;
  fs::create_directories(dir, error);
  if (auto other = read_pid_file(dir + "/" + kSupervisorPidFile);
      other && *other != ::getpid() && process_matches(*other, kSupervisorProgram)) {
    emit({{"event", "error"},
          {"message",
           dir + " belongs to a running supervisor (pid " + std::to_string(*other) + ")"}});
    return 1;
  }
  write_pid_file(dir + "/" + kSupervisorPidFile, ::getpid());

  StdinCommands commands;
  bool stop_requested = false;
  ControlPlaneOptions options{
      .dir = dir,
      .tools_dir = line.tools_dir.empty() ? tools_bin_dir() : line.tools_dir,
      .controller_manager = line.controller_manager,
      .scheduler = line.scheduler,
      .kwok_nodes = line.nodes,
      .real_node = line.real_node,
      .images_dir = {},
      .extra_images = line.images,
      .extra_apiserver_flags = line.apiserver_flags,
      .start_timeout = std::chrono::seconds(line.timeout_seconds),
      .abort_requested =
          [&] {
            if (shutdown.wait_for(0) != 0) stop_requested = true;
            if (line.control_stdin && !stop_requested) {
              // Only "stop" means anything before the cluster is ready.
              for (const auto& command : commands.poll_lines(0)) {
                if (command == "stop") stop_requested = true;
              }
              if (commands.eof()) stop_requested = true;
            }
            return stop_requested;
          },
  };

  std::unique_ptr<ControlPlane> plane;
  try {
    plane = ControlPlane::start(options, logger);
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (!stop_requested) message += "\n(logs kept in " + keep_failure_logs(dir) + ")";
    logger.error("local cluster did not start", {{"error", message}});
    emit({{"event", "error"}, {"message", message}});
    plane.reset();
    fs::remove_all(dir, error);
    return 1;
  }
  nlohmann::json state = plane->describe();
  state["supervisor_pid"] = ::getpid();
  std::ofstream(dir + "/" + kStateFile) << state.dump(2) << "\n";
  if (!human) {
    nlohmann::json ready = state;
    ready["event"] = "ready";
    emit(ready);
  } else {
    std::cerr << "\nlocal cluster ready in " << state["phases"].value("total_ms", 0) << " ms\n"
              << "  kubeconfig: " << state["kubeconfig"].get<std::string>() << "\n"
              << "  apiserver:  " << state["apiserver_url"].get<std::string>() << "\n"
              << "  try:        kubectl --kubeconfig " << state["kubeconfig"].get<std::string>()
              << " get nodes\n";
    if (const auto& node = state["real_node"]; node.is_object()) {
      std::cerr << "  real node:  " << node.value("name", "") << " (label "
                << node.value("label", "") << ", taint " << node.value("taint", "") << "), pods on "
                << node.value("pod_subnet", "") << " via bridge " << node.value("bridge", "")
                << " (the host is " << node.value("gateway", "") << " there)\n";
    }
    std::cerr << "Ctrl-C stops it and removes " << dir << "\n";
  }

  std::set<std::string> reported_exits;
  while (!stop_requested) {
    std::vector<std::string> lines;
    if (line.control_stdin) {
      lines = commands.poll_lines(250);
      if (commands.eof()) stop_requested = true;
      if (shutdown.wait_for(0) != 0) stop_requested = true;
    } else if (shutdown.wait_for(250) != 0) {
      stop_requested = true;
    }
    for (const auto& command : lines) {
      if (command == "stop") {
        stop_requested = true;
      } else if (command == "restart-apiserver") {
        try {
          plane->restart_apiserver();
          emit({{"event", "restarted"}, {"apiserver_url", plane->endpoints().apiserver_url}});
        } catch (const std::exception& e) {
          emit({{"event", "error"}, {"message", e.what()}});
        }
      } else if (command == "describe") {
        nlohmann::json described = plane->describe();
        described["event"] = "described";
        emit(described);
      } else if (!command.empty()) {
        emit({{"event", "error"}, {"message", "unknown command '" + command + "'"}});
      }
    }
    for (const auto& exited : plane->exited_components()) {
      if (reported_exits.insert(exited).second) {
        logger.warn("component exited unexpectedly", {{"component", exited}});
      }
    }
  }
  logger.info("stopping local cluster", {{"dir", dir}});
  plane->stop();
  plane.reset();
  fs::remove_all(dir, error);
  if (human) std::cerr << "local cluster stopped; " << dir << " removed\n";
  return 0;
}

int up(const CommandLine& line) {
  const std::string dir = dev_cluster_dir(line);
  if (auto pid = read_pid_file(dir + "/" + kSupervisorPidFile);
      pid && process_matches(*pid, kSupervisorProgram)) {
    std::ifstream state_file(dir + "/" + kStateFile);
    nlohmann::json state = nlohmann::json::parse(state_file, nullptr, false);
    if (!state.is_discarded()) {
      std::cerr << "local cluster already running (supervisor pid " << *pid << ")\n";
      std::cout << state.value("kubeconfig", "") << std::endl;
      return 0;
    }
    std::cerr << "a local cluster is starting in " << dir << " (pid " << *pid
              << "); wait, or run `down` first\n";
    return 1;
  }
  sweep_stale_clusters(fs::path(dir).parent_path().string());
  std::error_code error;
  fs::remove_all(dir, error);
  fs::create_directories(dir, error);
  if (error) {
    std::cerr << "cannot create " << dir << ": " << error.message() << "\n";
    return 1;
  }

  process::ProcessSpec spec;
  spec.argv = {"/proc/self/exe", "serve",
               "--dir",          dir,
               "--nodes",        std::to_string(line.nodes),
               "--timeout",      std::to_string(line.timeout_seconds)};
  if (line.controller_manager) spec.argv.push_back("--controller-manager");
  if (line.scheduler) spec.argv.push_back("--scheduler");
  if (line.real_node) spec.argv.push_back("--real-node");
  for (const auto& image : line.images) {
    spec.argv.insert(spec.argv.end(), {"--image", fs::absolute(image).string()});
  }
  if (!line.tools_dir.empty()) spec.argv.insert(spec.argv.end(), {"--tools-dir", line.tools_dir});
  for (const auto& flag : line.apiserver_flags) spec.argv.push_back("--apiserver-flag=" + flag);
  spec.argv[0] = fs::read_symlink("/proc/self/exe").string();
  spec.log_path = dir + "/supervisor.log";
  spec.capture_stdout = true;
  // Detached: its own session and no parent-death signal, so it outlives this command.
  spec.new_session = true;
  spec.parent_death_signal = 0;
  auto supervisor = process::Process::spawn(spec);
  std::cerr << "starting local cluster in " << dir << " (supervisor pid " << supervisor->pid()
            << ")\n";
  while (true) {
    auto read = supervisor->read_stdout_line(std::chrono::seconds(600));
    if (read.result != process::LineRead::Result::kLine) {
      supervisor->terminate();
      std::cerr << "the supervisor ended without saying it was ready ("
                << (supervisor->exit_status() ? supervisor->exit_status()->describe() : "timeout")
                << ")\n"
                << tail_of_file(spec.log_path, 40);
      return 1;
    }
    auto event = nlohmann::json::parse(read.line, nullptr, false);
    if (event.is_discarded()) continue;
    if (event.value("event", "") == "error") {
      supervisor->wait_for(std::chrono::seconds(30));
      std::cerr << "local cluster did not start: " << event.value("message", "") << "\n";
      return 1;
    }
    if (event.value("event", "") == "ready") {
      supervisor->release();
      std::cerr << "local cluster ready in " << event["phases"].value("total_ms", 0) << " ms ("
                << line.nodes << " fake nodes); stop it with: hack/local-cluster down\n";
      std::cout << event.value("kubeconfig", "") << std::endl;
      return 0;
    }
  }
}

int down(const CommandLine& line) {
  const std::string dir = dev_cluster_dir(line);
  auto pid = read_pid_file(dir + "/" + kSupervisorPidFile);
  if (pid && process_matches(*pid, kSupervisorProgram)) {
    ::kill(*pid, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (process::process_alive(*pid) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (process::process_alive(*pid)) {
      std::cerr << "supervisor " << *pid << " did not stop within 60 s; killing it\n";
      ::kill(*pid, SIGKILL);
    }
  } else if (!fs::exists(dir)) {
    std::cerr << "no local cluster in " << dir << "\n";
    return 0;
  }
  // Whatever the supervisor could not clean (it was killed, say) goes now.
  auto report = sweep_stale_clusters(fs::path(dir).parent_path().string(), std::chrono::seconds(0));
  std::error_code error;
  fs::remove_all(dir, error);
  std::cerr << "local cluster stopped; " << dir << " removed";
  if (!report.killed_pids.empty())
    std::cerr << " (" << report.killed_pids.size() << " leftovers killed)";
  std::cerr << "\n";
  return 0;
}

int status(const CommandLine& line) {
  const std::string dir = dev_cluster_dir(line);
  auto pid = read_pid_file(dir + "/" + kSupervisorPidFile);
  if (!pid || !process_matches(*pid, kSupervisorProgram)) {
    std::cout << "not running (" << dir << ")\n";
    return 3;
  }
  std::ifstream state_file(dir + "/" + kStateFile);
  nlohmann::json state = nlohmann::json::parse(state_file, nullptr, false);
  if (state.is_discarded()) {
    std::cout << "starting (supervisor pid " << *pid << ")\n";
    return 0;
  }
  std::cout << "running (supervisor pid " << *pid << ")\n"
            << "  kubeconfig: " << state.value("kubeconfig", "") << "\n"
            << "  apiserver:  " << state.value("apiserver_url", "") << "\n"
            << "  etcd:       " << state.value("etcd_url", "") << "\n";
  for (const auto& component : state["components"]) {
    pid_t component_pid = component.value("pid", 0);
    std::cout << "  " << component.value("name", "") << ": pid " << component_pid
              << (process::process_alive(component_pid) ? " running" : " NOT RUNNING") << ", log "
              << component.value("log", "") << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace perimeter::localcluster

int main(int argc, char** argv) {
  using namespace perimeter::localcluster;
  CommandLine line;
  try {
    line = parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::invalid_argument& e) {
    std::cerr << "perimeter-local-cluster: " << e.what() << "\n\n" << usage_text();
    return 2;
  }
  try {
    if (line.command == "serve") return serve(line, false);
    if (line.command == "run") {
      if (line.dir.empty()) {
        auto root = default_clusters_root();
        sweep_stale_clusters(root);
        line.dir = make_cluster_dir(root);
      }
      return serve(line, true);
    }
    if (line.command == "up") return up(line);
    if (line.command == "down") return down(line);
    return status(line);
  } catch (const std::exception& e) {
    std::cerr << "perimeter-local-cluster " << line.command << ": " << e.what() << "\n";
    return 1;
  }
}
