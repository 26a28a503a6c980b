// Benchmark: perimeter-runner against the official SDK worker (EnvironmentWorker.handleItem(),
// @anthropic-ai/sdk 1.12.0 on its pinned Node), each started as a runner pod starts it, serving
// the same scenario against perimeter-sim, alternately, `runs` times each. Prints one JSON line per
// run, then medians and ratios. Figures only: nothing is asserted.
//   runner_bench [runs=5] [scenario=builtin-tools]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>

#include "runner_harness.h"

namespace perimeter {
namespace {

using namespace runner_harness;

struct Run {
  double start_to_first_heartbeat_ms = 0;
  double peak_rss_kib = 0;
  double tool_round_trip_ms = 0;  // median over the scenario's calls
  bool ok = false;
};

Run serve_once(const SimProcess& sim, Environment& environment, const std::string& yaml,
               const std::string& workdir, const std::vector<std::string>& argv) {
  std::filesystem::remove_all(workdir);
  std::filesystem::create_directories(workdir);
  const Claimed claimed = environment.enqueue_and_claim(yaml);
  const auto launched = std::chrono::system_clock::now();
  RunnerProcess worker(sim, environment.id(), claimed, workdir, {}, argv);
  Run run;
  run.ok = worker.wait(120s) == 0;
  run.peak_rss_kib = static_cast<double>(worker.peak_rss_kib());
  const json item = work_of(sim, claimed.work_id);
  if (item["started_at"].is_string()) {
    run.start_to_first_heartbeat_ms =
        std::chrono::duration<double, std::milli>(sim_time(item["started_at"]) - launched).count();
  }
  // Each call's round trip: from the agent.tool_use to its user.tool_result, as the API saw it.
  const json events =
      testing::http_call(sim.url(), "GET",
                         "/v1/sessions/" + claimed.session_id + "/events?limit=1000", "",
                         api_headers(kKey))
          .json();
  std::map<std::string, std::chrono::system_clock::time_point> asked;
  std::vector<double> trips;
  for (const json& event : events["data"]) {
    const std::string type = event.value("type", "");
    if (type == "agent.tool_use") asked[event["id"]] = sim_time(event["processed_at"]);
    if (type == "user.tool_result" && asked.contains(event.value("tool_use_id", ""))) {
      trips.push_back(std::chrono::duration<double, std::milli>(sim_time(event["processed_at"]) -
                                                                asked[event["tool_use_id"]])
                          .count());
    }
  }
  run.tool_round_trip_ms = median(trips);
  return run;
}

int bench_main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const std::string scenario_name = argc > 2 ? argv[2] : "builtin-tools";
  if (env_or_empty("PERIMETER_SOURCE_DIR").empty()) {
    setenv("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR, 1);
  }
  if (env_or_empty("PERIMETER_BIN_DIR").empty()) {
    setenv("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR, 1);
  }
  const std::vector<std::string> official =
      official_worker_argv(env_or_empty("PERIMETER_SOURCE_DIR"));
  if (official.empty()) {
    std::cerr << "runner_bench: the official SDK is not installed (make setup)\n";
    return 1;
  }
  SimProcess sim({"--lease-ttl-seconds", "30"});
  Environment environment(sim);
  TempDir dir;
  const std::string yaml = scenario(scenario_name);
  std::map<std::string, std::vector<Run>> results;
  for (int i = 0; i < runs; ++i) {
    for (const std::string worker : {"official", "perimeter"}) {
      const Run run = serve_once(sim, environment, yaml, dir.path() + "/workspace",
                                 worker == "official" ? official : std::vector<std::string>{});
      results[worker].push_back(run);
      std::cout << json({{"bench", "runner"},
                         {"worker", worker},
                         {"scenario", scenario_name},
                         {"run", i},
                         {"ok", run.ok},
                         {"start_to_first_heartbeat_ms", run.start_to_first_heartbeat_ms},
                         {"peak_rss_kib", run.peak_rss_kib},
                         {"tool_round_trip_ms", run.tool_round_trip_ms}})
                       .dump()
                << "\n";
    }
  }
  // A figure of a run that failed is not a figure: no median, no ratio, and a failing exit.
  int failed = 0;
  for (const auto& [worker, worker_runs] : results) {
    for (const Run& run : worker_runs) {
      if (!run.ok) ++failed;
    }
  }
  if (failed > 0) {
    std::cerr << "runner_bench: " << failed << " of " << 2 * runs
              << " runs failed (\"ok\":false above); no medians or ratios are printed. Check "
                 "PERIMETER_BIN_DIR ("
              << env_or_empty("PERIMETER_BIN_DIR") << ") and `make setup`.\n";
    return 1;
  }
  auto med = [&results](const std::string& worker, double Run::*field) {
    std::vector<double> values;
    for (const Run& run : results[worker]) values.push_back(run.*field);
    return median(values);
  };
  const double start_official = med("official", &Run::start_to_first_heartbeat_ms);
  const double start_ours = med("perimeter", &Run::start_to_first_heartbeat_ms);
  const double rss_official = med("official", &Run::peak_rss_kib);
  const double rss_ours = med("perimeter", &Run::peak_rss_kib);
  const double trip_official = med("official", &Run::tool_round_trip_ms);
  const double trip_ours = med("perimeter", &Run::tool_round_trip_ms);
  std::cout << json({{"bench", "runner"},
                     {"summary", true},
                     {"runs", runs},
                     {"median_start_to_first_heartbeat_ms",
                      {{"official", start_official}, {"perimeter", start_ours}}},
                     {"median_peak_rss_kib", {{"official", rss_official}, {"perimeter", rss_ours}}},
                     {"median_tool_round_trip_ms",
                      {{"official", trip_official}, {"perimeter", trip_ours}}},
                     {"start_ratio", start_ours > 0 ? start_official / start_ours : 0},
                     {"rss_ratio", rss_ours > 0 ? rss_official / rss_ours : 0},
                     {"round_trip_ratio", trip_ours > 0 ? trip_official / trip_ours : 0}})
                   .dump()
            << "\n";
  std::printf(
      "\nperimeter-runner vs official SDK worker (%s, %d runs each, medians)\n"
      "  start to first heartbeat  %8.1f ms  vs %8.1f ms   (%.1fx faster)\n"
      "  peak RSS                  %8.0f KiB vs %8.0f KiB  (%.1fx less)\n"
      "  tool round trip           %8.2f ms  vs %8.2f ms   (%.1fx)\n",
      scenario_name.c_str(), runs, start_ours, start_official,
      start_ours > 0 ? start_official / start_ours : 0, rss_ours, rss_official,
      rss_ours > 0 ? rss_official / rss_ours : 0, trip_ours, trip_official,
      trip_ours > 0 ? trip_official / trip_ours : 0);
  return 0;
}

}  // namespace
}  // namespace perimeter

int main(int argc, char** argv) {
  return perimeter::bench_main(argc, argv);
}
