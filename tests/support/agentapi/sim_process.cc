#include "agentapi/sim_process.h"

#include <cpprest/http_client.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace perimeter::testing {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The `{"event":"listening","port":N,"url":"http://..."}` line perimeter-sim prints on stdout once
// it accepts connections; nullopt until a complete one is there.
std::optional<nlohmann::json> listening_line(const std::string& stdout_text) {
  std::istringstream lines(stdout_text);
  for (std::string line; std::getline(lines, line);) {
    if (lines.eof()) break;  // not yet terminated by a newline: maybe half written
    const auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (parsed.is_object() && parsed.value("event", "") == "listening" && parsed.contains("port") &&
        parsed["port"].is_number_integer() && parsed.contains("url") && parsed["url"].is_string()) {
      return parsed;
    }
  }
  return std::nullopt;
}

}  // namespace

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "perimeter-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

SimProcess::SimProcess(std::vector<std::string> extra_args) {
  const char* bin_dir = std::getenv("PERIMETER_BIN_DIR");
  if (bin_dir == nullptr) throw std::runtime_error("PERIMETER_BIN_DIR is not set (run via ctest)");
  const std::string binary =
      std::filesystem::absolute(std::string(bin_dir) + "/perimeter-sim").string();
  if (access(binary.c_str(), X_OK) != 0) {
    throw std::runtime_error("perimeter-sim not found at " + binary + "; build it first");
  }
  std::string pattern = (std::filesystem::temp_directory_path() / "perimeter-sim-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  std::vector<std::string> args = {binary, "serve", "--port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, (dir_ + "/stdout").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, (dir_ + "/stderr").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  // The child must not inherit a blocked SIGTERM from a test that blocked it.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t empty;
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attributes, &empty);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  const int rc = posix_spawn(&pid_, binary.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (rc != 0) throw std::runtime_error("cannot start perimeter-sim: " + std::string(strerror(rc)));

  // The url comes from the server's own `listening` line, so a sim bound with --address (the
  // real node's bridge gateway) is reached where it really listens, not at 127.0.0.1.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (const auto listening = listening_line(read_file(dir_ + "/stdout"))) {
      port_ = listening->at("port").get<int>();
      url_ = listening->at("url").get<std::string>();
      return;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("perimeter-sim exited before listening: " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  terminate();
  throw std::runtime_error("perimeter-sim did not report its port within 20 s: " + log());
}

std::string SimProcess::log() const {
  return read_file(dir_ + "/stderr");
}

int SimProcess::terminate() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

SimProcess::~SimProcess() {
  terminate();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

nlohmann::json HttpResult::json() const {
  return nlohmann::json::parse(body, nullptr, false);
}

HttpResult http_call(const std::string& base_url, const std::string& method,
                     const std::string& path, const std::string& body,
                     const std::vector<std::pair<std::string, std::string>>& headers) {
  web::http::client::http_client_config config;
  config.set_timeout(std::chrono::seconds(30));
  web::http::client::http_client client(base_url, config);
  web::http::http_request request(method);
  request.set_request_uri(path);
  for (const auto& [name, value] : headers) request.headers().add(name, value);
  if (!body.empty()) request.set_body(body, "application/json");
  auto response = client.request(request).get();
  HttpResult result;
  result.status = response.status_code();
  result.body = response.extract_utf8string(true).get();
  return result;
}

}  // namespace perimeter::testing
