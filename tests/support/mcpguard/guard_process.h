#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace perimeter::testing {

struct GuardProcessOptions {
  std::chrono::seconds start_limit{20};
  // When set, the guard runs in a mount namespace of its own where this file is /etc/hosts, so a
  // test decides what an upstream's name resolves to at each connection (the C library reads the
  // file at every lookup). Needs root.
  std::string hosts_file;
};

// A running perimeter-mcp-guard (from PERIMETER_BIN_DIR) for tests: writes `config_yaml` to a
// temporary file, starts the binary, and returns once every route's listener is accepting (the
// guard logs `listening` with the route and its address, so routes may use port 0). Stops it with
// SIGTERM on destruction. Its stdout (the audit) and stderr (the log) go to files.
class GuardProcess {
 public:
  explicit GuardProcess(const std::string& config_yaml,
                        std::chrono::seconds start_limit = std::chrono::seconds(20));
  GuardProcess(const std::string& config_yaml, const GuardProcessOptions& options);
  ~GuardProcess();
  GuardProcess(const GuardProcess&) = delete;
  GuardProcess& operator=(const GuardProcess&) = delete;

  // "http://127.0.0.1:PORT" of the route's listener.
  std::string route_url(const std::string& route) const;
  // "127.0.0.1:PORT" of the metrics listener, or "" when the config has none.
  std::string metrics_address() const;
  // Every audit line written so far, parsed (a line that is not JSON fails the calling test).
  std::vector<nlohmann::json> audit_lines() const;
  // The operational log (stderr) so far.
  std::string log() const;
  // Replaces the config file's content (the guard notices within its check interval).
  void rewrite_config(const std::string& config_yaml);
  // Sends SIGHUP.
  void reload();
  bool running() const;
  int pid() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace perimeter::testing
