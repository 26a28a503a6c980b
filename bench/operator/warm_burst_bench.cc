// A burst of sessions against a warm pool (issue 19, "What must be shown"): N sessions enqueued
// at once (default 100) on perimeter-sim, with a pool of P warm pods (default 20) ready on the
// local control plane's KWOK nodes, perimeter-operator as its own process serving warm
// assignments. Prints how many claims took a warm pod and how many made a cold one, the claim
// latency of each, and how fast the pool refills, as JSON lines (one a figure) and a table.
//
// On KWOK no runner runs: a warm pod is assigned and never confirms, and no session finishes,
// so what is measured is the operator's side of a claim:
//  - enqueue -> ack: the simulator's own created_at and acknowledged_at of each item;
//  - enqueue -> the claim's pod: a warm pod's assignment patch (perimeter.dev/assigned-work-id) or
//    a cold pod's create (perimeter.dev/work-id), as first seen by a watch; and from the ack to
//    it (the watch's wall time less the simulator's acknowledged_at, one machine's clock);
//  - the operator's perimeter_claims_total{kind} and perimeter_claim_seconds{kind} (from the poll);
//  - warm vs cold from the pods themselves (perimeter.dev/warm) and from status.sessions;
//  - the refill: warm pods that became ready, unassigned, from the first assignment until the
//    pool is back at P after every item was claimed, per second.
// spec.warmPool is {minReady: P, maxReady: P}; maxConcurrentSessions (default N + 2P + 10) leaves
// room for every session and a full pool besides, so the limit is not what is measured.
//
// Not a test: run by hand, `build/bin/warm_burst_bench [--sessions N] [--pool P]
// [--max-sessions M]`. A run in which anything failed prints no figures and exits non-zero.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "agentapi/sim_process.h"
#include "bench_cluster.h"
#include "bench_support.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "core/log.h"
#include "core/time_format.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "operator/operator_process.h"
#include "runtime/informer.h"

