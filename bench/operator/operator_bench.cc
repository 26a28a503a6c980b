// Claim throughput of perimeter-operator: N sessions enqueued at once on perimeter-sim, a real
// control plane with KWOK nodes, the operator as its own process. Prints claims/s, enqueue-to-pod
// and enqueue-to-release latencies (p50, p99, as seen by a watch; a pod is released when the
// watch sees it without a scheduling gate, which ends a claim: the operator makes it after the
// item's ack, ungated), and the operator's peak RSS and CPU time, as JSON lines and a summary.
//
// The yardstick, in the same run against the same apiserver: a tight client (kube::ResourceClient
// over kube::HttpTransport, the operator's QPS and burst) that creates the same Secret and
// Pod per item with as many threads as the operator has poll threads, in a namespace of its own,
// before the operator is given any work. The operator's claims/s is printed as a ratio of that
// raw rate. Then the apiserver requests per claim, from the operator's own
// perimeter_kube_requests_total (by verb) and from the apiserver's apiserver_request_total (by
// verb and resource, every client), both counted from just before the enqueue until every session
// has finished and been marked ("all included").
//
// Not a test: run by hand,
// `build/bin/operator_bench [--sessions N] [--poll-threads N] [--finish-after 2s] [--perf FILE]`.
// --perf records the operator's CPU over the claim phase with `perf record -g` (needs root).
// A run in which anything failed prints no ratio and exits non-zero.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "bench_cluster.h"
#include "bench_support.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/log.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "operator/exposition.h"
#include "operator/operator_process.h"
#include "process/process.h"
#include "runtime/informer.h"

namespace {

using namespace perimeter;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using bench::apiserver_requests;
using bench::difference;
using bench::env_or;
using bench::percentile;
using bench::process_usage;
using bench::read_file;
using bench::sums_by_labels;
using bench::total;

// The operator's own client settings (operator/manager/options.h defaults), passed to it
// explicitly so that the raw peer is held to exactly the same rate limit.
constexpr double kKubeApiQps = 200;
constexpr int kKubeApiBurst = 400;

struct RawFigures {
  int items = 0;
  int failed = 0;
  std::string first_error;
  double create_seconds = 0;
  double delete_seconds = 0;
  json requests;  // the peer's own requests by verb
};

// The raw-rate peer: `items` times a Secret and then a Pod of the operator's shapes, `threads`
// at a time, in `ns`, then both deleted. The objects lose the operator's labels and owner
// reference so that neither the operator's informer nor the garbage collector sees them; the
// pod keeps its scheduling gate, so the scheduler and KWOK never touch it.
RawFigures run_raw_peer(const kube::Config& base, const agentenvironment::AgentEnvironment& env,
                        int items, int threads) {
  kube::Config config = base;
  config.qps = kKubeApiQps;
  config.burst = kKubeApiBurst;
  kube::HttpTransport transport(config);
  prometheus::Registry registry;
  kube::ClientMetrics metrics(registry);
  kube::ResourceClient secrets(transport, kube::resources::secrets(), metrics);
  kube::ResourceClient pods(transport, kube::resources::pods(), metrics);
  const auto strip = [](json object) {
    object["metadata"].erase("ownerReferences");
    object["metadata"]["labels"] = {{"perimeter-bench", "raw"}};
    return object;
  };
  std::vector<json> secret_objects, pod_objects;
  std::vector<std::string> names;
  for (int i = 0; i < items; ++i) {
    char work_id[32];
    std::snprintf(work_id, sizeof work_id, "work_raw%06d", i);
    const agentenvironment::ClaimedSession session{work_id, std::string("sesn_raw") + work_id,
                                                   std::string(200, 'x'),
                                                   "2026-01-01T00:00:00.000000Z"};
    secret_objects.push_back(strip(agentenvironment::build_session_secret(env, session)));
    pod_objects.push_back(strip(agentenvironment::build_runner_pod(env, session)));
    names.push_back(pod_objects.back()["metadata"]["name"]);
  }
  RawFigures figures;
  figures.items = items;
  std::mutex mutex;
  const auto run = [&](const std::function<void(int)>& step) {
    std::atomic<int> next{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i = next++; i < items; i = next++) {
          try {
            step(i);
          } catch (const std::exception& e) {
            std::lock_guard lock(mutex);
            if (figures.failed++ == 0) figures.first_error = e.what();
          }
        }
      });
    }
    for (auto& worker : workers) worker.join();
  };
  const auto start = SteadyClock::now();
  run([&](int i) {
    secrets.create(env.namespace_, secret_objects[i]);
    pods.create(env.namespace_, pod_objects[i]);
  });
  figures.create_seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  const auto delete_start = SteadyClock::now();
  kube::DeleteOptions now;
  now.grace_period_seconds = 0;
  run([&](int i) {
    pods.remove(env.namespace_, names[i], now);
    secrets.remove(env.namespace_, names[i], {});
  });
  figures.delete_seconds = std::chrono::duration<double>(SteadyClock::now() - delete_start).count();
  figures.requests = json::object();
  for (const auto& family : registry.Collect()) {
    if (family.name != "perimeter_kube_requests_total") continue;
    for (const auto& metric : family.metric) {
      std::string verb;
      for (const auto& label : metric.label)
        if (label.name == "verb") verb = label.value;
      figures.requests[verb] = figures.requests.value(verb, 0.0) + metric.counter.value;
    }
  }
  return figures;
}

