#include "manager/options.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdexcept>

#include "core/strings.h"

namespace perimeter::manager {
namespace {

int parse_positive(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const int parsed = std::stoi(value, &used);
    if (used == value.size() && parsed > 0) return parsed;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(flag + " wants a positive integer, got '" + value + "'");
}

double parse_positive_number(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const double parsed = std::stod(value, &used);
    if (used == value.size() && parsed > 0) return parsed;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(flag + " wants a positive number, got '" + value + "'");
}

// 0 (off) to 65535.
int parse_port_or_zero(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const int parsed = std::stoi(value, &used);
    if (used == value.size() && parsed >= 0 && parsed <= 65535) return parsed;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(flag + " wants a port from 1 to 65535, or 0 for off, got '" + value +
                              "'");
}

// An IPv4 or IPv6 address literal, as the certificate's iPAddress name takes it.
std::string parse_ip_address(const std::string& flag, const std::string& value) {
  in6_addr parsed{};
  if (inet_pton(AF_INET, value.c_str(), &parsed) != 1 &&
      inet_pton(AF_INET6, value.c_str(), &parsed) != 1) {
    throw std::invalid_argument(flag + " must be an IPv4 or IPv6 address, got '" + value + "'");
  }
  return value;
}

std::string parse_dns_label(const std::string& flag, const std::string& value) {
  const bool valid =
      !value.empty() && value.size() <= 63 &&
      value.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos &&
      value.front() != '-' && value.back() != '-';
  if (!valid) {
    throw std::invalid_argument(
        flag + " wants a DNS label (lowercase letters, digits, '-'), got '" + value + "'");
  }
  return value;
}

std::set<std::string> parse_namespace_list(const std::string& value) {
  const auto items = split_commas(value);
  return {items.begin(), items.end()};
}

bool parse_bool(const std::string& flag, const std::string& value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw std::invalid_argument(flag + " wants true or false, got '" + value + "'");
}

// "namespace/rest": both parts non-empty.
std::pair<std::string, std::string> split_namespace(const std::string& flag,
                                                    const std::string& value, const char* shape) {
  const auto slash = value.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == value.size()) {
    throw std::invalid_argument(flag + " wants " + shape + ", got '" + value + "'");
  }
  return {value.substr(0, slash), value.substr(slash + 1)};
}

// "LABEL=VALUE[,LABEL=VALUE]" (`shape` and `value` for the message), at least one.
std::map<std::string, std::string> parse_labels(const std::string& flag, const std::string& labels,
                                                const char* shape, const std::string& value,
                                                const std::string& scope) {
  std::map<std::string, std::string> parsed;
  for (const auto& pair : split_commas(labels)) {
    const auto eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument(flag + " wants " + shape + ", got '" + value + "'");
    }
    parsed[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  if (parsed.empty()) {
    throw std::invalid_argument(flag + " names no label: every pod of " + scope + " would match");
  }
  return parsed;
}

PodLabels parse_pod_labels(const std::string& flag, const std::string& value) {
  constexpr const char* kShape = "NAMESPACE/LABEL=VALUE[,LABEL=VALUE]";
  const auto [ns, rest] = split_namespace(flag, value, kShape);
  return {ns, parse_labels(flag, rest, kShape, value, ns)};
}

}  // namespace

std::string usage() {
  return R"(usage: perimeter-operator [flags]

Runs Perimeter's controllers: for each AgentEnvironment, claims sessions from the Managed Agents
work queue and runs each in its own runner pod; for each McpTunnel, provisions the hosted tunnel,
its certificates and token, and runs its gateway.

flags (--flag=value or --flag value):
  --kubeconfig PATH                  kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)
  --context NAME                     kubeconfig context (default: the current one)
  --namespace NS                     watch only NS (default: every namespace)
  --session-namespaces LIST          namespaces that opted in to sessions, comma-separated: the
                                     operator reads Secrets and runs pods there only, and any
                                     other namespace's AgentEnvironment gets NamespaceNotEnabled;
                                     "*" for every namespace (default "*")
  --tunnel-namespaces LIST           namespaces where McpTunnels are served, comma-separated; an
                                     McpTunnel elsewhere gets NamespaceNotEnabled; "*" for every
                                     namespace (default "*")
  --tunnels-service-account NS/NAME  the operator's own ServiceAccount, whose short-lived token it
                                     exchanges for a Tunnels API token (workload identity)
  --tunnel-audiences LIST            audiences an McpTunnel may ask the operator's ServiceAccount
                                     token for, comma-separated (default https://api.anthropic.com)
  --cluster-domain DOMAIN            the cluster's DNS domain, for routes to Services
                                     (default cluster.local)
  --runner-egress MODE               how runner pods reach the network: public-addresses (the
                                     API's port on every public address), gateway (only through
                                     the operator's egress gateway, which allows the API and
                                     spec.egress.allowedHosts by name) or cilium (a
                                     CiliumNetworkPolicy with toFQDNs for the same) (default
                                     public-addresses; docs/egress.md)
  --cluster-dns NS/LABELS            in gateway and cilium modes, the only pods runner pods may
                                     send DNS to (default kube-system/k8s-app=kube-dns)
  --egress-gateway-image IMAGE       in gateway mode, the perimeter-egress-gateway image (default:
                                     the build's localhost/perimeter/perimeter-egress-gateway:
                                     <version>)
  --egress-gateway-replicas N        in gateway mode, the gateway's replicas (default 2)
  --egress-gateway-namespace NS      in gateway mode, where the gateway runs (default
                                     $POD_NAMESPACE, else perimeter-system)
  --mcp-guard-image IMAGE            the perimeter-mcp-guard image for McpTunnels whose
                                     spec.guard.image is empty (default: the build's
                                     localhost/perimeter/perimeter-mcp-guard:<version>)
  --warm-assignment-port N           serve warm runner pods their assignments on this port (the
                                     leader does), which is also the port of the Service below;
                                     0: off, and no warm pod can be made (default 0;
                                     docs/warm-pool.md)
  --warm-assignment-service NAME     the Service in $POD_NAMESPACE that selects the operator's pods
                                     on that port; warm pods ask https://NAME.<ns>.svc:PORT
                                     (default perimeter-assignment)
  --warm-assignment-pod-labels LABELS  the operator's pods in $POD_NAMESPACE as that Service
                                     selects them, LABEL=VALUE[,LABEL=VALUE]: a warm pool's runner
                                     pods get one egress, to these on that port (default
                                     app.kubernetes.io/name=perimeter,
                                     app.kubernetes.io/component=operator)
  --warm-assignment-address IP       an address of this host that warm pods reach directly, for
                                     an operator run outside the cluster (make run, the real-node
                                     tests): it listens there, warm pods ask https://IP:PORT, and
                                     the certificate names IP (default: none, the Service)
  --warm-assignment-ca-secret NAME   the Secret in $POD_NAMESPACE that keeps the assignment
                                     service's CA, made at start if absent (default
                                     perimeter-assignment-ca)
  --ca-rotation-overlap-seconds N    how long a replaced tunnel CA stays registered after the
                                     gateway got a certificate of the new one (default 120)
  --tunnel-archive-deadline-seconds N  how long deleting an McpTunnel with deletionPolicy Archive
                                     retries an unreachable API before letting go (default 300)
  --allowed-api-hosts LIST           origins credentials (environment keys, federation tokens)
                                     may be sent to, comma-separated (default
                                     https://api.anthropic.com)
  --metrics-bind-address ADDR        Prometheus metrics at /metrics (default 0.0.0.0:8080)
  --health-probe-bind-address ADDR   /healthz and /readyz (default 0.0.0.0:8081)
  --leader-elect BOOL                campaign for a Lease before claiming work (default true)
  --leader-election-namespace NS     the Lease's namespace (default $POD_NAMESPACE or perimeter-system)
  --leader-election-id NAME          the Lease's name (default perimeter-operator)
  --identity NAME                    this replica's identity (default hostname + random suffix)
  --kube-api-qps N                   Kubernetes API requests per second (default 200)
  --kube-api-burst N                 burst above that rate (default 400)
  --workers N                        reconcile workers (default 4)
  --poll-threads N                   concurrent claims per AgentEnvironment (default 4); an
                                     idle one polls with one thread
  --max-extra-poll-threads N         poll threads beyond each environment's first, over all
                                     environments together (default 64)
  --resync-seconds N                 how often an AgentEnvironment is reconciled with nothing
                                     changed (default 15)
  --orphan-sweep-seconds N           how often runner Secrets left without their pod are looked
                                     for: acknowledged items get their pod (default 60)
  --gate-sweep-seconds N             how often runner pods an earlier version left gated after
                                     their item's ack are released (default 15)
  --log-level LEVEL                  debug, info, warn or error (default info)
)";
}

