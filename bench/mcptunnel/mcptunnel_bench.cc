// McpTunnel provisioning by perimeter-operator, run as its own process against a real control
// plane with KWOK nodes, with perimeter-sim as the Tunnels API and the workload identity exchange
// (it verifies the operator's ServiceAccount tokens against this apiserver's issuer keys), set up
// as e2e/mcptunnel does. Three phases, each printed as one JSON line, then a summary:
//   1. single: one McpTunnel created through the API, its create -> Ready time (and create -> first
//      status write, and each step in between as the bench's watches see it: finalizer, tunnel id,
//      gateway Deployment applied, its pod created and Ready, the Deployment ready), median of N
//      runs, each a fresh McpTunnel (deleted, with deletionPolicy Archive, before the next);
//   2. fleet: O organizations x T McpTunnels created at once (the simulator allows 10 active tunnels
//      per organization; one federation rule each, all trusting the operator's ServiceAccount),
//      the time until all are Ready, and the operator's peak RSS (VmHWM, reset at the phase's start
//      through /proc/<pid>/clear_refs) and CPU time (utime+stime) over the phase, when the last
//      McpTunnel reached each step (which says where the time goes: the operator or the cluster),
//      and the operator's requests and reconciles per second;
//   3. idle: the same operator with the fleet in place over S seconds: RSS and CPU, and what it
//      asked of the apiserver and the Tunnels API meanwhile.
// KWOK runs no containers: a gateway pod is Ready when KWOK says so, not when cloudflared holds an
// edge connection. No peer runs here (the line "peer: none runs here" says why). Not a test and no
// timed assertion: run by hand,
// `build/bin/mcptunnel_bench [--runs N] [--organizations N] [--tunnels-per-organization N]
//  [--idle-seconds N] [--replicas N] [--workers N]`.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "bench_cluster.h"
#include "bench_support.h"
#include "cluster/local_cluster.h"
#include "core/log.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/tools.h"
#include "operator/operator_process.h"
#include "process/process.h"
#include "runtime/informer.h"

