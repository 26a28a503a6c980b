// Benchmark: the memory-store sync cost of perimeter-runner and of the official SDK worker
// (EnvironmentWorker.handleItem(), @anthropic-ai/sdk on its pinned Node), side by side against one
// perimeter-sim, alternately, `runs` times each. The session attaches a store of 100 memories of
// 10 KB; the agent's one call appends a line to every one of them; the session then terminates,
// so the final sync uploads 100 updates. Per run:
//   download    first heartbeat (the item's started_at) to the first tool result: session fetch,
//               the whole store downloaded, toolset, stream, the call itself
//   final sync  the tool result to the item's stopped_at: the final sync (a listing and 100
//               updates with their sha preconditions), the flush, the folders removed, the stop
//   cpu         user + system CPU time of the worker process (and its bash)
// Each run is checked: exit 0, every expected result, the store holding all 100 edits, no folder
// left. One JSON line per run, then medians and ratios; a run that failed prints no ratio and the
// bench exits 1.
//   memory_sync_bench [runs=5]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>

#include "runner_harness.h"

namespace perimeter {
namespace {

using namespace runner_harness;

constexpr int kMemories = 100;
constexpr std::size_t kMemoryBytes = 10 * 1024;

std::string memory_content(int i) {
  std::string line = "memory " + std::to_string(i) + ": the quick brown fox jumps over the dog\n";
  std::string out;
  while (out.size() + line.size() <= kMemoryBytes) out += line;
  out.append(kMemoryBytes - out.size(), '.');
  return out;
}

std::string scenario_yaml() {
  json memories = json::object();
  for (int i = 0; i < kMemories; ++i) {
    char path[32];
    std::snprintf(path, sizeof path, "/m/%03d.md", i);
    memories[path] = memory_content(i);
  }
  const json scenario = {
      {"name", "memory-sync-bench"},
      {"memory_stores", json::array({{{"name", "notes"}, {"memories", memories}}})},
      {"steps", json::array({{{"tool", "bash"},
                              {"input",
                               {{"command",
                                 "for f in memory/notes/m/*.md; do echo edited >> \"$f\"; done; "
                                 "ls memory/notes/m | wc -l"}}},
                              {"expect", {{"text", "100"}}}}})}};
  return scenario.dump();  // JSON is YAML
}

struct Run {
  double download_ms = 0;
  double final_sync_ms = 0;
  double cpu_ms = 0;
  bool ok = false;
  std::string why;
};

Run serve_once(const SimProcess& sim, Environment& environment, const std::string& yaml,
               const std::string& workdir, const std::vector<std::string>& argv) {
  std::filesystem::remove_all(workdir);
  std::filesystem::create_directories(workdir);
  const Claimed claimed = environment.enqueue_and_claim(yaml);
  RunnerProcess worker(sim, environment.id(), claimed, workdir, {}, argv);
  Run run;
  const int code = worker.wait(300s);
  run.cpu_ms = worker.cpu_ms();
  if (code != 0) {
    run.why = "exit " + std::to_string(code) + "\n" + worker.log();
    return run;
  }
  const json record = results_of(sim, claimed.session_id);
  if (!record.value("all_matched", false) || !record["unexpected"].empty()) {
    run.why = "results: " + record.dump();
    return run;
  }
  const json item = work_of(sim, claimed.work_id);
  const json admin =
      testing::http_call(sim.url(), "GET", "/admin/sessions/" + claimed.session_id).json();
  const json& memories = admin["memory_stores"][0]["memories"];
  int edited = 0;
  for (const json& memory : memories) {
    const std::string content = memory["content"];
    if (content.size() == kMemoryBytes + 7 && content.ends_with("edited\n")) ++edited;
  }
  if (memories.size() != kMemories || edited != kMemories) {
    run.why = "the store holds " + std::to_string(edited) + " of 100 edits";
    return run;
  }
  if (std::filesystem::exists(workdir + "/memory/notes")) {
    run.why = "the store folder was left behind";
    return run;
  }
  const json events =
      testing::http_call(sim.url(), "GET",
                         "/v1/sessions/" + claimed.session_id + "/events?limit=1000", "",
                         api_headers(kKey))
          .json();
  std::string result_at;
  for (const json& event : events["data"]) {
    if (event.value("type", "") == "user.tool_result") result_at = event["processed_at"];
  }
  if (result_at.empty() || !item["started_at"].is_string() || !item["stopped_at"].is_string()) {
    run.why = "no result, start or stop recorded";
    return run;
  }
  run.download_ms =
      std::chrono::duration<double, std::milli>(sim_time(result_at) - sim_time(item["started_at"]))
          .count();
  run.final_sync_ms =
      std::chrono::duration<double, std::milli>(sim_time(item["stopped_at"]) - sim_time(result_at))
          .count();
  run.ok = true;
  return run;
}

int bench_main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  if (env_or_empty("PERIMETER_SOURCE_DIR").empty()) {
    setenv("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR, 1);
  }
  if (env_or_empty("PERIMETER_BIN_DIR").empty()) {
    setenv("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR, 1);
  }
  const std::vector<std::string> official =
      official_worker_argv(env_or_empty("PERIMETER_SOURCE_DIR"));
  if (official.empty()) {
    std::cerr << "memory_sync_bench: the official SDK is not installed (make setup)\n";
    return 1;
  }
  SimProcess sim({"--lease-ttl-seconds", "60"});
  Environment environment(sim);
  TempDir dir;
  const std::string yaml = scenario_yaml();
  std::map<std::string, std::vector<Run>> results;
  int failed = 0;
  for (int i = 0; i < runs; ++i) {
    for (const std::string worker : {"official", "perimeter"}) {
      const Run run = serve_once(sim, environment, yaml, dir.path() + "/workspace",
                                 worker == "official" ? official : std::vector<std::string>{});
      results[worker].push_back(run);
      if (!run.ok) {
        ++failed;
        std::cerr << "memory_sync_bench: " << worker << " run " << i << " failed: " << run.why
                  << "\n";
      }
      std::cout << json({{"bench", "memory_sync"},
                         {"worker", worker},
                         {"memories", kMemories},
                         {"memory_bytes", kMemoryBytes},
                         {"run", i},
                         {"ok", run.ok},
                         {"download_ms", run.download_ms},
                         {"final_sync_ms", run.final_sync_ms},
                         {"cpu_ms", run.cpu_ms}})
                       .dump()
                << "\n";
    }
  }
  if (failed > 0) {
    std::cerr << "memory_sync_bench: " << failed << " of " << 2 * runs
              << " runs failed; no medians or ratios are printed\n";
    return 1;
  }
  auto med = [&results](const std::string& worker, double Run::*field) {
    std::vector<double> values;
    for (const Run& run : results[worker]) values.push_back(run.*field);
    return median(values);
  };
  const double download_official = med("official", &Run::download_ms);
  const double download_ours = med("perimeter", &Run::download_ms);
  const double sync_official = med("official", &Run::final_sync_ms);
  const double sync_ours = med("perimeter", &Run::final_sync_ms);
  const double cpu_official = med("official", &Run::cpu_ms);
  const double cpu_ours = med("perimeter", &Run::cpu_ms);
  auto ratio = [](double theirs, double ours) { return ours > 0 ? theirs / ours : 0; };
  std::cout << json({{"bench", "memory_sync"},
                     {"summary", true},
                     {"runs", runs},
                     {"median_download_ms",
                      {{"official", download_official}, {"perimeter", download_ours}}},
                     {"median_final_sync_ms",
                      {{"official", sync_official}, {"perimeter", sync_ours}}},
                     {"median_cpu_ms", {{"official", cpu_official}, {"perimeter", cpu_ours}}},
                     {"download_ratio", ratio(download_official, download_ours)},
                     {"final_sync_ratio", ratio(sync_official, sync_ours)},
                     {"cpu_ratio", ratio(cpu_official, cpu_ours)}})
                   .dump()
            << "\n";
  std::printf(
      "\nmemory-store sync, 100 memories of 10 KB: perimeter-runner vs official SDK worker "
      "(%d runs each, medians)\n"
      "  download (first heartbeat to first result)  %8.1f ms vs %8.1f ms  (%.2fx)\n"
      "  final sync of 100 edits, flush, stop         %8.1f ms vs %8.1f ms  (%.2fx)\n"
      "  worker CPU time                              %8.1f ms vs %8.1f ms  (%.2fx)\n",
      runs, download_ours, download_official, ratio(download_official, download_ours), sync_ours,
      sync_official, ratio(sync_official, sync_ours), cpu_ours, cpu_official,
      ratio(cpu_official, cpu_ours));
  return 0;
}

}  // namespace
}  // namespace perimeter

int main(int argc, char** argv) {
  return perimeter::bench_main(argc, argv);
}
