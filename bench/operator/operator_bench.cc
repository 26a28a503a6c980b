// Claim throughput of perimeter-operator: N sessions enqueued at once on perimeter-sim, a real
// control plane with KWOK nodes, the operator as its own process. Prints claims/s, enqueue-to-pod
// and enqueue-to-release latencies (p50, p99, as seen by a watch; a pod is released when its
// item is acknowledged and the operator removes its scheduling gate, which ends a claim), and the
// operator's peak RSS and CPU time, as JSON lines and a summary. Not a test: run by hand,
// `build/bin/operator_bench [--sessions N] [--poll-threads N]`.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "core/log.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "localcluster/tools.h"
#include "operator/exposition.h"
#include "operator/operator_process.h"
#include "process/process.h"
#include "runtime/informer.h"

namespace {

using namespace perimeter;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

std::string env_or(const char* name, const std::string& fallback) {
  // Read on the main thread before any other thread starts.
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
  return value != nullptr ? value : fallback;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// VmHWM (peak RSS) in KiB and utime+stime in seconds, from /proc.
std::pair<long, double> process_usage(pid_t pid) {
  long hwm_kib = 0;
  std::istringstream status(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) hwm_kib = std::stol(line.substr(6));
  }
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stol(field);
  }
  return {hwm_kib, static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK))};
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index =
      std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())));
  return values[index];
}

}  // namespace

