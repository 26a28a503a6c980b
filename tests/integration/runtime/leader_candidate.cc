// A process that campaigns for a Lease and says on stdout when it leads, for the two-process
// leader election test: `leader_candidate <kubeconfig> <namespace> <lease> <identity>`.
// SIGTERM stops it cleanly (releasing the lease); SIGKILL is the crash case.
#include <iostream>
#include <stop_token>
#include <thread>

#include "core/log.h"
#include "core/shutdown_signal.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "runtime/leader_election.h"

int main(int argc, char** argv) {
  using namespace perimeter;
  if (argc != 5) {
    std::cerr << "usage: leader_candidate <kubeconfig> <namespace> <lease> <identity>\n";
    return 2;
  }
  ShutdownSignal shutdown;  // before any thread starts, so all of them block SIGTERM
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics(registry);
  runtime::RuntimeMetrics metrics(registry);
  kube::HttpTransport transport(kube::Config::from_kubeconfig_file(argv[1]));
  kube::ResourceClient leases(transport, kube::resources::leases(), client_metrics);
  runtime::LeaderElectionConfig config;
  config.lease_namespace = argv[2];
  config.lease_name = argv[3];
  config.identity = argv[4];
  runtime::LeaderCallbacks callbacks;
  callbacks.on_started_leading = [&](std::stop_token) {
    std::cout << "LEADING " << config.identity << std::endl;
  };
  callbacks.on_stopped_leading = [&] { std::cout << "STOPPED " << config.identity << std::endl; };
  runtime::LeaderElector elector(leases, config, callbacks, metrics, Logger("leader-candidate"));
  std::cout << "CAMPAIGNING " << config.identity << std::endl;
  std::jthread campaign([&](std::stop_token stop) { elector.run(stop); });
  shutdown.wait();
  campaign.request_stop();
  campaign.join();
  return 0;
}
