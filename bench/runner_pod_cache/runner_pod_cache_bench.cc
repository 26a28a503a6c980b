// Benchmark: the memory the operator's runner-pod cache takes per session. N runner pods, each
// as the apiserver returns a finished one (the pod the operator built, plus managedFields and a
// status), are put in a runtime::Store twice in the same run: whole (the peer: what an informer
// without a transform keeps) and trimmed by trim_runner_pod (what the operator keeps). Heap in
// use is read from the allocator before and after each fill. Then the CPU the informer spends
// on one watch event of such a pod, decoding and trimming it, both ways in the same run: the
// whole event parsed then trimmed (the peer), and parsed through runner_pod_decode_filter() then
// trimmed (what the operator does). Prints a JSON line, then a summary.
//
//   runner_pod_cache_bench [--pods N]
#include <malloc.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "kube/resource_client.h"
#include "runtime/store.h"

namespace {

using nlohmann::json;
using namespace perimeter;
using namespace perimeter::agentenvironment;

size_t heap_in_use() {
  malloc_trim(0);
  return mallinfo2().uordblks;
}

json finished_runner_pod(const AgentEnvironment& env, int index) {
  const std::string id = "work_" + std::to_string(100000 + index);
  json pod = build_runner_pod(env, {id, "sesn_" + id, "secret", "2026-11-30T08:00:00.000000Z"});
  pod["metadata"]["uid"] = "5f1c0e6e-" + std::to_string(100000000 + index) + "-4d1b-9a7e";
  pod["metadata"]["resourceVersion"] = std::to_string(1000000 + index);
  pod["metadata"]["creationTimestamp"] = "2026-11-30T08:00:00Z";
  pod["metadata"]["annotations"]["perimeter.dev/outcome"] = "succeeded";
  pod["metadata"]["annotations"]["perimeter.dev/outcome-recorded-at"] = "2026-11-30T08:01:00Z";
  // As the apiserver records them: one entry per writer, each naming the fields it set.
  pod["metadata"]["managedFields"] = json::array(
      {{{"manager", "perimeter-operator"},
        {"operation", "Update"},
        {"apiVersion", "v1"},
        {"time", "2026-11-30T08:00:00Z"},
        {"fieldsType", "FieldsV1"},
        {"fieldsV1", {{"f:metadata", pod["metadata"]["labels"]}, {"f:spec", pod["spec"]}}}},
       {{"manager", "kubelet"},
        {"operation", "Update"},
        {"apiVersion", "v1"},
        {"time", "2026-11-30T08:00:30Z"},
        {"fieldsType", "FieldsV1"},
        {"subresource", "status"},
        {"fieldsV1", {{"f:status", {{"f:phase", json::object()}}}}}}});
  pod["spec"]["nodeName"] = "node-1";
  pod["spec"]["dnsPolicy"] = "ClusterFirst";
  pod["spec"]["schedulerName"] = "default-scheduler";
  pod["spec"].erase("schedulingGates");
  pod["status"] = {
      {"phase", "Succeeded"},
      {"hostIP", "10.0.0.2"},
      {"podIP", "10.244.0." + std::to_string(index % 250)},
      {"startTime", "2026-11-30T08:00:01Z"},
      {"qosClass", "Guaranteed"},
      {"conditions",
       json::array({{{"type", "Initialized"}, {"status", "True"}},
                    {{"type", "Ready"}, {"status", "False"}, {"reason", "PodCompleted"}},
                    {{"type", "ContainersReady"}, {"status", "False"}, {"reason", "PodCompleted"}},
                    {{"type", "PodScheduled"}, {"status", "True"}}})},
      {"containerStatuses",
       json::array({{{"name", "runner"},
                     {"image", env.runner.image},
                     {"imageID", "sha256:4b1f0c0d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"},
                     {"containerID", "containerd://" + std::to_string(index)},
                     {"ready", false},
                     {"restartCount", 0},
                     {"started", false},
                     {"state",
                      {{"terminated",
                        {{"reason", "Completed"},
                         {"exitCode", 0},
                         {"startedAt", "2026-11-30T08:00:02Z"},
                         {"finishedAt", "2026-11-30T08:00:50Z"}}}}}}})}};
  return pod;
}

double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int pods = 10000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--pods") == 0 && i + 1 < argc) {
      pods = std::atoi(argv[++i]);
    } else {
      std::cerr << "usage: runner_pod_cache_bench [--pods N]\n";
      return 2;
    }
  }
  if (pods <= 0) {
    std::cerr << "--pods must be a positive number\n";
    return 2;
  }
  AgentEnvironment env;
  env.name = "payments";
  env.namespace_ = "agents";
  env.uid = "3c1d2e4f-0000-4a5b-8c7d-000000000001";
  env.environment_id = "env_011CZkZ9X8Q3";
  env.runner.image = "registry.example.com/perimeter/perimeter-runner:0.4.0";
  env.runner.resources = {{"limits", {{"cpu", "1"}, {"memory", "1Gi"}}},
                          {"requests", {{"cpu", "250m"}, {"memory", "256Mi"}}}};

  const auto fill = [&](bool trimmed) {
    const size_t before = heap_in_use();
    auto store = std::make_unique<runtime::Store>();
    for (int i = 0; i < pods; ++i) {
      json pod = finished_runner_pod(env, i);
      if (trimmed) trim_runner_pod(pod);
      store->upsert(std::make_shared<const json>(std::move(pod)));
    }
    const size_t after = heap_in_use();
    const double per_pod_kib = static_cast<double>(after - before) / pods / 1024.0;
    store.reset();
    return per_pod_kib;
  };
  const double whole = fill(false);
  const double trimmed = fill(true);
  if (whole <= 0 || trimmed <= 0) {
    std::cerr << "the allocator reported no growth; no figures\n";
    return 1;
  }

  std::vector<std::string> lines;
  lines.reserve(pods);
  for (int i = 0; i < pods; ++i) {
    lines.push_back(json({{"type", "MODIFIED"}, {"object", finished_runner_pod(env, i)}}).dump());
  }
  const kube::JsonFilter event_filter = kube::watch_event_filter(*runner_pod_decode_filter());
  const auto decode_all = [&](const kube::JsonFilter* filter) {
    const double start = thread_cpu_seconds();
    size_t kept = 0;
    for (const auto& line : lines) {
      json pod = kube::decode_watch_event(line, filter).object;
      trim_runner_pod(pod);
      kept += pod["metadata"]["annotations"].size();  // every event's result is used
    }
    const double micros = (thread_cpu_seconds() - start) * 1e6 / pods;
    return kept == static_cast<size_t>(pods) * 4 ? micros : -1.0;
  };
  const double decode_whole_us = decode_all(nullptr);
  const double decode_filtered_us = decode_all(&event_filter);
  if (decode_whole_us <= 0 || decode_filtered_us <= 0) {
    std::cerr << "a decoded pod lost what the controller reads; no figures\n";
    return 1;
  }
  std::printf(
      "{\"bench\":\"runner_pod_cache\",\"pods\":%d,\"whole_kib_per_pod\":%.2f,"
      "\"trimmed_kib_per_pod\":%.2f,\"ratio\":%.2f,\"event_bytes\":%zu,"
      "\"decode_whole_us\":%.2f,\"decode_filtered_us\":%.2f,\"decode_ratio\":%.2f}\n",
      pods, whole, trimmed, whole / trimmed, lines.front().size(), decode_whole_us,
      decode_filtered_us, decode_whole_us / decode_filtered_us);
  std::printf(
      "%d finished runner pods cached: %.1f KiB each whole (an informer without a transform), "
      "%.1f KiB trimmed (the operator's cache): %.1fx less; %.1f MiB vs %.1f MiB in all\n",
      pods, whole, trimmed, whole / trimmed, whole * pods / 1024.0, trimmed * pods / 1024.0);
  std::printf(
      "one watch event of such a pod (%zu bytes), decoded and trimmed: %.1f us of CPU parsed "
      "whole, %.1f us through the decode filter: %.2fx less\n",
      lines.front().size(), decode_whole_us, decode_filtered_us,
      decode_whole_us / decode_filtered_us);
  return 0;
}