int main(int argc, char** argv) {
  int sessions = 1000;
  std::string poll_threads = "4";
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    const bool known = flag == "--sessions" || flag == "--poll-threads";
    int value = 0;
    try {
      value = known && i + 1 < argc ? std::stoi(argv[i + 1]) : 0;
    } catch (const std::logic_error&) {
      value = 0;
    }
    if (value <= 0) {
      std::cerr << "usage: operator_bench [--sessions N] [--poll-threads N], N > 0\n";
      return flag == "--help" ? 0 : 2;
    }
    if (flag == "--sessions") sessions = value;
    if (flag == "--poll-threads") poll_threads = std::to_string(value);
  }
  const std::string source = env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // NOLINT(concurrency-mt-unsafe): no threads yet

  testing::LocalClusterOptions options;
  options.controller_manager = true;
  options.scheduler = true;
  options.kwok_nodes = 10;
  std::cerr << "starting the control plane...\n";
  auto cluster = testing::LocalCluster::start(options);
  const std::string kubectl = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
                              " --kubeconfig " + cluster->kubeconfig_path();
  if (std::system(  // NOLINT(concurrency-mt-unsafe): one set-up step, before the informer
          (kubectl + " apply -f " + source + "/crds/ >/dev/null && " + kubectl +
           " wait --for condition=established crd/agentenvironments.perimeter.dev >/dev/null")
              .c_str()) != 0) {
    std::cerr << "could not install the CRD\n";
    return 1;
  }
  testing::SimProcess sim({"--lease-ttl-seconds", "3600"});
  const auto environment =
      testing::http_call(sim.url(), "POST", "/admin/environments", json{{"name", "bench"}}.dump())
          .json();

  auto config = kube::Config::from_kubeconfig_file(cluster->kubeconfig_path());
  config.qps = 0;
  kube::HttpTransport transport(config);
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics(registry);
  runtime::RuntimeMetrics runtime_metrics(registry);
  kube::ResourceClient namespaces(transport, kube::resources::namespaces(), client_metrics);
  kube::ResourceClient secrets(transport, kube::resources::secrets(), client_metrics);
  kube::ResourceClient pods(transport, kube::resources::pods(), client_metrics);
  kube::ResourceClient environments(
      transport, {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true},
      client_metrics);
  namespaces.create(
      "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "bench"}}}});
  secrets.create(
      "bench",
      {{"apiVersion", "v1"},
       {"kind", "Secret"},
       {"metadata", {{"name", "key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
       {"stringData", {{"environment-key", environment["key"]}}}});
  environments.create("bench", {{"apiVersion", "perimeter.dev/v1alpha1"},
                                {"kind", "AgentEnvironment"},
                                {"metadata", {{"name", "bench"}}},
                                {"spec",
                                 {{"environmentId", environment["id"]},
                                  {"environmentKeySecretRef", {{"name", "key"}}},
                                  {"apiBaseUrl", sim.url()},
                                  {"maxConcurrentSessions", sessions},
                                  {"runner", {{"image", "perimeter-runner:bench"}}}}}});

  // When each pod was first seen, and first seen without Perimeter's scheduling gate, by work id.
  std::mutex mutex;
  std::map<std::string, SteadyClock::time_point> pod_seen;
  std::map<std::string, SteadyClock::time_point> pod_released;
  const auto record = [&](const runtime::ObjectPtr& pod) {
    const auto now = SteadyClock::now();
    const std::string work_id =
        (*pod)["metadata"]["annotations"].value("perimeter.dev/work-id", "");
    bool gated = false;
    if (const auto spec = pod->find("spec");
        spec != pod->end() && spec->contains("schedulingGates")) {
      for (const auto& gate : (*spec)["schedulingGates"])
        gated = gated || gate.value("name", "") == "perimeter.dev/acknowledged";
    }
    std::lock_guard lock(mutex);
    pod_seen.emplace(work_id, now);
    if (!gated) pod_released.emplace(work_id, now);
  };
  runtime::InformerOptions informer_options;
  informer_options.ns = "bench";
  runtime::Informer informer(pods, informer_options, runtime_metrics,
                             Logger("bench", StderrSink::instance(), LogLevel::kWarn));
  runtime::EventHandlers handlers;
  handlers.on_add = record;
  handlers.on_update = [&](const runtime::ObjectPtr& /*old_pod*/, const runtime::ObjectPtr& pod) {
    record(pod);
  };
  informer.add_handlers(handlers);
  informer.start();
  informer.wait_for_sync(std::chrono::seconds(30));

  testing::OperatorProcess operator_process(
      {.binary = bin + "/perimeter-operator",
       .kubeconfig = cluster->kubeconfig_path(),
       .log_path = cluster->dir() + "/operator-bench.log",
       .extra_args = {"--poll-threads", poll_threads, "--log-level", "warn", "--allowed-api-hosts",
                      sim.url()}});
  // Let the operator start its poller on the empty queue, so the figures are claims, not start-up.
  std::this_thread::sleep_for(std::chrono::seconds(3));

  const std::string scenario = read_file(source + "/sim/scenarios/conformance/builtin-tools.yaml");
  std::map<std::string, SteadyClock::time_point> enqueued;
  std::cerr << "enqueueing " << sessions << " sessions...\n";
  const auto start = SteadyClock::now();
  for (int i = 0; i < sessions; ++i) {
    const auto reply = testing::http_call(
        sim.url(), "POST",
        "/admin/environments/" + environment["id"].get<std::string>() + "/sessions",
        json{{"scenario_yaml", scenario}}.dump());
    enqueued[reply.json()["work_id"]] = SteadyClock::now();
  }
  const auto enqueue_done = SteadyClock::now();
  const auto deadline = SteadyClock::now() + std::chrono::minutes(10);
  for (;;) {
    {
      std::lock_guard lock(mutex);
      if (pod_released.size() >= static_cast<size_t>(sessions)) break;
    }
    if (SteadyClock::now() > deadline) {
      std::lock_guard lock(mutex);
      std::cerr << "timed out: " << pod_seen.size() << " pods seen, " << pod_released.size()
                << " released, of " << sessions << " sessions\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto [rss_kib, cpu_seconds] = process_usage(operator_process.pid());
  const std::string exposition = operator_process.metrics();
  // What the operator asked of the apiserver and the queue, and how often it reconciled: the
  // work behind its CPU time.
  const json kube_requests =
      testing::metric_sums_by_label(exposition, "perimeter_kube_requests_total", "verb");
  const json kube_codes =
      testing::metric_sums_by_label(exposition, "perimeter_kube_requests_total", "code");
  const json agentapi_requests =
      testing::metric_sums_by_label(exposition, "perimeter_agentapi_requests_total", "operation");
  const json reconciles = testing::metric_sums_by_label(
      exposition, "perimeter_controller_reconcile_total", "controller");

  std::vector<double> to_pod_ms;
  std::vector<double> to_release_ms;
  SteadyClock::time_point last_pod = start;
  SteadyClock::time_point last_release = start;
  {
    std::lock_guard lock(mutex);
    for (const auto& [work_id, at] : enqueued) {
      const auto seen = pod_seen.at(work_id);
      const auto released = pod_released.at(work_id);
      to_pod_ms.push_back(std::chrono::duration<double, std::milli>(seen - at).count());
      to_release_ms.push_back(std::chrono::duration<double, std::milli>(released - at).count());
      last_pod = std::max(last_pod, seen);
      last_release = std::max(last_release, released);
    }
  }
  const double all_pods_s = std::chrono::duration<double>(last_pod - start).count();
  const double all_released_s = std::chrono::duration<double>(last_release - start).count();
  const double enqueue_s = std::chrono::duration<double>(enqueue_done - start).count();
  const json figures = {{"bench", "operator_claims"},
                        {"sessions", sessions},
                        {"poll_threads", std::stoi(poll_threads)},
                        {"enqueue_seconds", enqueue_s},
                        {"all_pods_seconds", all_pods_s},
                        {"all_released_seconds", all_released_s},
                        {"claims_per_second", sessions / all_released_s},
                        {"enqueue_to_pod_p50_ms", percentile(to_pod_ms, 0.50)},
                        {"enqueue_to_pod_p99_ms", percentile(to_pod_ms, 0.99)},
                        {"enqueue_to_release_p50_ms", percentile(to_release_ms, 0.50)},
                        {"enqueue_to_release_p99_ms", percentile(to_release_ms, 0.99)},
                        {"operator_peak_rss_mib", static_cast<double>(rss_kib) / 1024.0},
                        {"operator_cpu_seconds", cpu_seconds},
                        {"operator_kube_requests", kube_requests},
                        {"operator_kube_request_codes", kube_codes},
                        {"operator_agentapi_requests", agentapi_requests},
                        {"operator_reconciles", reconciles}};
  std::cout << figures.dump() << "\n";
  std::printf(
      "\n%d sessions enqueued at once (enqueue took %.2f s), %s poll threads:\n"
      "  every pod created after   %.2f s\n"
      "  every pod released after  %.2f s  -> %.0f claims/s\n"
      "  enqueue -> pod seen       p50 %.0f ms, p99 %.0f ms\n"
      "  enqueue -> pod released   p50 %.0f ms, p99 %.0f ms\n"
      "  operator                  peak RSS %.1f MiB, CPU %.2f s\n",
      sessions, enqueue_s, poll_threads.c_str(), all_pods_s, all_released_s,
      sessions / all_released_s, percentile(to_pod_ms, 0.5), percentile(to_pod_ms, 0.99),
      percentile(to_release_ms, 0.5), percentile(to_release_ms, 0.99),
      static_cast<double>(rss_kib) / 1024.0, cpu_seconds);
  std::printf(
      "  apiserver requests        %s\n  apiserver answers         %s\n"
      "  queue requests            %s\n  reconciles                %s\n",
      kube_requests.dump().c_str(), kube_codes.dump().c_str(), agentapi_requests.dump().c_str(),
      reconciles.dump().c_str());
  informer.stop();
  return 0;
}
