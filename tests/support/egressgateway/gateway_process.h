#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace perimeter::testing {

struct GatewayProcessOptions {
  std::chrono::seconds start_limit{20};
  // When set, the gateway runs in a mount namespace of its own where this file is /etc/hosts, so
  // a test decides what a name resolves to (the C library reads the file at every lookup). Root.
  std::string hosts_file;
  int threads = 2;
  int drain_seconds = 5;
};

// A running perimeter-egress-gateway (from PERIMETER_BIN_DIR, or `binary`) for tests and the
// benchmark: writes the key and the config (`config_yaml` with `credentials_key_file` appended)
// to a temporary folder, starts the binary with PERIMETER_EGRESS_TESTING=1, and returns once it
// logs `ready`. Stops it with SIGTERM on destruction. stdout (the audit) and stderr (the log) go
// to files.
class GatewayProcess {
 public:
  GatewayProcess(const std::string& config_yaml, const GatewayProcessOptions& options,
                 const std::string& binary = "");
  ~GatewayProcess();
  GatewayProcess(const GatewayProcess&) = delete;
  GatewayProcess& operator=(const GatewayProcess&) = delete;

  std::string proxy_host() const { return "127.0.0.1"; }
  int proxy_port() const;
  // "127.0.0.1:PORT" of the metrics listener, or "" when the config has none.
  std::string metrics_address() const;
  // The Proxy-Authorization value the operator would issue for this session.
  std::string credential(const std::string& environment_namespace, const std::string& name,
                         const std::string& session) const;
  // Every complete audit line so far, parsed.
  std::vector<nlohmann::json> audit_lines() const;
  // Waits until at least `count` audit lines exist (or `limit` passes) and returns them all.
  std::vector<nlohmann::json> wait_for_audit_lines(std::size_t count,
                                                   std::chrono::milliseconds limit) const;
  std::string log() const;
  // Replaces the config (key line appended) atomically.
  void rewrite_config(const std::string& config_yaml);
  void reload();  // SIGHUP
  // Resident set size from /proc/<pid>/status, in KiB.
  long rss_kib() const;
  // SIGTERM; waits up to `limit` for the exit; true when it exited with status 0.
  bool terminate_and_wait(std::chrono::milliseconds limit);
  int pid() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace perimeter::testing
