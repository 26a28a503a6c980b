#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/log.h"

namespace perimeter::manager {

// "namespace/label=value[,label=value]": pods by namespace and labels.
struct PodLabels {
  std::string namespace_;
  std::map<std::string, std::string> labels;
};

// perimeter-operator's command line. Defaults suit an in-cluster Deployment.
struct Options {
  std::string kubeconfig;  // empty: $KUBECONFIG, ~/.kube/config, then in-cluster
  std::string context;
  std::string watch_namespace;  // empty: every namespace
  // Namespaces that opted in to sessions (RBAC grants Secrets and Pods there only); nullopt:
  // every namespace ("*", cluster-wide mode). An AgentEnvironment elsewhere is told so.
  std::optional<std::set<std::string>> session_namespaces;
  // Namespaces where McpTunnels are served (RBAC grants Secrets, ConfigMaps, Deployments,
  // NetworkPolicies and PDBs there only); nullopt: every namespace ("*").
  std::optional<std::set<std::string>> tunnel_namespaces;
  // The operator's own ServiceAccount ("namespace/name"), whose token it exchanges for a Tunnels
  // API access token (workload identity federation). Empty: WorkloadIdentity McpTunnels say
  // IdentityNotConfigured.
  std::string tunnels_service_account;
  // Audiences the operator requests its ServiceAccount token for, comma-separated.
  std::string tunnel_audiences = "https://api.anthropic.com";
  std::string cluster_domain = "cluster.local";
  // How runner pods reach the network: "public-addresses", "gateway" or "cilium"
  // (docs/egress.md).
  std::string runner_egress = "public-addresses";
  // Gateway and Cilium modes: the cluster's DNS pods, the only place DNS may go.
  PodLabels cluster_dns{"kube-system", {{"k8s-app", "kube-dns"}}};
  // Gateway mode: the gateway's image (empty: the build's default, which only the local real node
  // has), replicas, and namespace (empty: $POD_NAMESPACE, else "perimeter-system").
  std::string egress_gateway_image;
  int egress_gateway_replicas = 2;
  std::string egress_gateway_namespace;
  // The perimeter-mcp-guard image for McpTunnels that name none; empty: the build's default,
  // which only the local real node has.
  std::string mcp_guard_image;
  // Warm runner pods' assignment service (docs/warm-pool.md): the port the leader serves it on,
  // which is also the port of the Service `warm_assignment_service` in $POD_NAMESPACE that warm
  // pods are told to ask; 0: not served (the default: it needs that Service and the NetworkPolicy
  // ingress the chart renders with it). Its CA is kept in the Secret
  // `warm_assignment_ca_secret` there.
  int warm_assignment_port = 0;
  std::string warm_assignment_service = "perimeter-assignment";
  // An IP address of this host warm pods reach directly instead of the Service (an operator run
  // outside the cluster): the listener binds it and the certificate names it. Empty: the Service.
  std::string warm_assignment_address{};
  std::string warm_assignment_ca_secret = "perimeter-assignment-ca";
  // The operator's pods in $POD_NAMESPACE as that Service selects them: what a warm pool's
  // runner pods may reach.
  std::map<std::string, std::string> warm_assignment_pod_labels{
      {"app.kubernetes.io/name", "perimeter"}, {"app.kubernetes.io/component", "operator"}};
  int ca_rotation_overlap_seconds = 120;
  int tunnel_archive_deadline_seconds = 300;
  // Origins the operator may send credentials to (environment keys, federation tokens),
  // comma-separated.
  std::string allowed_api_hosts = "https://api.anthropic.com";
  std::string metrics_bind_address = "0.0.0.0:8080";
  std::string health_bind_address = "0.0.0.0:8081";
  bool leader_elect = true;
  std::string leader_election_namespace;  // empty: $POD_NAMESPACE, else "perimeter-system"
  std::string leader_election_id = "perimeter-operator";
  std::string identity;  // empty: hostname + random suffix
  // Client-side limit on Kubernetes API requests. Each claim costs two writes (Secret, Pod), so
  // this bounds claims/s at about qps/2; the apiserver's own priority and fairness still applies.
  double kube_api_qps = 200;
  int kube_api_burst = 400;
  int workers = 4;
  int poll_threads = 4;
  int max_extra_poll_threads = 64;
  // How often each AgentEnvironment is looked at with nothing changed, swept for Secrets left
  // without their pod, and swept for pods an earlier version left gated after their item's ack. The
  // defaults suit production; tests shorten them so sweeps run many times within a test.
  int resync_seconds = 15;
  int orphan_sweep_seconds = 60;
  int gate_sweep_seconds = 15;
  LogLevel log_level = LogLevel::kInfo;
};

// Parses argv; throws std::invalid_argument with a message naming the flag. `--help` sets help.
Options parse_options(const std::vector<std::string>& args, bool* help);
std::string usage();

}  // namespace perimeter::manager
