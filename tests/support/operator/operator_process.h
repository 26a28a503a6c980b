#pragma once

#include <memory>
#include <string>
#include <vector>

#include "process/process.h"

namespace perimeter::testing {

struct OperatorProcessOptions {
  std::string binary;      // the perimeter-operator executable
  std::string kubeconfig;  // the cluster it manages
  std::string log_path;    // its stdout and stderr
  std::vector<std::string> extra_args;
  // "NAME=value" entries laid over the test's environment (SSL_CERT_FILE for an API under a test
  // CA, say).
  std::vector<std::string> env{};
  // When set, the operator runs in a mount namespace of its own where this file is /etc/hosts, so
  // a stand-in API host name resolves for it alone (needs root).
  std::string hosts_file{};
};

// perimeter-operator as a child process, without leader election, with its metrics and health
// endpoints on free loopback ports. Destruction stops it as a kubelet would: SIGTERM, then
// SIGKILL if it has not exited within 10 s.
class OperatorProcess {
 public:
  explicit OperatorProcess(const OperatorProcessOptions& options);
  ~OperatorProcess();
  OperatorProcess(const OperatorProcess&) = delete;
  OperatorProcess& operator=(const OperatorProcess&) = delete;

  // A crash: no shutdown path runs.
  void kill9();
  bool running();
  pid_t pid() const { return process_->pid(); }
  // Its Prometheus exposition, scraped now.
  std::string metrics() const;
  // Where it serves that exposition (host:port), for a real Prometheus to scrape.
  std::string metrics_address() const { return "127.0.0.1:" + std::to_string(metrics_port_); }

 private:
  int metrics_port_ = 0;
  std::unique_ptr<process::Process> process_;
};

}  // namespace perimeter::testing
