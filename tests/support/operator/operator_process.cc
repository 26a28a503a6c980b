#include "operator/operator_process.h"

#include <csignal>

#include "agentapi/sim_process.h"
#include "localcluster/ports.h"

namespace perimeter::testing {

OperatorProcess::OperatorProcess(const OperatorProcessOptions& options)
    : metrics_port_(localcluster::pick_free_port()) {
  process::ProcessSpec spec;
  spec.argv = {options.binary,
               "--kubeconfig",
               options.kubeconfig,
               "--leader-elect=false",
               "--metrics-bind-address",
               "127.0.0.1:" + std::to_string(metrics_port_),
               "--health-probe-bind-address",
               "127.0.0.1:" + std::to_string(localcluster::pick_free_port())};
  spec.argv.insert(spec.argv.end(), options.extra_args.begin(), options.extra_args.end());
  if (!options.hosts_file.empty()) {
    // unshare execs the shell, which execs the operator: one process, so signals reach it.
    std::vector<std::string> wrapped = {"unshare",
                                        "--mount",
                                        "--propagation",
                                        "private",
                                        "/bin/sh",
                                        "-c",
                                        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
                                        options.hosts_file};
    wrapped.insert(wrapped.end(), spec.argv.begin(), spec.argv.end());
    spec.argv = std::move(wrapped);
  }
  spec.env = options.env;
  spec.log_path = options.log_path;
  process_ = process::Process::spawn(spec);
}

OperatorProcess::~OperatorProcess() {
  if (!process_->running()) return;
  process_->signal(SIGTERM);
  if (!process_->wait_for(std::chrono::milliseconds(10000))) {
    process_->signal(SIGKILL);
    process_->wait();
  }
}

void OperatorProcess::kill9() {
  process_->signal(SIGKILL);
  process_->wait();
}

bool OperatorProcess::running() {
  return process_->running();
}

std::string OperatorProcess::metrics() const {
  return http_call("http://127.0.0.1:" + std::to_string(metrics_port_), "GET", "/metrics").body;
}

}  // namespace perimeter::testing
