#pragma once

// The operator's side of the assignment channel as it runs (docs/warm-pool.md, "The assignment
// channel"): for one term of leadership, the AssignmentServer over the pod informer's store,
// with its serving certificate issued from the CA in the operator's namespace and renewed before
// it expires, woken by every warm pod's event.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "controllers/agentenvironment/assignment_certificates.h"
#include "controllers/agentenvironment/assignment_server.h"
#include "controllers/agentenvironment/kube_warm_pod_directory.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/log.h"
#include "runtime/informer.h"

namespace perimeter::agentenvironment {

// perimeter_warm_assignment_answers_total{outcome}: each decision the service makes (a held
// request is decided again at each wake and recheck, each counted); and
// perimeter_warm_assignment_certificate_renewals_total{result}: renewed, error.
class WarmAssignmentMetrics {
 public:
  explicit WarmAssignmentMetrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>& answers_total;
  prometheus::Family<prometheus::Counter>& certificate_renewals_total;
};

// What --warm-assignment-port and the flags beside it turn on.
struct WarmAssignmentSettings {
  // The Service warm pods are told to ask (its name, namespace and port; the certificate's names).
  AssignmentServiceAddress service{};
  // The operator's pods, as the Service selects them: what a warm pool's runner pods may reach.
  PodSelection operator_pods{};
  // Where this process listens (the Service's targetPort).
  std::string bind_address = "0.0.0.0";
  int listen_port = 8443;
  // Loaded (or made) at start by load_or_create_assignment_ca; shared by every term.
  std::shared_ptr<const AssignmentCa> ca{};
  // Null: not counted.
  WarmAssignmentMetrics* metrics = nullptr;
};

// Where warm pods of this operator ask, and the CA they trust for it: what the reconciler puts
// into each warm pod and its own Secret.
AssignmentEndpoint warm_assignment_endpoint(const WarmAssignmentSettings& settings);
// The egress a warm pool's runner pods get to it (build_network_policy's `assignment`).
AssignmentPeer warm_assignment_peer(const WarmAssignmentSettings& settings);

// One term's listener. Construct it in the controller's setup (before the cache starts: it adds
// the token-hash index to the pod store and a handler to each pod informer), start() once the
// pod cache has synced (a token checked against an unsynced cache would be refused, and the
// runner exits on a refusal), stop() when the term ends.
class WarmAssignmentListener {
 public:
  WarmAssignmentListener(const WarmAssignmentSettings& settings,
                         const std::vector<runtime::Informer*>& pod_informers,
                         runtime::Store& pod_store, kube::ResourceClient& secrets,
                         kube::ResourceClient& pods, Logger logger);
  ~WarmAssignmentListener();
  WarmAssignmentListener(const WarmAssignmentListener&) = delete;
  WarmAssignmentListener& operator=(const WarmAssignmentListener&) = delete;

  // Binds and serves; throws when the port cannot be bound.
  void start();
  // Closes every connection (held runners ask again, and reach the next leader) and joins every
  // thread. Idempotent.
  void stop();
  std::uint16_t port() const { return server_.port(); }
  // A claim of this process assigned a warm pod: its held request is decided now, from what the
  // claim knows (WarmAssignmentService::hand_over), not at the pod informer's event.
  void hand_over(WarmHandOver hand_over);
  // WarmAssignmentService::waiting_nonce.
  std::optional<std::string> waiting_nonce(const std::string& pod_uid) {
    return service_.waiting_nonce(pod_uid);
  }

 private:
  Logger logger_;
  KubeWarmPodDirectory directory_;
  WarmAssignmentService service_;
  AssignmentServingCertificate first_certificate_;
  AssignmentServer server_;
  ServingCertificateRenewal renewal_;
};

}  // namespace perimeter::agentenvironment