// `perf record -g` attached to `pid` until stop(); nothing when `output` is empty.
class PerfRecording {
 public:
  PerfRecording(const std::string& output, pid_t pid) {
    if (output.empty()) return;
    const std::string target = std::to_string(pid);
    child_ = fork();
    if (child_ == 0) {
      // DWARF unwinding: the operator is built without frame pointers.
      execl("/usr/bin/perf", "perf", "record", "-F", "199", "--call-graph", "dwarf,16384", "-p",
            target.c_str(), "-o", output.c_str(), "--quiet", static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // attached before work starts
  }
  ~PerfRecording() { stop(); }
  PerfRecording(const PerfRecording&) = delete;
  PerfRecording& operator=(const PerfRecording&) = delete;
  // True when perf was not asked for, or stopped cleanly.
  bool stop() {
    if (child_ <= 0) return ok_;
    kill(child_, SIGINT);
    int status = 0;
    waitpid(child_, &status, 0);
    child_ = -1;
    // perf writes its file, then re-raises the SIGINT that stopped it.
    ok_ = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
          (WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
    return ok_;
  }

 private:
  pid_t child_ = -1;
  bool ok_ = true;
};

}  // namespace

int main(int argc, char** argv) {
  int sessions = 1000;
  std::string poll_threads = "4";
  // Runner pods finish (KWOK) this long after they run, so that the outcome marks and status
  // writes of finished sessions are counted too; "" keeps them running.
  std::string finish_after = "2s";
  std::string perf_output;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    const bool numeric = flag == "--sessions" || flag == "--poll-threads";
    const bool text = flag == "--finish-after" || flag == "--perf";
    int value = 0;
    try {
      value = numeric && i + 1 < argc ? std::stoi(argv[i + 1]) : 0;
    } catch (const std::logic_error&) {
      value = 0;
    }
    if ((numeric && value <= 0) || (!numeric && !(text && i + 1 < argc))) {
      std::cerr << "usage: operator_bench [--sessions N] [--poll-threads N] "
                   "[--finish-after DURATION|''] [--perf FILE], N > 0\n";
      return flag == "--help" ? 0 : 2;
    }
    if (flag == "--sessions") sessions = value;
    if (flag == "--poll-threads") poll_threads = std::to_string(value);
    if (flag == "--finish-after") finish_after = argv[i + 1];
    if (flag == "--perf") perf_output = argv[i + 1];
  }
  const std::string source = env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // NOLINT(concurrency-mt-unsafe): no threads yet

  auto cluster = bench::start_bench_cluster(source);
  if (!cluster) return 1;
  testing::SimProcess sim({"--lease-ttl-seconds", "3600"});
  const auto environment =
      testing::http_call(sim.url(), "POST", "/admin/environments", json{{"name", "bench"}}.dump())
          .json();

  bench::BenchKube cluster_api(cluster->kubeconfig_path());
  kube::HttpTransport& transport = cluster_api.transport;
  kube::ClientMetrics& client_metrics = cluster_api.client_metrics;
  runtime::RuntimeMetrics& runtime_metrics = cluster_api.runtime_metrics;
  kube::ResourceClient& pods = cluster_api.pods;
  kube::ResourceClient& environments = cluster_api.agent_environments;
  bench::create_namespace_with_environment_key(cluster_api, "bench", environment["key"]);
  json runner = {{"image", "perimeter-runner:bench"}};
  if (!finish_after.empty()) {
    runner["podAnnotations"] = {{"perimeter.dev/kwok-complete-after", finish_after}};
  }
  const json environment_object =
      environments.create("bench", {{"apiVersion", "perimeter.dev/v1alpha1"},
                                    {"kind", "AgentEnvironment"},
                                    {"metadata", {{"name", "bench"}}},
                                    {"spec",
                                     {{"environmentId", environment["id"]},
                                      {"environmentKeySecretRef", {{"name", "key"}}},
                                      {"apiBaseUrl", sim.url()},
                                      {"maxConcurrentSessions", sessions},
                                      {"runner", runner}}}});
  // The raw peer's namespace, ready for pods once its default ServiceAccount exists.
  agentenvironment::AgentEnvironment raw_env =
      agentenvironment::parse_agent_environment(environment_object);
  raw_env.namespace_ = "bench-raw";
  cluster_api.namespaces.create(
      "",
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", raw_env.namespace_}}}});
  {
    kube::ResourceClient service_accounts(transport, kube::resources::service_accounts(),
                                          client_metrics);
    const auto until = SteadyClock::now() + std::chrono::seconds(60);
    for (;;) {
      try {
        service_accounts.get(raw_env.namespace_, "default");
        break;
      } catch (const kube::ApiError&) {
        if (SteadyClock::now() > until) {
          std::cerr << "no default ServiceAccount in " << raw_env.namespace_ << "\n";
          return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
  }

  // When each pod was first seen, and first seen without Perimeter's scheduling gate, by work id.
  std::mutex mutex;
  std::map<std::string, SteadyClock::time_point> pod_seen;
  std::map<std::string, SteadyClock::time_point> pod_released;
  std::set<std::string> pod_marked;  // finished and counted (the outcome annotation)
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
    if ((*pod)["metadata"]["annotations"].contains("perimeter.dev/outcome"))
      pod_marked.insert(work_id);
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
                      sim.url(), "--kube-api-qps", std::to_string(static_cast<int>(kKubeApiQps)),
                      "--kube-api-burst", std::to_string(kKubeApiBurst)}});
  // Let the operator start its poller on the empty queue, so the figures are claims, not start-up.
  std::this_thread::sleep_for(std::chrono::seconds(3));

  // The yardstick first, while the operator idles on an empty queue: the same writes by a tight
  // client, against the same apiserver, at the same concurrency and rate limit.
  std::cerr << "raw peer: " << sessions << " Secrets and Pods...\n";
  const auto latency_before_raw = bench::apiserver_latency(transport);
  const RawFigures raw =
      run_raw_peer(transport.config(), raw_env, sessions, std::stoi(poll_threads));
  const auto latency_after_raw = bench::apiserver_latency(transport);
  if (raw.failed > 0) {
    std::cerr << "raw peer: " << raw.failed << " of " << sessions
              << " items failed; first error: " << raw.first_error << "\n";
    return 1;
  }
  const double raw_per_second = sessions / raw.create_seconds;
  std::cerr << "raw peer: " << raw_per_second << " items/s\n";

  // Counted from here: what the claims cost, not what start-up did.
  const auto before = process_usage(operator_process.pid());
  const auto threads_before = bench::thread_cpu(operator_process.pid());
  const std::string exposition_before = operator_process.metrics();
  const auto apiserver_before = apiserver_requests(transport);
  const auto latency_before = bench::apiserver_latency(transport);
  PerfRecording perf(perf_output, operator_process.pid());

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
  const auto at_release = process_usage(operator_process.pid());
  const std::string exposition_at_release = operator_process.metrics();
  const auto latency_at_release = bench::apiserver_latency(transport);
  // Then until every session has finished and been counted, and the coalesced status write that
  // follows (at most one a second) is out: the cost of a claim, all included.
  if (!finish_after.empty()) {
    const auto settle_deadline = SteadyClock::now() + std::chrono::minutes(5);
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (pod_marked.size() >= static_cast<size_t>(sessions)) break;
      }
      if (SteadyClock::now() > settle_deadline) {
        std::lock_guard lock(mutex);
        std::cerr << "timed out: " << pod_marked.size() << " of " << sessions
                  << " finished sessions marked counted\n";
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::seconds(3));
  }
  const bool perf_ok = perf.stop();
  const auto usage = process_usage(operator_process.pid());
  const auto threads_after = bench::thread_cpu(operator_process.pid());
  const std::string exposition = operator_process.metrics();
  const auto apiserver_after = apiserver_requests(transport);
  const std::vector<std::string> verb_code = {"verb", "code"};
  const json claim_requests =
      difference(sums_by_labels(exposition_before, "perimeter_kube_requests_total", {"verb"}),
                 sums_by_labels(exposition, "perimeter_kube_requests_total", {"verb"}));
  const json claim_requests_at_release =
      difference(sums_by_labels(exposition_before, "perimeter_kube_requests_total", {"verb"}),
                 sums_by_labels(exposition_at_release, "perimeter_kube_requests_total", {"verb"}));
  const json claim_answers =
      difference(sums_by_labels(exposition_before, "perimeter_kube_requests_total", verb_code),
                 sums_by_labels(exposition, "perimeter_kube_requests_total", verb_code));
  const json apiserver_by_resource = difference(apiserver_before, apiserver_after);
  const double requests_per_claim = total(claim_requests, false) / sessions;
  const double writes_per_claim = total(claim_requests, true) / sessions;
  const double writes_per_claim_at_release = total(claim_requests_at_release, true) / sessions;
  const double claim_cpu_seconds = usage.cpu_seconds - before.cpu_seconds;
  const double claim_phase_cpu_seconds = at_release.cpu_seconds - before.cpu_seconds;
  // Where the CPU went, by thread role (the operator names its threads): ms per claim.
  json cpu_ms_per_claim_by_thread = json::object();
  double by_thread_sum = 0;
  for (const auto& [role, seconds] : bench::cpu_by_role_between(threads_before, threads_after)) {
    by_thread_sum += seconds;
    if (seconds > 0) cpu_ms_per_claim_by_thread[role] = 1000.0 * seconds / sessions;
  }
  if (claim_cpu_seconds - by_thread_sum > 0) {
    cpu_ms_per_claim_by_thread["(threads that ended)"] =
        1000.0 * (claim_cpu_seconds - by_thread_sum) / sessions;
  }
  // What the operator asked of the queue, and how often it reconciled, over the same span.
  const json agentapi_requests = difference(
      sums_by_labels(exposition_before, "perimeter_agentapi_requests_total", {"operation"}),
      sums_by_labels(exposition, "perimeter_agentapi_requests_total", {"operation"}));
  const json reconciles = difference(
      sums_by_labels(exposition_before, "perimeter_controller_reconcile_total", {"controller"}),
      sums_by_labels(exposition, "perimeter_controller_reconcile_total", {"controller"}));
  // Where a poll thread's time per claim goes: the queue's two round trips (means over the claim
  // phase, from the operator's own histogram) besides the apiserver's two creates, which are all
  // the raw peer's item is. At equal concurrency the ratio to the raw rate is about
  // raw item / (raw item + poll + ack).
  const auto queue_seconds = [&](const std::string& suffix) {
    return difference(
        sums_by_labels(exposition_before, "perimeter_agentapi_request_duration_seconds" + suffix,
                       {"operation"}),
        sums_by_labels(exposition_at_release,
                       "perimeter_agentapi_request_duration_seconds" + suffix, {"operation"}));
  };
  const json queue_sums = queue_seconds("_sum");
  const json queue_counts = queue_seconds("_count");
  const auto queue_mean_ms = [&](const std::string& operation) {
    const double count = queue_counts.value(operation, 0.0);
    return count > 0 ? 1000.0 * queue_sums.value(operation, 0.0) / count : 0.0;
  };
  const double poll_ms = queue_mean_ms("work.poll");
  const double ack_ms = queue_mean_ms("work.ack");
  const double threads = std::stod(poll_threads);
  // The same creates as the apiserver timed them, in each phase: a claim's create slower than
  // the raw peer's by the server's own account is the apiserver's doing, not the operator's.
  json apiserver_create_ms = json::object();
  for (const std::string key : {"POST pods", "POST secrets"}) {
    apiserver_create_ms[key] = {
        {"raw", bench::mean_ms_between(latency_before_raw, latency_after_raw, key)},
        {"claims", bench::mean_ms_between(latency_before, latency_at_release, key)}};
  }
  json per_claim = json::object();
  for (const auto& [verb, count] : claim_requests.items())
    per_claim[verb] = count.get<double>() / sessions;

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
  const double claims_per_second = sessions / all_released_s;
  const json figures = {{"bench", "operator_claims"},
                        {"sessions", sessions},
                        {"poll_threads", std::stoi(poll_threads)},
                        {"kube_api_qps", kKubeApiQps},
                        {"kube_api_burst", kKubeApiBurst},
                        {"finish_after", finish_after},
                        {"raw_items_per_second", raw_per_second},
                        {"raw_create_seconds", raw.create_seconds},
                        {"raw_delete_seconds", raw.delete_seconds},
                        {"raw_requests", raw.requests},
                        {"enqueue_seconds", enqueue_s},
                        {"all_pods_seconds", all_pods_s},
                        {"all_released_seconds", all_released_s},
                        {"claims_per_second", claims_per_second},
                        {"ratio_to_raw", claims_per_second / raw_per_second},
                        {"enqueue_to_pod_p50_ms", percentile(to_pod_ms, 0.50)},
                        {"enqueue_to_pod_p99_ms", percentile(to_pod_ms, 0.99)},
                        {"enqueue_to_release_p50_ms", percentile(to_release_ms, 0.50)},
                        {"enqueue_to_release_p99_ms", percentile(to_release_ms, 0.99)},
                        {"operator_peak_rss_mib", static_cast<double>(usage.hwm_kib) / 1024.0},
                        {"operator_cpu_seconds_total", usage.cpu_seconds},
                        {"operator_cpu_seconds_claims", claim_cpu_seconds},
                        {"operator_cpu_seconds_to_release", claim_phase_cpu_seconds},
                        {"operator_cpu_ms_per_claim", 1000.0 * claim_cpu_seconds / sessions},
                        {"operator_cpu_ms_per_claim_by_thread", cpu_ms_per_claim_by_thread},
                        {"operator_kube_requests", claim_requests},
                        {"operator_kube_requests_to_release", claim_requests_at_release},
                        {"operator_kube_request_codes", claim_answers},
                        {"operator_kube_requests_per_claim", requests_per_claim},
                        {"operator_kube_requests_per_claim_by_verb", per_claim},
                        {"operator_kube_writes_per_claim", writes_per_claim},
                        {"operator_kube_writes_per_claim_to_release", writes_per_claim_at_release},
                        {"apiserver_requests_all_clients", apiserver_by_resource},
                        {"operator_agentapi_requests", agentapi_requests},
                        {"operator_reconciles", reconciles},
                        {"queue_poll_mean_ms", poll_ms},
                        {"queue_ack_mean_ms", ack_ms},
                        {"claim_ms_per_poll_thread", 1000.0 * threads / claims_per_second},
                        {"raw_item_ms_per_thread", 1000.0 * threads / raw_per_second},
                        {"apiserver_create_mean_ms", apiserver_create_ms},
                        {"perf_ok", perf_ok}};
  std::cout << figures.dump() << "\n";
  std::printf(
      "\n%d sessions enqueued at once (enqueue took %.2f s), %s poll threads, client %.0f qps "
      "burst %d:\n"
      "  raw peer                  %.2f s for %d Secret+Pod pairs -> %.1f items/s\n"
      "  every pod created after   %.2f s\n"
      "  every pod released after  %.2f s  -> %.1f claims/s\n"
      "  ratio to the raw rate     %.2f\n"
      "  enqueue -> pod seen       p50 %.0f ms, p99 %.0f ms\n"
      "  enqueue -> pod released   p50 %.0f ms, p99 %.0f ms\n"
      "  operator                  peak RSS %.1f MiB, CPU %.2f s in all, %.2f s from the enqueue "
      "(%.2f s of it to the last release) -> %.2f ms per claim\n"
      "    by thread, ms per claim %s\n",
      sessions, enqueue_s, poll_threads.c_str(), kKubeApiQps, kKubeApiBurst, raw.create_seconds,
      sessions, raw_per_second, all_pods_s, all_released_s, claims_per_second,
      claims_per_second / raw_per_second, percentile(to_pod_ms, 0.5), percentile(to_pod_ms, 0.99),
      percentile(to_release_ms, 0.5), percentile(to_release_ms, 0.99),
      static_cast<double>(usage.hwm_kib) / 1024.0, usage.cpu_seconds, claim_cpu_seconds,
      claim_phase_cpu_seconds, 1000.0 * claim_cpu_seconds / sessions,
      cpu_ms_per_claim_by_thread.dump().c_str());
  std::printf(
      "  operator -> apiserver     %s\n"
      "    per claim               %.2f requests, %.2f writes (%.2f by the last release)\n"
      "    per claim by verb       %s\n"
      "    answers                 %s\n"
      "  apiserver, every client   %s\n"
      "  queue requests            %s\n  reconciles                %s\n"
      "  per poll thread           %.1f ms a claim (queue poll %.1f ms + ack %.1f ms, means, and "
      "the two creates; the polls that waited on an empty queue included) vs %.1f ms a raw item\n"
      "  the apiserver's own time  POST pods %.1f ms in the raw phase, %.1f ms in the claims; "
      "POST secrets %.1f and %.1f ms (means)\n",
      claim_requests.dump().c_str(), requests_per_claim, writes_per_claim,
      writes_per_claim_at_release, per_claim.dump().c_str(), claim_answers.dump().c_str(),
      apiserver_by_resource.dump().c_str(), agentapi_requests.dump().c_str(),
      reconciles.dump().c_str(), 1000.0 * threads / claims_per_second, poll_ms, ack_ms,
      1000.0 * threads / raw_per_second, apiserver_create_ms["POST pods"]["raw"].get<double>(),
      apiserver_create_ms["POST pods"]["claims"].get<double>(),
      apiserver_create_ms["POST secrets"]["raw"].get<double>(),
      apiserver_create_ms["POST secrets"]["claims"].get<double>());
  if (!perf_ok) {
    std::cerr << "perf record did not finish cleanly\n";
    informer.stop();
    return 1;
  }
  informer.stop();
  return 0;
}