namespace {

using namespace perimeter;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using bench::env_or;
using bench::percentile;
using bench::process_usage;
using bench::read_file;
using Usage = bench::ProcessUsage;

constexpr const char* kIssuer = "https://kubernetes.default.svc.cluster.local";
constexpr const char* kAudience = "https://api.anthropic.com";
constexpr const char* kOperatorNamespace = "perimeter-system";
constexpr const char* kOperatorAccount = "perimeter-operator";
constexpr const char* kFinalizer = "perimeter.dev/mcptunnel";
constexpr const char* kPeerWhy =
    "Anthropic's mcp-tunnel Helm chart provisions through a setup Job that needs the real Tunnels "
    "API and pulls container images, and this machine reaches neither; no ratio is printed";

kube::ResourceType mcp_tunnels() {
  return {"perimeter.dev", "v1alpha1", "mcptunnels", "McpTunnel", true};
}

// Resets VmHWM to the current RSS (proc(5), clear_refs "5"), so a phase's peak is its own and not
// the process's lifetime high-water mark. False when the kernel refused.
bool reset_peak_rss(pid_t pid) {
  std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

double mib(long kib) { return static_cast<double>(kib) / 1024.0; }

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double ms_between(SteadyClock::time_point from, SteadyClock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

double sample(const std::string& exposition, const std::string& line_prefix) {
  std::istringstream lines(exposition);
  std::string line;
  double sum = 0;
  while (std::getline(lines, line)) {
    if (line.rfind(line_prefix, 0) == 0) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// What the operator's exposition says it did: requests to the apiserver by verb and code, to the
// Tunnels API by operation, the McpTunnel controller's reconciles by result and their time,
// McpTunnel actions.
struct Counters {
  std::map<std::string, double> kube_by_verb_code, agentapi_by_operation, reconciles_by_result,
      actions;
  double reconcile_seconds = 0, reconcile_count = 0;
};

Counters read_counters(const testing::OperatorProcess& process) {
  const std::string exposition = process.metrics();
  Counters c;
  c.kube_by_verb_code =
      bench::sums_by_labels(exposition, "perimeter_kube_requests_total", {"verb", "code"});
  c.agentapi_by_operation =
      bench::sums_by_labels(exposition, "perimeter_agentapi_requests_total", {"operation"});
  // Only the McpTunnel controller's: the AgentEnvironment controller has nothing to do here.
  const std::string mine = "controller=\"mcptunnel\"";
  c.reconciles_by_result =
      bench::sums_by_labels(exposition, "perimeter_controller_reconcile_total", {"result"}, mine);
  c.reconcile_seconds =
      sample(exposition, "perimeter_controller_reconcile_time_seconds_sum{" + mine);
  c.reconcile_count =
      sample(exposition, "perimeter_controller_reconcile_time_seconds_count{" + mine);
  c.actions = bench::sums_by_labels(exposition, "perimeter_mcptunnel_actions_total", {"action"});
  return c;
}

json delta(const std::map<std::string, double>& before, const std::map<std::string, double>& after) {
  json out = json::object();
  for (const auto& [key, value] : after) {
    const auto it = before.find(key);
    const double d = value - (it == before.end() ? 0 : it->second);
    if (d != 0) out[key] = d;
  }
  return out;
}

double total(const json& counts) {
  double sum = 0;
  for (const auto& [key, value] : counts.items()) sum += value.get<double>();
  return sum;
}

json counters_delta(const Counters& before, const Counters& after) {
  const double passes = after.reconcile_count - before.reconcile_count;
  return {
      {"kube_requests", delta(before.kube_by_verb_code, after.kube_by_verb_code)},
      {"agentapi_requests", delta(before.agentapi_by_operation, after.agentapi_by_operation)},
      {"reconciles", delta(before.reconciles_by_result, after.reconciles_by_result)},
      {"reconcile_mean_ms",
       passes > 0 ? 1000.0 * (after.reconcile_seconds - before.reconcile_seconds) / passes : 0.0},
      {"actions", delta(before.actions, after.actions)}};
}

// When each step of one McpTunnel was first seen by the bench's watches.
struct Timeline {
  std::optional<SteadyClock::time_point> created, finalizer, first_status, tunnel_id,
      gateway_created, pod_created, pod_ready, gateway_ready, ready, gone;
};

std::string ready_condition(const json& object) {
  for (const auto& c :
       object.value("status", json::object()).value("conditions", json::array())) {
    if (c.value("type", "") == "Ready") return c.value("status", "") + "/" + c.value("reason", "");
  }
  return "";
}

class Watcher {
 public:
  void on_tunnel(const json& object) {
    const auto now = SteadyClock::now();
    const auto& metadata = object["metadata"];
    const std::string key =
        metadata.value("namespace", "") + "/" + metadata.value("name", "");
    const json finalizers = metadata.value("finalizers", json::array());
    const json status = object.value("status", json::object());
    std::lock_guard lock(mutex_);
    auto& t = timelines_[key];
    last_status_[key] = status;
    if (!t.finalizer && std::find(finalizers.begin(), finalizers.end(), kFinalizer) !=
                            finalizers.end())
      t.finalizer = now;
    if (!t.first_status && !status.empty()) t.first_status = now;
    if (!t.tunnel_id && !status.value("tunnelId", "").empty()) t.tunnel_id = now;
    if (!t.ready && ready_condition(object).rfind("True/", 0) == 0) t.ready = now;
  }
  void on_tunnel_deleted(const json& object) {
    const auto& metadata = object["metadata"];
    std::lock_guard lock(mutex_);
    timelines_[metadata.value("namespace", "") + "/" + metadata.value("name", "")].gone =
        SteadyClock::now();
  }
  void on_deployment(const json& object) {
    const auto now = SteadyClock::now();
    const auto& metadata = object["metadata"];
    const std::string owner =
        metadata.value("labels", json::object()).value("perimeter.dev/mcptunnel", "");
    if (owner.empty()) return;
    const int ready = object.value("status", json::object()).value("readyReplicas", 0);
    std::lock_guard lock(mutex_);
    auto& t = timelines_[metadata.value("namespace", "") + "/" + owner];
    if (!t.gateway_created) t.gateway_created = now;
    if (!t.gateway_ready && ready > 0) t.gateway_ready = now;
  }
  void on_pod(const json& object) {
    const auto now = SteadyClock::now();
    const auto& metadata = object["metadata"];
    const std::string owner =
        metadata.value("labels", json::object()).value("perimeter.dev/mcptunnel", "");
    if (owner.empty()) return;
    bool ready = false;
    for (const auto& c :
         object.value("status", json::object()).value("conditions", json::array())) {
      ready = ready || (c.value("type", "") == "Ready" && c.value("status", "") == "True");
    }
    std::lock_guard lock(mutex_);
    auto& t = timelines_[metadata.value("namespace", "") + "/" + owner];
    if (!t.pod_created) t.pod_created = now;
    if (!t.pod_ready && ready) t.pod_ready = now;
  }
  void created(const std::string& key, SteadyClock::time_point at) {
    std::lock_guard lock(mutex_);
    timelines_[key].created = at;
  }
  Timeline timeline(const std::string& key) {
    std::lock_guard lock(mutex_);
    return timelines_[key];
  }
  json last_status(const std::string& key) {
    std::lock_guard lock(mutex_);
    return last_status_[key];
  }

 private:
  std::mutex mutex_;
  std::map<std::string, Timeline> timelines_;
  std::map<std::string, json> last_status_;
};

// Polls `done` every 10 ms until it holds or `limit` passes (a bound so a broken run ends, not a
// measurement).
template <typename Pred>
bool wait_until(Pred done, std::chrono::seconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  while (SteadyClock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

struct Tenant {
  std::string ns, organization, rule;
};

int parse_flags(int argc, char** argv, std::map<std::string, int>& flags) {
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    const bool known = flag.rfind("--", 0) == 0 && flags.contains(flag.substr(2));
    int value = 0;
    try {
      value = known && i + 1 < argc ? std::stoi(argv[i + 1]) : 0;
    } catch (const std::logic_error&) {
      value = 0;
    }
    if (value <= 0) {
      std::cerr << "usage: mcptunnel_bench [--runs N] [--organizations N] "
                   "[--tunnels-per-organization N (at most 10)] [--idle-seconds N] "
                   "[--replicas N] [--workers N], N > 0\n";
      return flag == "--help" ? 0 : 2;
    }
    flags[flag.substr(2)] = value;
  }
  if (flags["tunnels-per-organization"] > 10) {
    std::cerr << "the simulator allows 10 active tunnels per organization\n";
    return 2;
  }
  return -1;
}

// The steps of one McpTunnel in the order they happen, and who takes it there: the operator
// (finalizer, first status write = the tunnel id recorded, the gateway Deployment applied), the
// cluster (kube-controller-manager's Deployment and ReplicaSet controllers make the pod, the
// scheduler and KWOK make it Ready, the Deployment controller counts it), the operator again
// (Ready).
using Step = std::optional<SteadyClock::time_point> Timeline::*;
const std::vector<std::pair<const char*, Step>>& steps() {
  static const std::vector<std::pair<const char*, Step>> all = {
      {"finalizer", &Timeline::finalizer},
      {"first_status", &Timeline::first_status},
      {"tunnel_id", &Timeline::tunnel_id},
      {"gateway_created", &Timeline::gateway_created},
      {"pod_created", &Timeline::pod_created},
      {"pod_ready", &Timeline::pod_ready},
      {"gateway_ready", &Timeline::gateway_ready},
      {"ready", &Timeline::ready}};
  return all;
}

// ms from creation to each step, by step; a step not seen is left out.
std::map<std::string, std::vector<double>> step_times(const std::vector<Timeline>& timelines) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& t : timelines) {
    for (const auto& [name, step] : steps()) {
      if (t.created && t.*step) out[name].push_back(ms_between(*t.created, *(t.*step)));
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // workers 0: the operator's default (not passed; 4).
  std::map<std::string, int> flags = {{"runs", 5},         {"organizations", 10},
                                      {"tunnels-per-organization", 10},
                                      {"idle-seconds", 30}, {"replicas", 1},
                                      {"workers", 0}};
  if (const int exit_code = parse_flags(argc, argv, flags); exit_code >= 0) return exit_code;
  const int runs = flags["runs"];
  const int organizations = flags["organizations"];
  const int per_organization = flags["tunnels-per-organization"];
  const int fleet_size = organizations * per_organization;
  const int idle_seconds = flags["idle-seconds"];
  const int replicas = flags["replicas"];
  const std::string source = env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // NOLINT(concurrency-mt-unsafe): no threads yet

  // The controller manager turns Deployments into ReplicaSets and Pods, and collects garbage.
  auto cluster = bench::start_bench_cluster(source);
  if (!cluster) return 1;
  const std::string kubectl = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
                              " --kubeconfig " + cluster->kubeconfig_path();
  const auto run_ok = [](const std::string& command) {
    const auto result = process::run_shell(command);
    if (result.exit_code != 0) {
      throw std::runtime_error("failed: " + command + "\n" + result.output);
    }
    return result.output;
  };
  // The operator's identity, as the chart creates it; its tokens are what the federation rules
  // trust. The issuer's discovery document and keys are public, as for any OIDC provider.
  run_ok(kubectl + " create namespace " + kOperatorNamespace + " >/dev/null");
  run_ok(kubectl + " -n " + kOperatorNamespace + " create serviceaccount " + kOperatorAccount +
         " >/dev/null");
  run_ok(kubectl +
         " create clusterrolebinding mcptunnel-bench-oidc-discovery "
         "--clusterrole=system:service-account-issuer-discovery "
         "--group=system:unauthenticated >/dev/null");
  testing::SimProcess sim({"--oidc-issuer-url", cluster->apiserver_url(), "--oidc-issuer", kIssuer,
                           "--oidc-ca-file", cluster->ca_file()});

  auto config = kube::Config::from_kubeconfig_file(cluster->kubeconfig_path());
  config.qps = 0;
  kube::HttpTransport transport(config);
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics(registry);
  runtime::RuntimeMetrics runtime_metrics(registry);
  kube::ResourceClient namespaces(transport, kube::resources::namespaces(), client_metrics);
  kube::ResourceClient deployments(transport, kube::resources::deployments(), client_metrics);
  kube::ResourceClient pods(transport, kube::resources::pods(), client_metrics);
  kube::ResourceClient tunnels(transport, mcp_tunnels(), client_metrics);

  // One namespace, organization and federation rule per tenant: tenant 0 for the single runs,
  // 1..O for the fleet.
  const auto make_tenant = [&](const std::string& name) {
    Tenant tenant;
    tenant.ns = name;
    namespaces.create("", {{"apiVersion", "v1"},
                           {"kind", "Namespace"},
                           {"metadata",
                            {{"name", name},
                             {"labels", {{"pod-security.kubernetes.io/enforce", "restricted"}}}}}});
    const auto organization = testing::http_call(sim.url(), "POST", "/admin/organizations",
                                                 json({{"name", name}}).dump());
    if (organization.status != 201) throw std::runtime_error(organization.body);
    tenant.organization = organization.json()["id"];
    const auto rule = testing::http_call(
        sim.url(), "POST", "/admin/federation_rules",
        json({{"issuer", kIssuer},
              {"audience", kAudience},
              {"subjects", {std::string("system:serviceaccount:") + kOperatorNamespace + ":" +
                            kOperatorAccount}},
              {"organization_id", tenant.organization},
              {"service_account_id", "svac_perimeter"}})
            .dump());
    if (rule.status != 201) throw std::runtime_error(rule.body);
    tenant.rule = rule.json()["id"];
    return tenant;
  };
  const Tenant single_tenant = make_tenant("mcpt-single");
  std::vector<Tenant> fleet_tenants;
  for (int i = 0; i < organizations; ++i) {
    fleet_tenants.push_back(make_tenant("mcpt-fleet-" + std::to_string(i)));
  }
  const auto tunnel_object = [&](const Tenant& tenant, const std::string& name,
                                 const std::string& deletion_policy) {
    return json{
        {"apiVersion", "perimeter.dev/v1alpha1"},
        {"kind", "McpTunnel"},
        {"metadata", {{"name", name}, {"namespace", tenant.ns}}},
        {"spec",
         {{"tunnel", {{"create", json::object()}}},
          {"credentials",
           {{"mode", "WorkloadIdentity"},
            {"apiBaseUrl", sim.url()},
            {"workloadIdentity",
             {{"federationRuleId", tenant.rule},
              {"organizationId", tenant.organization},
              {"serviceAccountId", "svac_perimeter"}}}}},
          {"routes", json::array({{{"name", "docs"}, {"url", "http://10.0.0.5:8080"}}})},
          {"deletionPolicy", deletion_policy},
          {"gateway", {{"replicas", replicas}}}}}};
  };

  // The bench's own watches, in every namespace: McpTunnels, and the gateway Deployments and
  // pods (labelled with their McpTunnel's name).
  Watcher watcher;
  const Logger logger("bench", StderrSink::instance(), LogLevel::kWarn);
  runtime::Informer tunnel_informer(tunnels, {}, runtime_metrics, logger);
  tunnel_informer.add_handlers(
      {.on_add = [&](const runtime::ObjectPtr& o) { watcher.on_tunnel(*o); },
       .on_update = [&](const runtime::ObjectPtr&,
                        const runtime::ObjectPtr& o) { watcher.on_tunnel(*o); },
       .on_delete = [&](const runtime::ObjectPtr& o) { watcher.on_tunnel_deleted(*o); }});
  runtime::InformerOptions gateway_options;
  gateway_options.label_selector = "app.kubernetes.io/name=mcp-tunnel-gateway";
  runtime::Informer deployment_informer(deployments, gateway_options, runtime_metrics, logger);
  deployment_informer.add_handlers(
      {.on_add = [&](const runtime::ObjectPtr& o) { watcher.on_deployment(*o); },
       .on_update = [&](const runtime::ObjectPtr&,
                        const runtime::ObjectPtr& o) { watcher.on_deployment(*o); },
       .on_delete = {}});
  runtime::Informer pod_informer(pods, gateway_options, runtime_metrics, logger);
  pod_informer.add_handlers(
      {.on_add = [&](const runtime::ObjectPtr& o) { watcher.on_pod(*o); },
       .on_update = [&](const runtime::ObjectPtr&,
                        const runtime::ObjectPtr& o) { watcher.on_pod(*o); },
       .on_delete = {}});
  for (auto* informer : {&tunnel_informer, &deployment_informer, &pod_informer}) {
    informer->start();
    informer->wait_for_sync(std::chrono::seconds(30));
  }

  std::vector<std::string> operator_args = {
      "--allowed-api-hosts", sim.url(), "--tunnels-service-account",
      std::string(kOperatorNamespace) + "/" + kOperatorAccount, "--log-level", "warn"};
  if (flags["workers"] > 0) {
    operator_args.insert(operator_args.end(), {"--workers", std::to_string(flags["workers"])});
  }
  const std::string operator_log = cluster->dir() + "/operator-mcptunnel-bench.log";
  testing::OperatorProcess operator_process({.binary = bin + "/perimeter-operator",
                                             .kubeconfig = cluster->kubeconfig_path(),
                                             .log_path = operator_log,
                                             .extra_args = operator_args});
  const pid_t operator_pid = operator_process.pid();
  const auto fail = [&](const std::string& why) {
    const std::string log = read_file(operator_log);
    std::cerr << why << "\n---- operator log (tail) ----\n"
              << (log.size() > 20000 ? log.substr(log.size() - 20000) : log) << "\n";
    return 1;
  };
  // Started when its metrics answer; then a moment for its informers to sync on the empty cluster,
  // so the figures are provisioning, not start-up.
  if (!wait_until(
          [&] {
            try {
              return !operator_process.metrics().empty();
            } catch (const std::exception&) {
              return false;
            }
          },
          std::chrono::seconds(30))) {
    return fail("the operator's metrics endpoint never answered");
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));

  // ---- 1. one McpTunnel, create -> Ready, N times -------------------------------------------
  std::cerr << "single: " << runs << " runs of one McpTunnel...\n";
  std::vector<Timeline> single_timelines;
  json single_runs = json::array();
  const Counters single_before = read_counters(operator_process);
  for (int run = 0; run < runs; ++run) {
    const std::string name = "single-" + std::to_string(run);
    const std::string key = single_tenant.ns + "/" + name;
    watcher.created(key, SteadyClock::now());
    tunnels.create(single_tenant.ns, tunnel_object(single_tenant, name, "Archive"));
    if (!wait_until([&] { return watcher.timeline(key).ready.has_value(); },
                    std::chrono::seconds(120))) {
      return fail(key + " not Ready after 120 s; last status: " + watcher.last_status(key).dump());
    }
    const Timeline t = watcher.timeline(key);
    single_timelines.push_back(t);
    json run_ms = json::object();
    for (const auto& [step, times] : step_times({t})) run_ms[step + "_ms"] = times.front();
    single_runs.push_back(run_ms);
    // Fresh for the next run: the McpTunnel goes (its tunnel archived, so the organization's
    // active count stays at zero) and so does its gateway Deployment.
    tunnels.remove(single_tenant.ns, name);
    if (!wait_until(
            [&] {
              return watcher.timeline(key).gone.has_value() &&
                     !deployment_informer.store().get(single_tenant.ns + "/" + name + "-gateway");
            },
            std::chrono::seconds(120))) {
      return fail(key + " or its gateway Deployment still there 120 s after its deletion");
    }
  }
  const Counters single_after = read_counters(operator_process);
  json single_medians = json::object();
  for (const auto& [step, times] : step_times(single_timelines)) {
    single_medians["create_to_" + step + "_ms"] = median(times);
  }
  const double single_ready_ms = single_medians.value("create_to_ready_ms", 0.0);
  const double single_first_status_ms = single_medians.value("create_to_first_status_ms", 0.0);
  const json single = {
      {"bench", "mcptunnel_single"},
      {"runs", runs},
      {"created_through", "the Kubernetes API (one create call; no kubectl process)"},
      {"gateway_replicas", replicas},
      {"create_to_ready_median_ms", single_ready_ms},
      {"create_to_first_status_median_ms", single_first_status_ms},
      {"median_ms_by_step", single_medians},
      {"runs_ms", single_runs},
      {"operator", counters_delta(single_before, single_after)}};
  std::cout << single.dump() << std::endl;

  // ---- 2. the fleet, created at once ---------------------------------------------------------
  std::cerr << "fleet: " << fleet_size << " McpTunnels in " << organizations
            << " organizations...\n";
  const bool peak_reset = reset_peak_rss(operator_pid);
  const Usage fleet_start = process_usage(operator_pid);
  const Counters fleet_before = read_counters(operator_process);
  std::vector<std::string> fleet_keys;
  const auto fleet_t0 = SteadyClock::now();
  for (int i = 0; i < per_organization; ++i) {
    // Round robin over organizations, so every organization is in play from the first creates.
    for (const auto& tenant : fleet_tenants) {
      const std::string name = "tunnel-" + std::to_string(i);
      const std::string key = tenant.ns + "/" + name;
      watcher.created(key, SteadyClock::now());
      tunnels.create(tenant.ns, tunnel_object(tenant, name, "Retain"));
      fleet_keys.push_back(key);
    }
  }
  const auto fleet_created = SteadyClock::now();
  // While waiting: RSS sampled (to set beside the kernel's peak), and the operator's apiserver
  // requests and reconciles per second (its client-side limit is 200 requests/s, burst 400).
  long sampled_peak_kib = fleet_start.rss_kib;
  int ready_count = 0;
  json per_second = json::array();
  Counters last_sample = fleet_before;
  auto next_sample = fleet_t0 + std::chrono::seconds(1);
  const bool fleet_ready = wait_until(
      [&] {
        sampled_peak_kib = std::max(sampled_peak_kib, process_usage(operator_pid).rss_kib);
        if (SteadyClock::now() >= next_sample) {
          next_sample += std::chrono::seconds(1);
          const Counters now = read_counters(operator_process);
          const json d = counters_delta(last_sample, now);
          per_second.push_back({{"kube", total(d["kube_requests"])},
                                {"api", total(d["agentapi_requests"])},
                                {"reconciles", total(d["reconciles"])}});
          last_sample = now;
        }
        ready_count = 0;
        for (const auto& key : fleet_keys) ready_count += watcher.timeline(key).ready ? 1 : 0;
        return ready_count == fleet_size;
      },
      std::chrono::seconds(600));
  const auto fleet_end = SteadyClock::now();
  const Usage fleet_usage = process_usage(operator_pid);
  const Counters fleet_after = read_counters(operator_process);
  if (!fleet_ready) {
    std::string waiting;
    for (const auto& key : fleet_keys) {
      if (!watcher.timeline(key).ready) {
        waiting = key + ": " + watcher.last_status(key).dump();
        break;
      }
    }
    return fail(std::to_string(ready_count) + " of " + std::to_string(fleet_size) +
                " Ready after 600 s; e.g. " + waiting);
  }
  std::vector<Timeline> fleet_timelines;
  for (const auto& key : fleet_keys) fleet_timelines.push_back(watcher.timeline(key));
  // Per step: p50 and p99 of create -> step, and when the last McpTunnel got there (s after the
  // first create): the last is where the fleet's time goes.
  json fleet_steps = json::object();
  for (const auto& [step, times] : step_times(fleet_timelines)) {
    SteadyClock::time_point last = fleet_t0;
    for (const auto& t : fleet_timelines) {
      for (const auto& [name, member] : steps()) {
        if (name == step && t.*member) last = std::max(last, *(t.*member));
      }
    }
    fleet_steps[step] = {{"count", times.size()},
                         {"p50_ms", percentile(times, 0.50)},
                         {"p99_ms", percentile(times, 0.99)},
                         {"all_by_s", std::chrono::duration<double>(last - fleet_t0).count()}};
  }
  // The operator's own wait at the end: from the Deployment counting a ready pod to Ready.
  std::vector<double> ready_after_gateway;
  for (const auto& t : fleet_timelines) {
    if (t.gateway_ready && t.ready) ready_after_gateway.push_back(ms_between(*t.gateway_ready, *t.ready));
  }
  // The simulator's side: one active tunnel per McpTunnel, never two.
  int active_tunnels = 0;
  for (const auto& tenant : fleet_tenants) {
    const json all = testing::http_call(sim.url(), "GET",
                                        "/admin/tunnels?organization_id=" + tenant.organization)
                         .json();
    for (const auto& t : all.is_array() ? all : all.value("data", json::array())) {
      const json inner = t.contains("tunnel") ? t["tunnel"] : t;
      if (inner.value("archived_at", json(nullptr)).is_null()) ++active_tunnels;
    }
  }
  const double all_ready_s = std::chrono::duration<double>(fleet_end - fleet_t0).count();
  const double create_s = std::chrono::duration<double>(fleet_created - fleet_t0).count();
  const json fleet_ops = counters_delta(fleet_before, fleet_after);
  const double fleet_cpu = fleet_usage.cpu_seconds - fleet_start.cpu_seconds;
  double peak_kube_per_second = 0;
  for (const auto& s : per_second) peak_kube_per_second = std::max(peak_kube_per_second, s["kube"].get<double>());
  const json fleet = {
      {"bench", "mcptunnel_fleet"},
      {"mcptunnels", fleet_size},
      {"organizations", organizations},
      {"gateway_replicas", replicas},
      {"operator_workers", flags["workers"] > 0 ? json(flags["workers"]) : json("default (4)")},
      // Not passed: perimeter-operator's parser refuses the --kube-api-qps its usage documents.
      {"operator_kube_api_qps", "default (200, burst 400)"},
      {"create_calls_seconds", create_s},
      {"all_ready_seconds", all_ready_s},
      {"create_to_ready_p50_ms", fleet_steps["ready"]["p50_ms"]},
      {"create_to_ready_p99_ms", fleet_steps["ready"]["p99_ms"]},
      {"create_to_first_status_p50_ms", fleet_steps["first_status"]["p50_ms"]},
      {"create_to_first_status_p99_ms", fleet_steps["first_status"]["p99_ms"]},
      {"gateway_ready_to_ready_p50_ms", percentile(ready_after_gateway, 0.50)},
      {"gateway_ready_to_ready_p99_ms", percentile(ready_after_gateway, 0.99)},
      {"steps", fleet_steps},
      {"operator_rss_at_start_mib", mib(fleet_start.rss_kib)},
      {"operator_peak_rss_mib", mib(fleet_usage.hwm_kib)},
      {"operator_peak_rss_scope", peak_reset ? "phase (VmHWM reset at its start)"
                                             : "process lifetime (clear_refs refused)"},
      {"operator_sampled_peak_rss_mib", mib(sampled_peak_kib)},
      {"operator_rss_at_end_mib", mib(fleet_usage.rss_kib)},
      {"operator_cpu_seconds", fleet_cpu},
      {"operator_cpu_ms_per_mcptunnel", 1000.0 * fleet_cpu / fleet_size},
      {"operator_peak_kube_requests_per_second", peak_kube_per_second},
      {"operator_per_second", per_second},
      {"sim_active_tunnels", active_tunnels},
      {"operator", fleet_ops}};
  std::cout << fleet.dump() << std::endl;

  // ---- 3. idle, the fleet in place -----------------------------------------------------------
  std::cerr << "idle: " << idle_seconds << " s with " << fleet_size << " McpTunnels...\n";
  const bool idle_peak_reset = reset_peak_rss(operator_pid);
  const Usage idle_start = process_usage(operator_pid);
  const Counters idle_before = read_counters(operator_process);
  std::this_thread::sleep_for(std::chrono::seconds(idle_seconds));
  const Usage idle_end = process_usage(operator_pid);
  const Counters idle_after = read_counters(operator_process);
  const json idle_ops = counters_delta(idle_before, idle_after);
  const double idle_cpu = idle_end.cpu_seconds - idle_start.cpu_seconds;
  const json idle = {
      {"bench", "mcptunnel_idle"},
      {"mcptunnels", fleet_size},
      {"seconds", idle_seconds},
      // The reconciler's resync (ReconcilerOptions::resync, 5 min) from each McpTunnel's last
      // pass: a window shorter than that right after the fleet went Ready sees none;
      // --idle-seconds 330 sees one for every McpTunnel.
      {"resync_period_seconds", 300},
      {"operator_rss_mib", mib(idle_end.rss_kib)},
      {"operator_peak_rss_mib", mib(idle_end.hwm_kib)},
      {"operator_peak_rss_scope", idle_peak_reset ? "phase (VmHWM reset at its start)"
                                                  : "process lifetime (clear_refs refused)"},
      {"operator_cpu_seconds", idle_cpu},
      {"operator_cpu_percent", 100.0 * idle_cpu / idle_seconds},
      {"operator", idle_ops}};
  std::cout << idle.dump() << std::endl;
  std::cout << json({{"bench", "mcptunnel_peer"}, {"peer", nullptr}, {"why", kPeerWhy}}).dump()
            << std::endl;

  const auto step_line = [&](const char* step) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f s",
                  fleet_steps.value(step, json::object()).value("all_by_s", 0.0));
    return std::string(text);
  };
  std::printf(
      "\nMcpTunnel provisioning (perimeter-sim as the Tunnels API; KWOK nodes, where a gateway pod\n"
      "is Ready when KWOK says so; gateway replicas %d):\n"
      "  one McpTunnel, median of %d runs  create -> Ready %.0f ms, -> first status write %.0f ms\n"
      "                                    (finalizer %.0f, tunnelId %.0f, Deployment applied %.0f, "
      "pod %.0f, pod Ready %.0f, Deployment ready %.0f ms)\n",
      replicas, runs, single_ready_ms, single_first_status_ms,
      single_medians.value("create_to_finalizer_ms", 0.0),
      single_medians.value("create_to_tunnel_id_ms", 0.0),
      single_medians.value("create_to_gateway_created_ms", 0.0),
      single_medians.value("create_to_pod_created_ms", 0.0),
      single_medians.value("create_to_pod_ready_ms", 0.0),
      single_medians.value("create_to_gateway_ready_ms", 0.0));
  std::printf(
      "  %d McpTunnels at once (%d orgs)  creates took %.2f s; all Ready after %.2f s; create -> "
      "Ready p50 %.0f ms, p99 %.0f ms\n"
      "                                    the last one's first status %s, Deployment applied "
      "%s, pod created %s, pod Ready %s, Deployment ready %s\n"
      "                                    operator: peak RSS %.1f MiB (%.1f at the start), CPU "
      "%.2f s (%.1f ms per McpTunnel), %.0f reconciles (mean %.1f ms)\n"
      "                                    apiserver requests %.0f (peak %.0f/s), Tunnels API "
      "requests %.0f; %d active tunnels in the simulator\n",
      fleet_size, organizations, create_s, all_ready_s,
      fleet_steps["ready"]["p50_ms"].get<double>(), fleet_steps["ready"]["p99_ms"].get<double>(),
      step_line("first_status").c_str(), step_line("gateway_created").c_str(),
      step_line("pod_created").c_str(), step_line("pod_ready").c_str(),
      step_line("gateway_ready").c_str(), mib(fleet_usage.hwm_kib), mib(fleet_start.rss_kib),
      fleet_cpu, 1000.0 * fleet_cpu / fleet_size, total(fleet_ops["reconciles"]),
      fleet_ops["reconcile_mean_ms"].get<double>(), total(fleet_ops["kube_requests"]),
      peak_kube_per_second, total(fleet_ops["agentapi_requests"]), active_tunnels);
  std::printf(
      "  idle %d s with %d McpTunnels     RSS %.1f MiB (peak %.1f), CPU %.2f s (%.2f%%); "
      "%.0f reconciles, %.0f apiserver requests, %.0f Tunnels API requests\n",
      idle_seconds, fleet_size, mib(idle_end.rss_kib), mib(idle_end.hwm_kib), idle_cpu,
      100.0 * idle_cpu / idle_seconds, total(idle_ops["reconciles"]),
      total(idle_ops["kube_requests"]), total(idle_ops["agentapi_requests"]));
  std::printf("  peer: none runs here (%s)\n", kPeerWhy);
  for (auto* informer : {&tunnel_informer, &deployment_informer, &pod_informer}) informer->stop();
  return 0;
}
