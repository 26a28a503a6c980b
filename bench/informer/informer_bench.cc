// Benchmark: an informer over many pods in a real kube-apiserver (started here on loopback).
// Prints, as JSON lines and then for people: the rate pods were created at, the time and rate of
// the initial paged list into the store, the memory the cache takes per pod (process RSS before
// and after the sync), and the watch events processed per second while every pod is patched.
//
//   informer_bench [--pods N] [--writers N] [--strip-managed-fields]
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/local_cluster.h"
#include "core/log.h"
#include "kube/config.h"
#include "kube/fake_api_server.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "runtime/informer.h"

namespace {

using nlohmann::json;
using BenchClock = std::chrono::steady_clock;
using namespace perimeter;

long rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

double seconds_since(BenchClock::time_point start) {
  return std::chrono::duration<double>(BenchClock::now() - start).count();
}

void parallel(int count, int threads, const std::function<void(int)>& work) {
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = t; i < count; i += threads) work(i);
    });
  }
  for (auto& worker : workers) worker.join();
}

json pod(int i) {
  return {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", "runner-" + std::to_string(i)},
        {"labels",
         {{"app.kubernetes.io/name", "perimeter-runner"},
          {"perimeter.dev/session", "s-" + std::to_string(i)}}}}},
      {"spec",
       {{"automountServiceAccountToken", false},
        {"restartPolicy", "Never"},
        {"containers",
         json::array({{{"name", "runner"},
                       {"image", "perimeter-runner:dev"},
                       {"resources", {{"limits", {{"cpu", "500m"}, {"memory", "512Mi"}}}}}}})}}}};
}

}  // namespace

