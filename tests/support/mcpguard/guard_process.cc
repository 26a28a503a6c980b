#include "mcpguard/guard_process.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "core/text_files.h"
#include "process/process.h"

namespace perimeter::testing {

struct GuardProcess::State {
  std::string dir;
  std::string config_path;
  std::string audit_path;
  std::string log_path;
  std::unique_ptr<process::Process> process;
  std::map<std::string, std::string> route_addresses;  // route -> "127.0.0.1:PORT"
  std::string metrics_address;

  ~State() {
    if (process) process->terminate(std::chrono::seconds(10));
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }
};

GuardProcess::GuardProcess(const std::string& config_yaml, std::chrono::seconds start_limit)
    : GuardProcess(config_yaml, GuardProcessOptions{start_limit, ""}) {}

GuardProcess::GuardProcess(const std::string& config_yaml, const GuardProcessOptions& options)
    : state_(std::make_unique<State>()) {
  const char* bin_dir = std::getenv("PERIMETER_BIN_DIR");
  if (bin_dir == nullptr) throw std::runtime_error("PERIMETER_BIN_DIR is not set (run via ctest)");
  const std::string binary =
      std::filesystem::absolute(std::string(bin_dir) + "/perimeter-mcp-guard").string();
  if (access(binary.c_str(), X_OK) != 0) {
    throw std::runtime_error("perimeter-mcp-guard not found at " + binary + "; build it first");
  }
  std::string pattern =
      (std::filesystem::temp_directory_path() / "perimeter-mcp-guard-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  state_->dir = pattern;
  state_->config_path = state_->dir + "/config.yaml";
  state_->audit_path = state_->dir + "/audit.jsonl";
  state_->log_path = state_->dir + "/guard.log";
  write_file_atomically(state_->config_path, config_yaml);

  // The shell only redirects stdout (the audit) to its own file and execs the guard in its place,
  // so pid() is the guard's; Process sends stderr (the log) to log_path. With a hosts file,
  // unshare (which execs, never forks, without --fork) gives the shell a private mount namespace
  // first, where it bind-mounts the file over /etc/hosts.
  process::ProcessSpec spec;
  spec.argv = {
      "/bin/sh",         "-c", "exec \"$0\" --config \"$1\" >\"$2\"", binary, state_->config_path,
      state_->audit_path};
  if (!options.hosts_file.empty()) {
    spec.argv = {"unshare",
                 "--mount",
                 "--propagation",
                 "private",
                 "/bin/sh",
                 "-c",
                 "mount --bind \"$3\" /etc/hosts && exec \"$0\" --config \"$1\" >\"$2\"",
                 binary,
                 state_->config_path,
                 state_->audit_path,
                 options.hosts_file};
  }
  spec.log_path = state_->log_path;
  spec.parent_death_signal = SIGKILL;
  state_->process = process::Process::spawn(spec);

  // The guard logs `ready` with every listener's bound address once all of them accept.
  const auto deadline = std::chrono::steady_clock::now() + options.start_limit;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& line : complete_lines(log())) {
      const auto parsed = nlohmann::json::parse(line, nullptr, false);
      if (!parsed.is_object() || parsed.value("msg", "") != "ready") continue;
      if (parsed.contains("routes") && parsed["routes"].is_object()) {
        for (const auto& [route, address] : parsed["routes"].items()) {
          state_->route_addresses[route] = address.get<std::string>();
        }
      }
      if (parsed.contains("metrics") && parsed["metrics"].is_string()) {
        state_->metrics_address = parsed["metrics"].get<std::string>();
      }
      return;
    }
    if (!state_->process->running()) {
      const auto status = state_->process->exit_status();
      throw std::runtime_error("perimeter-mcp-guard exited before it was ready (" +
                               (status ? status->describe() : std::string("unknown")) +
                               "): " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::string log_so_far = log();
  state_->process->terminate(std::chrono::seconds(5));
  throw std::runtime_error("perimeter-mcp-guard was not ready within " +
                           std::to_string(options.start_limit.count()) + " s: " + log_so_far);
}

GuardProcess::~GuardProcess() = default;

std::string GuardProcess::route_url(const std::string& route) const {
  const auto found = state_->route_addresses.find(route);
  if (found == state_->route_addresses.end()) {
    throw std::runtime_error("perimeter-mcp-guard has no route named " + route);
  }
  return "http://" + found->second;
}

std::string GuardProcess::metrics_address() const {
  return state_->metrics_address;
}

std::vector<nlohmann::json> GuardProcess::audit_lines() const {
  std::vector<nlohmann::json> lines;
  for (const auto& line : complete_lines(read_text_file(state_->audit_path))) {
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (parsed.is_discarded()) {
      throw std::runtime_error("an audit line is not JSON: " + line);
    }
    lines.push_back(std::move(parsed));
  }
  return lines;
}

std::string GuardProcess::log() const {
  return read_text_file(state_->log_path);
}

void GuardProcess::rewrite_config(const std::string& config_yaml) {
  write_file_atomically(state_->config_path, config_yaml);
}

void GuardProcess::reload() {
  kill(state_->process->pid(), SIGHUP);
}

bool GuardProcess::running() const {
  return state_->process->running();
}

int GuardProcess::pid() const {
  return state_->process->pid();
}

}  // namespace perimeter::testing