Options parse_options(const std::vector<std::string>& args, bool* help) {
  Options options;
  *help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "--help" || flag == "-h") {
      *help = true;
      return options;
    }
    const auto take = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= args.size()) throw std::invalid_argument(flag + " needs a value");
      return args[++i];
    };
    if (flag == "--kubeconfig")
      options.kubeconfig = take();
    else if (flag == "--context")
      options.context = take();
    else if (flag == "--namespace")
      options.watch_namespace = take();
    else if (flag == "--session-namespaces") {
      const std::string list = take();
      if (list == "*")
        options.session_namespaces.reset();
      else
        options.session_namespaces = parse_namespace_list(list);
    } else if (flag == "--tunnel-namespaces") {
      const std::string list = take();
      if (list == "*")
        options.tunnel_namespaces.reset();
      else
        options.tunnel_namespaces = parse_namespace_list(list);
    } else if (flag == "--tunnels-service-account")
      options.tunnels_service_account = take();
    else if (flag == "--tunnel-audiences")
      options.tunnel_audiences = take();
    else if (flag == "--cluster-domain")
      options.cluster_domain = take();
    else if (flag == "--runner-egress") {
      options.runner_egress = take();
      if (options.runner_egress != "public-addresses" && options.runner_egress != "gateway" &&
          options.runner_egress != "cilium") {
        throw std::invalid_argument(
            "--runner-egress wants public-addresses, gateway or cilium, got '" +
            options.runner_egress + "'");
      }
    } else if (flag == "--cluster-dns")
      options.cluster_dns = parse_pod_labels(flag, take());
    else if (flag == "--egress-gateway-image")
      options.egress_gateway_image = take();
    else if (flag == "--egress-gateway-replicas")
      options.egress_gateway_replicas = parse_positive(flag, take());
    else if (flag == "--egress-gateway-namespace")
      options.egress_gateway_namespace = take();
    else if (flag == "--mcp-guard-image")
      options.mcp_guard_image = take();
    else if (flag == "--warm-assignment-port")
      options.warm_assignment_port = parse_port_or_zero(flag, take());
    else if (flag == "--warm-assignment-service")
      options.warm_assignment_service = parse_dns_label(flag, take());
    else if (flag == "--warm-assignment-pod-labels") {
      const std::string labels = take();
      options.warm_assignment_pod_labels =
          parse_labels(flag, labels, "LABEL=VALUE[,LABEL=VALUE]", labels, "the namespace");
    } else if (flag == "--warm-assignment-address")
      options.warm_assignment_address = parse_ip_address(flag, take());
    else if (flag == "--warm-assignment-ca-secret")
      options.warm_assignment_ca_secret = take();
    else if (flag == "--ca-rotation-overlap-seconds")
      options.ca_rotation_overlap_seconds = parse_positive(flag, take());
    else if (flag == "--tunnel-archive-deadline-seconds")
      options.tunnel_archive_deadline_seconds = parse_positive(flag, take());
    else if (flag == "--allowed-api-hosts")
      options.allowed_api_hosts = take();
    else if (flag == "--metrics-bind-address")
      options.metrics_bind_address = take();
    else if (flag == "--health-probe-bind-address")
      options.health_bind_address = take();
    else if (flag == "--leader-elect")
      options.leader_elect = parse_bool(flag, take());
    else if (flag == "--leader-election-namespace")
      options.leader_election_namespace = take();
    else if (flag == "--leader-election-id")
      options.leader_election_id = take();
    else if (flag == "--identity")
      options.identity = take();
    else if (flag == "--kube-api-qps")
      options.kube_api_qps = parse_positive_number(flag, take());
    else if (flag == "--kube-api-burst")
      options.kube_api_burst = parse_positive(flag, take());
    else if (flag == "--workers")
      options.workers = parse_positive(flag, take());
    else if (flag == "--poll-threads")
      options.poll_threads = parse_positive(flag, take());
    else if (flag == "--max-extra-poll-threads")
      options.max_extra_poll_threads = parse_positive(flag, take());
    else if (flag == "--resync-seconds")
      options.resync_seconds = parse_positive(flag, take());
    else if (flag == "--orphan-sweep-seconds")
      options.orphan_sweep_seconds = parse_positive(flag, take());
    else if (flag == "--gate-sweep-seconds")
      options.gate_sweep_seconds = parse_positive(flag, take());
    else if (flag == "--log-level") {
      const std::string level = take();
      if (!parse_log_level(level, &options.log_level)) {
        throw std::invalid_argument("--log-level wants debug, info, warn or error, got '" + level +
                                    "'");
      }
    } else {
      throw std::invalid_argument("unknown flag '" + args[i] + "'");
    }
  }
  return options;
}

}  // namespace perimeter::manager