int main(int argc, char** argv) {
  int pods = 10'000;
  int writers = 8;
  bool strip = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--strip-managed-fields") == 0) {
      strip = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "usage: informer_bench [--pods N] [--writers N] [--strip-managed-fields]\n";
      return 2;
    }
    if (std::strcmp(argv[i], "--pods") == 0)
      pods = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--writers") == 0)
      writers = std::atoi(argv[++i]);
    else {
      std::cerr << "usage: informer_bench [--pods N] [--writers N] [--strip-managed-fields]\n";
      return 2;
    }
  }
  auto cluster = perimeter::testing::LocalCluster::start({});
  auto config = kube::Config::from_kubeconfig_file(cluster->kubeconfig_path());
  config.qps = 0;  // measure the server and the informer, not our own limiter
  kube::HttpTransport transport(config);
  prometheus::Registry registry;
  kube::ClientMetrics client_metrics(registry);
  runtime::RuntimeMetrics metrics(registry);
  kube::ResourceClient namespaces(transport, kube::resources::namespaces(), client_metrics);
  kube::ResourceClient service_accounts(transport, kube::resources::service_accounts(),
                                        client_metrics);
  kube::ResourceClient pod_client(transport, kube::resources::pods(), client_metrics);
  const std::string ns = "bench";
  namespaces.create("",
                    {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});
  // No controller manager: the ServiceAccount admission plugin needs the SA created by hand.
  service_accounts.create(
      ns, {{"apiVersion", "v1"}, {"kind", "ServiceAccount"}, {"metadata", {{"name", "default"}}}});

  const auto create_start = BenchClock::now();
  std::atomic<int> create_errors{0};
  parallel(pods, writers, [&](int i) {
    try {
      pod_client.create(ns, pod(i));
    } catch (const std::exception& e) {
      if (++create_errors <= 3) std::cerr << "create failed: " << e.what() << "\n";
    }
  });
  const double create_seconds = seconds_since(create_start);

  // The initial list: paged, decoded, stored.
  malloc_trim(0);
  const long rss_before = rss_bytes();
  runtime::InformerOptions options;
  options.ns = ns;
  if (strip) options.transform = runtime::strip_managed_fields;
  std::atomic<int> updates{0};
  runtime::Informer informer(pod_client, options, metrics,
                             Logger("bench", StderrSink::instance(), LogLevel::kWarn));
  informer.add_handlers(
      {nullptr, [&](const runtime::ObjectPtr&, const runtime::ObjectPtr&) { ++updates; }, nullptr});
  const auto list_start = BenchClock::now();
  informer.start();
  if (!informer.wait_for_sync(std::chrono::minutes(5))) {
    std::cerr << "informer did not sync\n";
    return 1;
  }
  const double list_seconds = seconds_since(list_start);
  malloc_trim(0);
  const long rss_after = rss_bytes();
  const size_t cached = informer.store().size();

  // Watch throughput: every pod patched once; count the events the informer applies.
  const auto patch_start = BenchClock::now();
  parallel(pods, writers, [&](int i) {
    try {
      pod_client.merge_patch(ns, "runner-" + std::to_string(i),
                             {{"metadata", {{"annotations", {{"perimeter.dev/bench", "1"}}}}}});
    } catch (const std::exception& e) {
      std::cerr << "patch failed: " << e.what() << "\n";
    }
  });
  const double patch_seconds = seconds_since(patch_start);
  while (updates.load() < pods && seconds_since(patch_start) < 300)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const double watch_seconds = seconds_since(patch_start);
  // The client's own ceiling: the same pods, as the server shaped them, replayed through an
  // in-memory API (no network, no apiserver), decoded and applied by a second informer.
  std::vector<json> shaped;
  for (const auto& object : informer.store().list()) shaped.push_back(*object);
  informer.stop();
  perimeter::testing::FakeApiServer memory_api;
  kube::ResourceClient memory_pods(memory_api, kube::resources::pods(), client_metrics);
  std::atomic<int> replayed{0};
  runtime::InformerOptions memory_options;
  memory_options.ns = ns;
  runtime::Informer replay(memory_pods, memory_options, metrics,
                           Logger("bench", StderrSink::instance(), LogLevel::kWarn));
  replay.add_handlers({[&](const runtime::ObjectPtr&) { ++replayed; }, nullptr, nullptr});
  replay.start();
  replay.wait_for_sync(std::chrono::seconds(30));
  const auto replay_start = BenchClock::now();
  for (auto& object : shaped)
    memory_api.seed("/api/v1/namespaces/" + ns + "/pods", std::move(object));
  while (replayed.load() < static_cast<int>(shaped.size()) && seconds_since(replay_start) < 120)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const double replay_seconds = seconds_since(replay_start);
  replay.stop();

  const double bytes_per_pod = cached ? static_cast<double>(rss_after - rss_before) / cached : 0;
  json figures = {{"bench", "informer"},
                  {"pods", pods},
                  {"writers", writers},
                  {"strip_managed_fields", strip},
                  {"create_errors", create_errors.load()},
                  {"create_seconds", create_seconds},
                  {"creates_per_second", pods / create_seconds},
                  {"list_sync_seconds", list_seconds},
                  {"listed_objects_per_second", cached / list_seconds},
                  {"cached_objects", cached},
                  {"rss_before_bytes", rss_before},
                  {"rss_after_bytes", rss_after},
                  {"bytes_per_cached_pod", bytes_per_pod},
                  {"patch_seconds", patch_seconds},
                  {"watch_events", updates.load()},
                  {"watch_seconds", watch_seconds},
                  {"watch_events_per_second", updates.load() / watch_seconds},
                  {"in_process_watch_events", replayed.load()},
                  {"in_process_watch_seconds", replay_seconds},
                  {"in_process_watch_events_per_second", replayed.load() / replay_seconds}};
  std::cout << figures.dump() << "\n";
  std::printf(
      "informer over %zu pods: list+sync %.2f s (%.0f objects/s), %.1f KiB RSS per cached pod\n",
      cached, list_seconds, cached / list_seconds, bytes_per_pod / 1024.0);
  std::printf(
      "watch: %d update events in %.2f s = %.0f events/s (server accepted patches at %.0f/s;"
      " the informer keeps up with the writers)\n",
      updates.load(), watch_seconds, updates.load() / watch_seconds, pods / patch_seconds);
  std::printf(
      "in-process ceiling (FakeApiServer, no network): %d watch events in %.2f s = %.0f events/s\n",
      replayed.load(), replay_seconds, replayed.load() / replay_seconds);
  std::printf("created %d pods in %.2f s (%.0f/s with %d writers)\n", pods, create_seconds,
              pods / create_seconds, writers);
  return 0;
}
