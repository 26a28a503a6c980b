// What the real node costs at start and stop, measured side by side in one run: the local
// control plane (etcd, apiserver, controller manager, scheduler) started with and without the
// real node, alternating so both see the same machine load; the node's own phases (containerd
// ready, images imported, Node Ready); and, with the node, one probe pod from create to
// Succeeded (scheduling, sandbox, container, exit). Medians of N runs after one warm-up each.
//
// Prints one JSON line per run and per summary, then a human summary. Never asserts a timing.
//   build/bin/real_node_bench [--runs N]      (root; `make deps tools setup` first)
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "localcluster/cluster_dirs.h"
#include "localcluster/control_plane.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"

namespace {

using perimeter::localcluster::ControlPlane;
using perimeter::localcluster::ControlPlaneOptions;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

nlohmann::json probe_pod() {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", "bench-probe"}}},
          {"spec",
           {{"restartPolicy", "Never"},
            {"automountServiceAccountToken", false},
            {"nodeSelector", {{perimeter::localcluster::kRealNodeLabel, "true"}}},
            {"tolerations",
             {{{"key", perimeter::localcluster::kRealNodeTaintKey}, {"operator", "Exists"}}}},
            {"containers",
             {{{"name", "probe"},
               {"image", "localhost/perimeter/node-probe:1"},
               {"imagePullPolicy", "Never"},
               {"securityContext",
                {{"runAsNonRoot", true},
                 {"runAsUser", 65532},
                 {"readOnlyRootFilesystem", true},
                 {"allowPrivilegeEscalation", false},
                 {"capabilities", {{"drop", {"ALL"}}}},
                 {"seccompProfile", {{"type", "RuntimeDefault"}}}}}}}}}}};
}

// Creates the probe pod and waits for Succeeded; returns the milliseconds it took, or -1.
double pod_to_succeeded_ms(ControlPlane& plane) {
  auto api = plane.admin_client();
  const std::string pods = "/api/v1/namespaces/default/pods";
  // The default ServiceAccount exists once the controller manager is ready.
  const auto started = Clock::now();
  auto created = api->request("POST", pods, probe_pod().dump());
  if (created.status != 201) {
    std::cerr << "creating the probe pod: HTTP " << created.status << ": " << created.body << "\n";
    return -1;
  }
  while (ms_since(started) < 120000) {
    auto pod = api->get(pods + "/bench-probe");
    if (pod.status == 200) {
      const auto phase = nlohmann::json::parse(pod.body)["status"].value("phase", "");
      if (phase == "Succeeded") return ms_since(started);
      if (phase == "Failed") break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::cerr << "the probe pod did not succeed\n";
  return -1;
}

struct Samples {
  std::map<std::string, std::vector<double>> values;
  void add(const std::string& key, double value) { values[key].push_back(value); }
};

void measure_once(bool real_node, int run, Samples* samples) {
  ControlPlaneOptions options;
  options.dir =
      perimeter::localcluster::make_cluster_dir(perimeter::localcluster::default_clusters_root());
  options.tools_dir = perimeter::localcluster::tools_bin_dir();
  options.controller_manager = true;
  options.scheduler = true;
  options.real_node = real_node;
  perimeter::Logger quiet("bench", perimeter::StderrSink::instance(), perimeter::LogLevel::kWarn);
  const auto started = Clock::now();
  auto plane = ControlPlane::start(options, quiet);
  const double ready_ms = ms_since(started);
  const auto described = plane->describe();
  nlohmann::json line = {{"bench", "real_node_start"},
                         {"config", real_node ? "control plane + real node" : "control plane"},
                         {"run", run},
                         {"warmup", run == 0},
                         {"all_ready_ms", ready_ms}};
  if (real_node) {
    const auto phases = described["real_node"]["phases"];
    line["node_phases_ms"] = phases;
    line["pod_create_to_succeeded_ms"] = pod_to_succeeded_ms(*plane);
  }
  const auto stopping = Clock::now();
  plane.reset();
  line["stop_ms"] = ms_since(stopping);
  std::filesystem::remove_all(options.dir);
  std::cout << line.dump() << std::endl;
  if (run == 0) return;
  samples->add("all_ready_ms", ready_ms);
  samples->add("stop_ms", line["stop_ms"]);
  if (real_node) {
    for (const auto& [phase, ms] : line["node_phases_ms"].items()) samples->add(phase, ms);
    samples->add("pod_create_to_succeeded_ms", line["pod_create_to_succeeded_ms"]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: real_node_bench [--runs N]\n";
      return 2;
    }
  }
  Samples without, with;
  try {
    for (int run = 0; run <= runs; ++run) {  // run 0 warms the page cache; alternated
      measure_once(false, run, &without);
      measure_once(true, run, &with);
    }
  } catch (const std::exception& e) {
    std::cerr << "real_node_bench: " << e.what() << "\n";
    return 1;
  }
  nlohmann::json summary = {{"bench", "real_node_start_summary"}, {"runs", runs}};
  for (const auto& [key, values] : without.values) summary["control_plane"][key] = median(values);
  for (const auto& [key, values] : with.values) summary["with_real_node"][key] = median(values);
  std::cout << summary.dump() << std::endl;

  const auto& a = summary["control_plane"];
  const auto& b = summary["with_real_node"];
  std::cout << std::fixed << std::setprecision(0) << "\nmedian of " << runs << " warm runs\n"
            << "  control plane (etcd, apiserver, controller manager, scheduler) ready: "
            << a.value("all_ready_ms", 0.0) << " ms, stop " << a.value("stop_ms", 0.0) << " ms\n"
            << "  the same + real node ready:                                          "
            << b.value("all_ready_ms", 0.0) << " ms, stop " << b.value("stop_ms", 0.0) << " ms\n"
            << "    node phases from its start: containerd ready "
            << b.value("containerd_ready_ms", 0.0) << " ms, images imported "
            << b.value("images_imported_ms", 0.0) << " ms, Node Ready "
            << b.value("node_ready_ms", 0.0) << " ms\n"
            << "  probe pod, create -> Succeeded on the real node: "
            << b.value("pod_create_to_succeeded_ms", 0.0) << " ms\n";
  return 0;
}
