#include "egressgateway/gateway_process.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "core/base64.h"
#include "core/text_files.h"
#include "process/process.h"

namespace perimeter::testing {

struct GatewayProcess::State {
  std::string dir;
  std::string config_path;
  std::string key_path;
  std::string key;
  std::string audit_path;
  std::string log_path;
  std::unique_ptr<process::Process> process;
  int proxy_port = 0;
  std::string metrics_address;

  std::string with_key(const std::string& yaml) const {
    return yaml + "\ncredentials_key_file: " + key_path + "\n";
  }

  ~State() {
    if (process) process->terminate(std::chrono::seconds(10));
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }
};

GatewayProcess::GatewayProcess(const std::string& config_yaml, const GatewayProcessOptions& options,
                               const std::string& binary)
    : state_(std::make_unique<State>()) {
  std::string program = binary;
  if (program.empty()) {
    const char* bin_dir = std::getenv("PERIMETER_BIN_DIR");
    if (bin_dir == nullptr)
      throw std::runtime_error("PERIMETER_BIN_DIR is not set (run via ctest)");
    program = std::string(bin_dir) + "/perimeter-egress-gateway";
  }
  program = std::filesystem::absolute(program).string();
  if (access(program.c_str(), X_OK) != 0) {
    throw std::runtime_error("perimeter-egress-gateway not found at " + program +
                             "; build it first");
  }
  std::string pattern =
      (std::filesystem::temp_directory_path() / "perimeter-egress-gateway-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  state_->dir = pattern;
  state_->config_path = state_->dir + "/config.yaml";
  state_->key_path = state_->dir + "/key";
  state_->audit_path = state_->dir + "/audit.jsonl";
  state_->log_path = state_->dir + "/gateway.log";
  state_->key.resize(32);
  RAND_bytes(reinterpret_cast<unsigned char*>(state_->key.data()), 32);
  write_file_atomically(state_->key_path, state_->key);
  write_file_atomically(state_->config_path, state_->with_key(config_yaml));

  const std::string flags = " --threads " + std::to_string(options.threads) + " --drain-seconds " +
                            std::to_string(options.drain_seconds);
  process::ProcessSpec spec;
  spec.argv = {"/bin/sh",
               "-c",
               "exec \"$0\" --config \"$1\"" + flags + " >\"$2\"",
               program,
               state_->config_path,
               state_->audit_path};
  if (!options.hosts_file.empty()) {
    spec.argv = {
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        "mount --bind \"$3\" /etc/hosts && exec \"$0\" --config \"$1\"" + flags + " >\"$2\"",
        program,
        state_->config_path,
        state_->audit_path,
        options.hosts_file};
  }
  spec.env = {"PERIMETER_EGRESS_TESTING=1"};
  spec.log_path = state_->log_path;
  spec.parent_death_signal = SIGKILL;
  state_->process = process::Process::spawn(spec);

  const auto deadline = std::chrono::steady_clock::now() + options.start_limit;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& line : complete_lines(log())) {
      const auto parsed = nlohmann::json::parse(line, nullptr, false);
      if (!parsed.is_object() || parsed.value("msg", "") != "ready") continue;
      const auto address = parsed.value("address", "");
      state_->proxy_port = std::stoi(address.substr(address.rfind(':') + 1));
      if (parsed.contains("metrics") && parsed["metrics"].is_string()) {
        state_->metrics_address = parsed["metrics"].get<std::string>();
      }
      return;
    }
    if (!state_->process->running()) {
      const auto status = state_->process->exit_status();
      throw std::runtime_error("perimeter-egress-gateway exited before it was ready (" +
                               (status ? status->describe() : std::string("unknown")) +
                               "): " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("perimeter-egress-gateway was not ready in time: " + log());
}

GatewayProcess::~GatewayProcess() = default;

int GatewayProcess::proxy_port() const {
  return state_->proxy_port;
}

std::string GatewayProcess::metrics_address() const {
  return state_->metrics_address;
}

std::string GatewayProcess::credential(const std::string& environment_namespace,
                                       const std::string& name, const std::string& session) const {
  const std::string user = environment_namespace + "~" + name + "~" + session;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), state_->key.data(), static_cast<int>(state_->key.size()),
       reinterpret_cast<const unsigned char*>(user.data()), user.size(), digest, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return "Basic " + base64_encode(user + ":" + hex);
}

std::vector<nlohmann::json> GatewayProcess::audit_lines() const {
  std::vector<nlohmann::json> lines;
  for (const auto& line : complete_lines(read_text_file(state_->audit_path))) {
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (parsed.is_discarded()) throw std::runtime_error("an audit line is not JSON: " + line);
    lines.push_back(std::move(parsed));
  }
  return lines;
}

std::vector<nlohmann::json> GatewayProcess::wait_for_audit_lines(
    std::size_t count, std::chrono::milliseconds limit) const {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto lines = audit_lines();
  while (lines.size() < count && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    lines = audit_lines();
  }
  return lines;
}

std::string GatewayProcess::log() const {
  return read_text_file(state_->log_path);
}

void GatewayProcess::rewrite_config(const std::string& config_yaml) {
  write_file_atomically(state_->config_path, state_->with_key(config_yaml));
}

void GatewayProcess::reload() {
  kill(state_->process->pid(), SIGHUP);
}

long GatewayProcess::rss_kib() const {
  std::ifstream status("/proc/" + std::to_string(state_->process->pid()) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

bool GatewayProcess::terminate_and_wait(std::chrono::milliseconds limit) {
  kill(state_->process->pid(), SIGTERM);
  const auto status = state_->process->wait_for(limit);
  return status && status->success();
}

int GatewayProcess::pid() const {
  return state_->process->pid();
}

}  // namespace perimeter::testing
