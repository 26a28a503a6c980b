// How fast the local control plane starts, warm (binaries in the page cache): the median of N
// starts, process start to the apiserver's /readyz ok, for etcd + kube-apiserver alone and for
// the full stack (controller manager, scheduler, KWOK with 3 Ready nodes). Also the time to tear
// down and what LocalCluster::start costs end to end (supervisor process included).
//
// Prints one JSON line per run and per summary, then a human summary. Never asserts a timing.
//   build/bin/local_cluster_bench [--runs N]
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/local_cluster.h"
#include "core/log.h"
#include "localcluster/cluster_dirs.h"
#include "localcluster/control_plane.h"
#include "localcluster/tools.h"

namespace {

using perimeter::localcluster::ControlPlane;
using perimeter::localcluster::ControlPlaneOptions;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

struct Config {
  std::string name;
  bool full;
};

struct Samples {
  std::vector<double> readyz_ms, ready_ms, stop_ms;
};

// One start of the control plane in this process: returns {/readyz ok, everything ready, stop}.
void measure_once(const Config& config, int run, Samples* samples, bool record) {
  ControlPlaneOptions options;
  options.dir =
      perimeter::localcluster::make_cluster_dir(perimeter::localcluster::default_clusters_root());
  options.tools_dir = perimeter::localcluster::tools_bin_dir();
  options.controller_manager = config.full;
  options.scheduler = config.full;
  options.kwok_nodes = config.full ? 3 : 0;
  perimeter::Logger quiet("bench", perimeter::StderrSink::instance(), perimeter::LogLevel::kWarn);
  const auto started = Clock::now();
  auto plane = ControlPlane::start(options, quiet);
  const double ready_ms = ms_since(started);
  const double readyz_ms = plane->describe()["phases"].value("apiserver_ready_ms", 0.0);
  const auto stopping = Clock::now();
  plane.reset();
  const double stop_ms = ms_since(stopping);
  std::filesystem::remove_all(options.dir);
  nlohmann::json line = {{"bench", "local_cluster_start"},
                         {"config", config.name},
                         {"run", run},
                         {"warmup", !record},
                         {"readyz_ms", readyz_ms},
                         {"all_ready_ms", ready_ms},
                         {"stop_ms", stop_ms}};
  std::cout << line.dump() << std::endl;
  if (!record) return;
  samples->readyz_ms.push_back(readyz_ms);
  samples->ready_ms.push_back(ready_ms);
  samples->stop_ms.push_back(stop_ms);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: local_cluster_bench [--runs N]\n";
      return 2;
    }
  }
  const std::vector<Config> configs = {{"etcd+apiserver", false},
                                       {"full: +controller-manager+scheduler+kwok(3 nodes)", true}};
  std::vector<nlohmann::json> summaries;
  try {
    for (const auto& config : configs) {
      Samples samples;
      measure_once(config, 0, &samples, false);  // warm-up: page cache, not counted
      for (int run = 1; run <= runs; ++run) measure_once(config, run, &samples, true);
      summaries.push_back({{"bench", "local_cluster_start_summary"},
                           {"config", config.name},
                           {"runs", runs},
                           {"median_readyz_ms", median(samples.readyz_ms)},
                           {"median_all_ready_ms", median(samples.ready_ms)},
                           {"median_stop_ms", median(samples.stop_ms)},
                           {"max_readyz_ms", *std::max_element(samples.readyz_ms.begin(),
                                                               samples.readyz_ms.end())}});
      std::cout << summaries.back().dump() << std::endl;
    }
    // The path tests take: supervisor process + control plane, until LocalCluster::start returns.
    std::vector<double> harness_ms;
    for (int run = 0; run <= runs; ++run) {
      const auto started = Clock::now();
      auto cluster = perimeter::testing::LocalCluster::start({});
      double ms = ms_since(started);
      cluster.reset();
      std::cout << nlohmann::json{{"bench", "local_cluster_harness_start"},
                                  {"run", run},
                                  {"warmup", run == 0},
                                  {"ms", ms}}
                       .dump()
                << std::endl;
      if (run > 0) harness_ms.push_back(ms);
    }
    summaries.push_back({{"bench", "local_cluster_harness_start_summary"},
                         {"config", "LocalCluster::start({}) incl. supervisor"},
                         {"runs", runs},
                         {"median_all_ready_ms", median(harness_ms)}});
    std::cout << summaries.back().dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "local_cluster_bench: " << e.what() << "\n";
    return 1;
  }

  std::cout << "\nlocal control plane, warm starts (median of " << runs << "; target < 10 s):\n";
  for (const auto& summary : summaries) {
    std::cout << "  " << std::left << std::setw(52) << summary["config"].get<std::string>();
    if (summary.contains("median_readyz_ms")) {
      std::cout << " /readyz ok " << std::fixed << std::setprecision(0)
                << summary["median_readyz_ms"].get<double>() << " ms, all ready "
                << summary["median_all_ready_ms"].get<double>() << " ms, stop "
                << summary["median_stop_ms"].get<double>() << " ms\n";
    } else {
      std::cout << " ready " << std::fixed << std::setprecision(0)
                << summary["median_all_ready_ms"].get<double>() << " ms\n";
    }
  }
  return 0;
}
