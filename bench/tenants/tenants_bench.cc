// Many tenants in one operator: N AgentEnvironments (200 by default), each with its own environment
// on perimeter-sim, on the local control plane. Measures, as JSON and a summary:
//  - start-up: the time until every environment is Ready;
//  - idle (--idle-seconds, 60): the operator's threads, RSS, open sockets and CPU, and the
//    requests per minute it sends to the apiserver (by verb, writes apart) and to the queue (by
//    call), from its own counters;
//  - busy: K sessions per environment enqueued at once (--sessions-per-environment, 2), the time
//    until every runner pod exists, the threads and RSS at their peak, and the threads again once
//    the queues are empty.
// No peer runs here (the official worker polls one environment per process, and 200 of them are
// not a measurement this machine can make), so it prints no ratio: its figures are the issue's
// absolute goals (no writes while idle; polling that does not need a thread per environment per
// poll slot).
//
// Not a test: run by hand, `build/bin/tenants_bench [--environments N] [--idle-seconds S]
// [--sessions-per-environment K] [--poll-threads N]`. A run in which anything failed exits
// non-zero.
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <set>
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
#include "operator/operator_process.h"
#include "runtime/informer.h"

namespace {

using namespace perimeter;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

// The operator's threads and open sockets, from /proc.
struct Footprint {
  int threads = 0;
  int sockets = 0;
};

Footprint footprint(pid_t pid) {
  Footprint result;
  std::istringstream status(bench::read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) result.threads = std::stoi(line.substr(8));
  }
  const std::string fds = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* dir = opendir(fds.c_str())) {
    while (const dirent* entry = readdir(dir)) {
      char target[256];
      const std::string path = fds + "/" + entry->d_name;
      const auto length = readlink(path.c_str(), target, sizeof target - 1);
      if (length > 0 && std::string_view(target, length).starts_with("socket:")) ++result.sockets;
    }
    closedir(dir);
  }
  return result;
}

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// Per minute, over `seconds`.
json per_minute(const json& counts, double seconds) {
  json out = json::object();
  for (const auto& [key, value] : counts.items()) out[key] = value.get<double>() * 60 / seconds;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int environments = 200, idle_seconds = 60, sessions_per_environment = 2, poll_threads = 4;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc || (flag != "--environments" && flag != "--idle-seconds" &&
                          flag != "--sessions-per-environment" && flag != "--poll-threads")) {
      std::cerr << "usage: tenants_bench [--environments N] [--idle-seconds S] "
                   "[--sessions-per-environment K] [--poll-threads N]\n";
      return 2;
    }
    const int value = std::stoi(argv[i + 1]);
    if (value < 1) {
      std::cerr << flag << " must be at least 1\n";
      return 2;
    }
    if (flag == "--environments") environments = value;
    if (flag == "--idle-seconds") idle_seconds = value;
    if (flag == "--sessions-per-environment") sessions_per_environment = value;
    if (flag == "--poll-threads") poll_threads = value;
  }
  const std::string source = bench::env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = bench::env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // NOLINT(concurrency-mt-unsafe): no threads yet

  auto cluster = bench::start_bench_cluster(source);
  if (!cluster) return 1;
  testing::SimProcess sim({"--lease-ttl-seconds", "3600"});

  auto config = kube::Config::from_kubeconfig_file(cluster->kubeconfig_path());
  config.qps = 0;
  kube::HttpTransport transport(config);
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics(registry);
  runtime::RuntimeMetrics runtime_metrics(registry);
  kube::ResourceClient namespaces(transport, kube::resources::namespaces(), client_metrics);
  kube::ResourceClient secrets(transport, kube::resources::secrets(), client_metrics);
  kube::ResourceClient pods(transport, kube::resources::pods(), client_metrics);
  kube::ResourceClient agent_environments(
      transport, {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true},
      client_metrics);
  namespaces.create(
      "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "tenants"}}}});
  std::vector<std::string> environment_ids;
  std::cerr << "creating " << environments << " environments...\n";
  for (int i = 0; i < environments; ++i) {
    const std::string name = "tenant-" + std::to_string(i);
    const auto environment =
        testing::http_call(sim.url(), "POST", "/admin/environments", json{{"name", name}}.dump())
            .json();
    environment_ids.push_back(environment["id"]);
    secrets.create(
        "tenants",
        {{"apiVersion", "v1"},
         {"kind", "Secret"},
         {"metadata",
          {{"name", name + "-key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
         {"stringData", {{"environment-key", environment["key"]}}}});
    agent_environments.create("tenants", {{"apiVersion", "perimeter.dev/v1alpha1"},
                                          {"kind", "AgentEnvironment"},
                                          {"metadata", {{"name", name}}},
                                          {"spec",
                                           {{"environmentId", environment["id"]},
                                            {"environmentKeySecretRef", {{"name", name + "-key"}}},
                                            {"apiBaseUrl", sim.url()},
                                            {"maxConcurrentSessions", 10},
                                            {"runner", {{"image", "perimeter-runner:bench"}}}}}});
  }

  // Runner pods as they appear.
  std::mutex mutex;
  std::set<std::string> pods_seen;
  runtime::InformerOptions informer_options;
  informer_options.ns = "tenants";
  runtime::Informer informer(pods, informer_options, runtime_metrics,
                             Logger("bench", StderrSink::instance(), LogLevel::kWarn));
  runtime::EventHandlers handlers;
  handlers.on_add = [&](const runtime::ObjectPtr& pod) {
    std::lock_guard lock(mutex);
    pods_seen.insert((*pod)["metadata"].value("name", ""));
  };
  informer.add_handlers(handlers);
  informer.start();
  informer.wait_for_sync(std::chrono::seconds(30));

  testing::OperatorProcess operator_process(
      {.binary = bin + "/perimeter-operator",
       .kubeconfig = cluster->kubeconfig_path(),
       .log_path = cluster->dir() + "/operator-tenants.log",
       .extra_args = {"--poll-threads", std::to_string(poll_threads), "--log-level", "warn",
                      "--allowed-api-hosts", sim.url()}});
  const pid_t pid = operator_process.pid();

  // Start-up: every environment Ready.
  const auto started = SteadyClock::now();
  for (;;) {
    int ready = 0;
    for (const auto& object : agent_environments.list("tenants").value("items", json::array())) {
      for (const auto& condition :
           object.value("status", json::object()).value("conditions", json::array())) {
        if (condition.value("type", "") == "Ready" && condition.value("status", "") == "True")
          ++ready;
      }
    }
    if (ready == environments) break;
    if (seconds_since(started) > 300) {
      std::cerr << "timed out: " << ready << " of " << environments << " environments Ready\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const double ready_seconds = seconds_since(started);
  std::cerr << "every environment Ready after " << ready_seconds << " s; idle for " << idle_seconds
            << " s...\n";

  // Idle: what the operator costs with nothing to do.
  std::this_thread::sleep_for(std::chrono::seconds(5));  // the first passes' reads settle
  const auto idle_exposition = operator_process.metrics();
  const auto idle_apiserver = bench::apiserver_requests(transport);
  const auto idle_usage = bench::process_usage(pid);
  const auto idle_start = SteadyClock::now();
  std::this_thread::sleep_for(std::chrono::seconds(idle_seconds));
  const double idle_span = seconds_since(idle_start);
  const auto idle_end_exposition = operator_process.metrics();
  // Every client's, the operator's among them (the bench's own informer only watches).
  std::map<std::string, double> apiserver_writes;
  for (const auto& [key, count] : bench::apiserver_requests(transport)) {
    if (!bench::is_write(key.substr(0, key.find(' ')))) continue;
    const auto before = idle_apiserver.find(key);
    const double delta = count - (before == idle_apiserver.end() ? 0 : before->second);
    if (delta > 0) apiserver_writes[key] = delta * 60 / idle_span;
  }
  const json idle_apiserver_writes = apiserver_writes;
  const auto idle_end_usage = bench::process_usage(pid);
  const Footprint idle_footprint = footprint(pid);
  const json idle_kube = bench::difference(
      bench::sums_by_labels(idle_exposition, "perimeter_kube_requests_total", {"verb"}),
      bench::sums_by_labels(idle_end_exposition, "perimeter_kube_requests_total", {"verb"}));
  const json idle_queue = bench::difference(
      bench::sums_by_labels(idle_exposition, "perimeter_agentapi_requests_total", {"operation"}),
      bench::sums_by_labels(idle_end_exposition, "perimeter_agentapi_requests_total",
                            {"operation"}));
  const double idle_cpu_percent =
      100 * (idle_end_usage.cpu_seconds - idle_usage.cpu_seconds) / idle_span;

  // Busy: every environment gets K sessions at once.
  const int sessions = environments * sessions_per_environment;
  const std::string scenario =
      bench::read_file(source + "/sim/scenarios/conformance/builtin-tools.yaml");
  std::atomic<bool> sampling{true};
  std::atomic<int> peak_threads{0}, peak_sockets{0};
  std::thread sampler([&] {
    while (sampling) {
      const Footprint now = footprint(pid);
      if (now.threads > peak_threads) peak_threads = now.threads;
      if (now.sockets > peak_sockets) peak_sockets = now.sockets;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::cerr << "enqueueing " << sessions << " sessions...\n";
  const auto busy_start = SteadyClock::now();
  for (int round = 0; round < sessions_per_environment; ++round) {
    for (const auto& id : environment_ids) {
      testing::http_call(sim.url(), "POST", "/admin/environments/" + id + "/sessions",
                         json{{"scenario_yaml", scenario}}.dump());
    }
  }
  bool all_claimed = false;
  while (seconds_since(busy_start) < 600) {
    {
      std::lock_guard lock(mutex);
      if (pods_seen.size() >= static_cast<size_t>(sessions)) {
        all_claimed = true;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double busy_seconds = seconds_since(busy_start);
  // The helpers leave at their first empty poll; give them a few.
  std::this_thread::sleep_for(std::chrono::seconds(10));
  sampling = false;
  sampler.join();
  const Footprint after_footprint = footprint(pid);
  const auto final_usage = bench::process_usage(pid);
  if (!all_claimed) {
    std::lock_guard lock(mutex);
    std::cerr << "timed out: " << pods_seen.size() << " of " << sessions << " runner pods\n";
    return 1;
  }

  const json figures = {
      {"bench", "operator_tenants"},
      {"environments", environments},
      {"poll_threads", poll_threads},
      {"ready_seconds", ready_seconds},
      {"idle_seconds", idle_span},
      {"idle_threads", idle_footprint.threads},
      {"idle_sockets", idle_footprint.sockets},
      {"idle_rss_mib", idle_end_usage.rss_kib / 1024.0},
      {"idle_cpu_percent", idle_cpu_percent},
      {"idle_kube_requests_per_minute", per_minute(idle_kube, idle_span)},
      {"idle_kube_writes_per_minute", bench::total(idle_kube, true) * 60 / idle_span},
      {"idle_queue_requests_per_minute", per_minute(idle_queue, idle_span)},
      {"idle_apiserver_writes_per_minute_every_client", idle_apiserver_writes},
      {"busy_sessions", sessions},
      {"busy_seconds_to_every_pod", busy_seconds},
      {"busy_claims_per_second", sessions / busy_seconds},
      {"busy_peak_threads", peak_threads.load()},
      {"busy_peak_sockets", peak_sockets.load()},
      {"after_busy_threads", after_footprint.threads},
      {"peak_rss_mib", final_usage.hwm_kib / 1024.0},
      {"after_busy_rss_mib", final_usage.rss_kib / 1024.0},
  };
  std::cout << figures.dump() << "\n\n";
  std::cout << environments << " AgentEnvironments in one operator (" << poll_threads
            << " poll threads each at most):\n"
            << "  every environment Ready after   " << ready_seconds << " s\n"
            << "  idle, over " << idle_span << " s:\n"
            << "    threads                       " << idle_footprint.threads << "\n"
            << "    open sockets                  " << idle_footprint.sockets << "\n"
            << "    RSS                           " << idle_end_usage.rss_kib / 1024.0 << " MiB\n"
            << "    CPU                           " << idle_cpu_percent << " % of a core\n"
            << "    apiserver requests / minute   " << per_minute(idle_kube, idle_span).dump()
            << " (writes: " << bench::total(idle_kube, true) * 60 / idle_span << ")\n"
            << "    queue requests / minute       " << per_minute(idle_queue, idle_span).dump()
            << "\n"
            << "    apiserver writes / minute, every client " << idle_apiserver_writes.dump()
            << "\n"
            << "  busy: " << sessions << " sessions enqueued at once\n"
            << "    every runner pod after        " << busy_seconds << " s ("
            << sessions / busy_seconds << " claims/s)\n"
            << "    threads at the peak           " << peak_threads.load() << "\n"
            << "    open sockets at the peak      " << peak_sockets.load() << "\n"
            << "    threads 10 s after            " << after_footprint.threads << "\n"
            << "  peak RSS                        " << final_usage.hwm_kib / 1024.0 << " MiB\n"
            << "  RSS 10 s after the burst        " << final_usage.rss_kib / 1024.0 << " MiB\n";
  return 0;
}