namespace {

using namespace perimeter;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using bench::env_or;
using bench::percentile;
using bench::sums_by_labels;

double ms_between(SteadyClock::time_point from, SteadyClock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// When the watch first saw something: in the bench's steady time, and in wall time to set beside
// the simulator's own timestamps (one machine, one clock).
struct Seen {
  SteadyClock::time_point steady{};
  std::chrono::system_clock::time_point wall{};
};

// What the watch saw of the environment's runner pods.
class PodWatch {
 public:
  void record(const runtime::ObjectPtr& pod) {
    const auto now = SteadyClock::now();
    const Seen seen{now, std::chrono::system_clock::now()};
    const std::string name = (*pod)["metadata"].value("name", "");
    std::lock_guard lock(mutex_);
    pods_[name] = pod;
    const std::string& work_id = agentenvironment::session_work_id(*pod);
    if (!work_id.empty()) {
      auto& claims = agentenvironment::assigned_warm_pod(*pod) ? warm_ : cold_;
      claims.emplace(work_id, seen);
    } else if (agentenvironment::warm_pod_state(*pod) == agentenvironment::WarmPodState::kReady) {
      ready_at_.emplace(name, now);
    }
    note_ready(now);
  }
  void remove(const runtime::ObjectPtr& pod) {
    std::lock_guard lock(mutex_);
    pods_.erase((*pod)["metadata"].value("name", ""));
    note_ready(SteadyClock::now());
  }

  std::size_t ready() const {
    std::lock_guard lock(mutex_);
    return ready_now();
  }
  std::size_t claimed() const {
    std::lock_guard lock(mutex_);
    return warm_.size() + cold_.size();
  }
  // Work id -> when its warm pod was first seen assigned, or its cold pod first seen.
  std::map<std::string, Seen> warm() const {
    std::lock_guard lock(mutex_);
    return warm_;
  }
  std::map<std::string, Seen> cold() const {
    std::lock_guard lock(mutex_);
    return cold_;
  }
  // Pod name -> when it was first seen ready and unassigned.
  std::map<std::string, SteadyClock::time_point> ready_at() const {
    std::lock_guard lock(mutex_);
    return ready_at_;
  }
  // Each change of the number of ready unassigned warm pods, in order.
  std::vector<std::pair<SteadyClock::time_point, std::size_t>> ready_timeline() const {
    std::lock_guard lock(mutex_);
    return timeline_;
  }

 private:
  std::size_t ready_now() const {
    std::size_t ready = 0;
    for (const auto& [name, pod] : pods_) {
      if (agentenvironment::unassigned_warm_pod(*pod) &&
          agentenvironment::warm_pod_state(*pod) == agentenvironment::WarmPodState::kReady) {
        ++ready;
      }
    }
    return ready;
  }
  void note_ready(SteadyClock::time_point now) {
    const std::size_t ready = ready_now();
    if (timeline_.empty() || timeline_.back().second != ready) timeline_.emplace_back(now, ready);
  }

  mutable std::mutex mutex_;
  std::map<std::string, runtime::ObjectPtr> pods_;
  std::map<std::string, Seen> warm_, cold_;
  std::map<std::string, SteadyClock::time_point> ready_at_;
  std::vector<std::pair<SteadyClock::time_point, std::size_t>> timeline_;
};

// Waits until `done` or `limit`; false, after saying what it waited for, on the limit.
bool wait_for(const std::function<bool()>& done, std::chrono::seconds limit,
              const std::string& what) {
  const auto until = SteadyClock::now() + limit;
  while (!done()) {
    if (SteadyClock::now() > until) {
      std::cerr << "timed out waiting for " << what << "\n";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

json distribution(const std::vector<double>& values) {
  if (values.empty()) return {{"n", 0}};
  return {{"n", values.size()},
          {"min", *std::min_element(values.begin(), values.end())},
          {"p50", percentile(values, 0.50)},
          {"p90", percentile(values, 0.90)},
          {"p99", percentile(values, 0.99)},
          {"max", *std::max_element(values.begin(), values.end())}};
}

}  // namespace

int main(int argc, char** argv) {
  int sessions = 100;
  int pool = 20;
  int max_sessions = 0;  // 0: sessions + 2 * pool + 10
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    int value = 0;
    try {
      value = i + 1 < argc ? std::stoi(argv[i + 1]) : 0;
    } catch (const std::logic_error&) {
      value = 0;
    }
    const bool known = flag == "--sessions" || flag == "--pool" || flag == "--max-sessions";
    if (!known || value <= 0 || (flag == "--pool" && value > 1000)) {
      std::cerr << "usage: warm_burst_bench [--sessions N] [--pool P] [--max-sessions M], "
                   "N, M > 0, 0 < P <= 1000\n";
      return flag == "--help" ? 0 : 2;
    }
    if (flag == "--sessions") sessions = value;
    if (flag == "--pool") pool = value;
    if (flag == "--max-sessions") max_sessions = value;
  }
  if (max_sessions == 0) max_sessions = sessions + 2 * pool + 10;
  const std::string source = env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // NOLINT(concurrency-mt-unsafe): no threads yet

  auto cluster = bench::start_bench_cluster(source);
  if (!cluster) return 1;
  // Warm pods never confirm on KWOK, so nothing heartbeats: leases long enough that no item is
  // reclaimed while the bench runs.
  testing::SimProcess sim({"--lease-ttl-seconds", "3600"});
  const auto environment =
      testing::http_call(sim.url(), "POST", "/admin/environments", json{{"name", "bench"}}.dump())
          .json();
  const std::string environment_id = environment["id"];

  bench::BenchKube cluster_api(cluster->kubeconfig_path());
  runtime::RuntimeMetrics& runtime_metrics = cluster_api.runtime_metrics;
  kube::ResourceClient& pods = cluster_api.pods;
  kube::ResourceClient& environments = cluster_api.agent_environments;
  bench::create_namespace_with_environment_key(cluster_api, "bench", environment["key"]);
  environments.create("bench", {{"apiVersion", "perimeter.dev/v1alpha1"},
                                {"kind", "AgentEnvironment"},
                                {"metadata", {{"name", "bench"}}},
                                {"spec",
                                 {{"environmentId", environment_id},
                                  {"environmentKeySecretRef", {{"name", "key"}}},
                                  {"apiBaseUrl", sim.url()},
                                  {"maxConcurrentSessions", max_sessions},
                                  {"warmPool", {{"minReady", pool}, {"maxReady", pool}}},
                                  {"runner", {{"image", "perimeter-runner:bench"}}}}}});
  const auto status = [&] {
    return environments.get("bench", "bench").value("status", json::object());
  };

  PodWatch watch;
  runtime::InformerOptions informer_options;
  informer_options.ns = "bench";
  runtime::Informer informer(pods, informer_options, runtime_metrics,
                             Logger("bench", StderrSink::instance(), LogLevel::kWarn));
  runtime::EventHandlers handlers;
  handlers.on_add = [&](const runtime::ObjectPtr& pod) { watch.record(pod); };
  handlers.on_update = [&](const runtime::ObjectPtr& /*old_pod*/, const runtime::ObjectPtr& pod) {
    watch.record(pod);
  };
  handlers.on_delete = [&](const runtime::ObjectPtr& pod) { watch.remove(pod); };
  informer.add_handlers(handlers);
  informer.start();
  informer.wait_for_sync(std::chrono::seconds(30));

  // As the real-node tests run it: serving warm assignments on loopback (no runner will ask on
  // KWOK, but without the service the operator keeps no pool), its CA Secret in "bench".
  testing::OperatorProcess operator_process(
      {.binary = bin + "/perimeter-operator",
       .kubeconfig = cluster->kubeconfig_path(),
       .log_path = cluster->dir() + "/operator-warm-burst.log",
       .extra_args = {"--log-level", "warn", "--allowed-api-hosts", sim.url(),
                      "--warm-assignment-port", std::to_string(localcluster::pick_free_port()),
                      "--warm-assignment-address", "127.0.0.1"},
       .env = {"POD_NAMESPACE=bench"}});
  const auto pool_size = static_cast<std::size_t>(pool);
  std::cerr << "waiting for " << pool << " warm pods ready...\n";
  if (!wait_for(
          [&] {
            return watch.ready() == pool_size &&
                   status().value("warmPool", json::object()).value("ready", std::int64_t{-1}) ==
                       pool;
          },
          std::chrono::seconds(180), "the pool to be ready, as the operator's status says")) {
    return 1;
  }
  const std::string exposition_before = operator_process.metrics();

  const std::string scenario =
      bench::read_file(source + "/sim/scenarios/conformance/builtin-tools.yaml");
  std::map<std::string, SteadyClock::time_point> enqueued;
  std::cerr << "enqueueing " << sessions << " sessions...\n";
  const auto start = SteadyClock::now();
  for (int i = 0; i < sessions; ++i) {
    const auto reply =
        testing::http_call(sim.url(), "POST", "/admin/environments/" + environment_id + "/sessions",
                           json{{"scenario_yaml", scenario}}.dump());
    enqueued[reply.json()["work_id"]] = SteadyClock::now();
  }
  const auto enqueue_done = SteadyClock::now();
  if (!wait_for([&] { return watch.claimed() >= static_cast<std::size_t>(sessions); },
                std::chrono::seconds(600), "every item's pod")) {
    return 1;
  }
  const auto all_claimed = SteadyClock::now();
  if (!wait_for([&] { return watch.ready() >= pool_size; }, std::chrono::seconds(300),
                "the pool back at its size")) {
    return 1;
  }
  // Until the operator's status shows the pool back and the sessions counted (at most one
  // status write a second).
  json final_status;
  if (!wait_for(
          [&] {
            final_status = status();
            const json sessions_status = final_status.value("sessions", json::object());
            return final_status.value("warmPool", json::object())
                           .value("ready", std::int64_t{-1}) == pool &&
                   sessions_status.value("claimed", std::int64_t{-1}) == sessions;
          },
          std::chrono::seconds(60), "the status to show the pool and every claim")) {
    return 1;
  }
  const std::string exposition = operator_process.metrics();
  informer.stop();

  // From the watch: the claims by kind, and the refill.
  const auto warm = watch.warm();
  const auto cold = watch.cold();
  std::vector<double> warm_to_pod, cold_to_pod, warm_to_ack, cold_to_ack, warm_ack_to_pod,
      cold_ack_to_pod;
  std::optional<SteadyClock::time_point> first_assignment;
  int unknown = 0;
  for (const auto& [work_id, at] : enqueued) {
    const auto w = warm.find(work_id);
    const auto c = cold.find(work_id);
    if ((w == warm.end()) == (c == cold.end())) {
      ++unknown;  // no pod, or both a warm and a cold one
      continue;
    }
    const bool is_warm = w != warm.end();
    const Seen pod_seen = is_warm ? w->second : c->second;
    const auto pod_at = pod_seen.steady;
    (is_warm ? warm_to_pod : cold_to_pod).push_back(ms_between(at, pod_at));
    if (is_warm && (!first_assignment || pod_at < *first_assignment)) first_assignment = pod_at;
    const json item = testing::http_call(sim.url(), "GET", "/admin/work/" + work_id).json();
    const auto created = parse_rfc3339_micros(item.value("created_at", ""));
    const auto acked = parse_rfc3339_micros(item.value("acknowledged_at", ""));
    if (!created || !acked) {
      ++unknown;
      continue;
    }
    (is_warm ? warm_to_ack : cold_to_ack)
        .push_back(std::chrono::duration<double, std::milli>(*acked - *created).count());
    (is_warm ? warm_ack_to_pod : cold_ack_to_pod)
        .push_back(std::chrono::duration<double, std::milli>(pod_seen.wall - *acked).count());
  }
  if (unknown > 0) {
    std::cerr << unknown << " of " << sessions
              << " items have no pod, two, or no ack in the simulator\n";
    return 1;
  }
  // The pool back: the first moment, once every item had its pod, that P warm pods were ready.
  const auto timeline = watch.ready_timeline();
  SteadyClock::time_point pool_back = all_claimed;
  std::size_t lowest_ready = pool_size;
  for (const auto& [at, ready] : timeline) {
    if (at >= start) lowest_ready = std::min(lowest_ready, ready);
  }
  for (auto it = timeline.rbegin(); it != timeline.rend(); ++it) {
    if (it->second < pool_size) break;
    pool_back = std::max(all_claimed, it->first);
  }
  const auto refill_from = first_assignment.value_or(start);
  int refilled = 0;
  for (const auto& [name, at] : watch.ready_at()) {
    if (at > refill_from && at <= pool_back) ++refilled;
  }
  const double refill_seconds = ms_between(refill_from, pool_back) / 1000;

  // From the operator: claims by kind, and its own claim time (from the poll) by kind.
  const json claims_by_kind =
      bench::difference(sums_by_labels(exposition_before, "perimeter_claims_total", {"kind"}),
                        sums_by_labels(exposition, "perimeter_claims_total", {"kind"}));
  const json claim_sums =
      bench::difference(sums_by_labels(exposition_before, "perimeter_claim_seconds_sum", {"kind"}),
                        sums_by_labels(exposition, "perimeter_claim_seconds_sum", {"kind"}));
  const json claim_counts = bench::difference(
      sums_by_labels(exposition_before, "perimeter_claim_seconds_count", {"kind"}),
      sums_by_labels(exposition, "perimeter_claim_seconds_count", {"kind"}));
  const json claim_buckets = bench::difference(
      sums_by_labels(exposition_before, "perimeter_claim_seconds_bucket", {"kind", "le"}),
      sums_by_labels(exposition, "perimeter_claim_seconds_bucket", {"kind", "le"}));
  const auto operator_mean_ms = [&](const std::string& kind) {
    const double count = claim_counts.value(kind, 0.0);
    return count > 0 ? 1000.0 * claim_sums.value(kind, 0.0) / count : 0.0;
  };
  const json sessions_status = final_status.value("sessions", json::object());

  const json warm_pod_ms = distribution(warm_to_pod), cold_pod_ms = distribution(cold_to_pod);
  const json warm_ack_ms = distribution(warm_to_ack), cold_ack_ms = distribution(cold_to_ack);
  const json warm_ack_pod_ms = distribution(warm_ack_to_pod),
             cold_ack_pod_ms = distribution(cold_ack_to_pod);
  const auto ratio = [](const json& warm_figures, const json& cold_figures, const char* key) {
    const double w = warm_figures.value(key, 0.0), c = cold_figures.value(key, 0.0);
    return w > 0 && c > 0 ? json(c / w) : json(nullptr);
  };
  const std::vector<json> figures = {
      {{"figure", "sessions"}, {"value", sessions}},
      {{"figure", "pool"}, {"value", pool}},
      {{"figure", "max_concurrent_sessions"}, {"value", max_sessions}},
      {{"figure", "enqueue_seconds"}, {"value", ms_between(start, enqueue_done) / 1000}},
      {{"figure", "all_claimed_seconds"}, {"value", ms_between(start, all_claimed) / 1000}},
      {{"figure", "claims_warm_pods"}, {"value", warm_to_pod.size()}},
      {{"figure", "claims_cold_pods"}, {"value", cold_to_pod.size()}},
      {{"figure", "claims_total_by_kind"}, {"value", claims_by_kind}},
      {{"figure", "status_sessions"}, {"value", sessions_status}},
      {{"figure", "enqueue_to_pod_ms_warm"}, {"value", warm_pod_ms}},
      {{"figure", "enqueue_to_pod_ms_cold"}, {"value", cold_pod_ms}},
      {{"figure", "enqueue_to_pod_p50_cold_over_warm"},
       {"value", ratio(warm_pod_ms, cold_pod_ms, "p50")}},
      {{"figure", "enqueue_to_ack_ms_warm"}, {"value", warm_ack_ms}},
      {{"figure", "enqueue_to_ack_ms_cold"}, {"value", cold_ack_ms}},
      {{"figure", "ack_to_pod_ms_warm"}, {"value", warm_ack_pod_ms}},
      {{"figure", "ack_to_pod_ms_cold"}, {"value", cold_ack_pod_ms}},
      {{"figure", "operator_claim_mean_ms"},
       {"value", {{"warm", operator_mean_ms("warm")}, {"cold", operator_mean_ms("cold")}}}},
      {{"figure", "operator_claim_seconds_buckets"}, {"value", claim_buckets}},
      {{"figure", "pool_lowest_ready"}, {"value", lowest_ready}},
      {{"figure", "pool_back_seconds"}, {"value", ms_between(start, pool_back) / 1000}},
      {{"figure", "refilled_pods"}, {"value", refilled}},
      {{"figure", "refill_pods_per_second"},
       {"value", refill_seconds > 0 ? json(refilled / refill_seconds) : json(nullptr)}},
  };
  for (json line : figures) {
    line["bench"] = "warm_burst";
    std::cout << line.dump() << "\n";
  }
  const auto row = [](const char* what, const json& d) {
    if (d.value("n", 0) == 0) {
      std::printf("  %-34s none\n", what);
      return;
    }
    std::printf("  %-34s %4d  %7.0f %7.0f %7.0f %7.0f %7.0f\n", what, d.value("n", 0),
                d.value("min", 0.0), d.value("p50", 0.0), d.value("p90", 0.0), d.value("p99", 0.0),
                d.value("max", 0.0));
  };
  std::printf(
      "\n%d sessions enqueued at once (%.2f s) onto a pool of %d warm pods, "
      "maxConcurrentSessions %d:\n"
      "  claimed                            %zu warm, %zu cold (operator: %s; status: warm %lld, "
      "cold %lld)\n"
      "  every item had its pod after       %.2f s\n\n"
      "  from enqueue, ms                      n      min     p50     p90     p99     max\n",
      sessions, ms_between(start, enqueue_done) / 1000, pool, max_sessions, warm_to_pod.size(),
      cold_to_pod.size(), claims_by_kind.dump().c_str(),
      static_cast<long long>(sessions_status.value("warm", std::int64_t{-1})),
      static_cast<long long>(sessions_status.value("cold", std::int64_t{-1})),
      ms_between(start, all_claimed) / 1000);
  row("to the ack, warm", warm_ack_ms);
  row("to the ack, cold", cold_ack_ms);
  row("to the assignment (warm pod)", warm_pod_ms);
  row("to the pod's create (cold)", cold_pod_ms);
  std::printf("  from the ack, ms\n");
  row("to the assignment (warm pod)", warm_ack_pod_ms);
  row("to the pod's create (cold)", cold_ack_pod_ms);
  const json pod_ratio = ratio(warm_pod_ms, cold_pod_ms, "p50");
  std::printf(
      "  cold / warm, p50 to the pod        %s\n"
      "  operator, poll to claim (mean)     warm %.1f ms, cold %.1f ms\n\n"
      "  pool: lowest %zu ready during the burst; back at %d after %.2f s; %d pods made ready "
      "from the first assignment until then -> %.1f ready pods/s\n",
      pod_ratio.is_null() ? "-" : std::to_string(pod_ratio.get<double>()).c_str(),
      operator_mean_ms("warm"), operator_mean_ms("cold"), lowest_ready, pool,
      ms_between(start, pool_back) / 1000, refilled,
      refill_seconds > 0 ? refilled / refill_seconds : 0.0);
  return 0;
}
