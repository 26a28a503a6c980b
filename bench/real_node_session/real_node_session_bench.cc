// Where one session's time goes on the local real node: enqueue -> the operator claims it and
// creates the pod -> the scheduler binds it -> the kubelet admits it -> containerd/runc make the
// sandbox and start the container -> perimeter-runner takes the lease -> the first tool result ->
// the item stopped. Each run starts a fresh cluster with a real node (its start phases are
// figures too) and serves two sessions one after the other: the node's first pod, then a second.
//
// Timestamps come from where each step happens, all on this machine's clock: perimeter-sim
// (created_at, acknowledged_at, started_at = first heartbeat, stopped_at, events' processed_at;
// microseconds), the operator's log (milliseconds), the scheduler's events.k8s.io Event
// (eventTime, microseconds), the kubelet's klog lines (microseconds), containerd's log and the
// CRI container log (nanoseconds). Kubernetes' object timestamps (1 s) are not used.
//
// Prints one JSON line per session and a summary line (medians), then a human summary. Never
// asserts a timing.
//   build/bin/real_node_session_bench [--runs N]      (root; `make build setup` first)
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"
#include "operator/operator_process.h"
#include "process/process.h"

namespace perimeter {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Milliseconds since the epoch of a UTC date and time plus a decimal fraction of a second.
double epoch_ms(int year, int month, int day, int hour, int minute, int second,
                const std::string& fraction) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const double whole = static_cast<double>(timegm(&tm)) * 1000;
  return fraction.empty() ? whole : whole + std::stod("0." + fraction) * 1000;
}

// "2026-11-23T09:29:34.341984795Z" (any number of fraction digits, or none).
std::optional<double> parse_rfc3339_ms(const std::string& text) {
  int year, month, day, hour, minute, second;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &year, &month, &day, &hour, &minute,
                  &second) != 6) {
    return std::nullopt;
  }
  std::string fraction;
  if (text.size() > 20 && text[19] == '.') {
    const auto end = text.find_first_not_of("0123456789", 20);
    fraction = text.substr(20, end == std::string::npos ? std::string::npos : end - 20);
  }
  return epoch_ms(year, month, day, hour, minute, second, fraction);
}

// A klog header, "I1123 09:29:34.174809 ...": no year (this one's), UTC on these machines.
std::optional<double> parse_klog_ms(const std::string& line) {
  int month, day, hour, minute, second;
  char micros[16] = {0};
  if (line.size() < 21 || std::sscanf(line.c_str() + 1, "%2d%2d %2d:%2d:%2d.%15[0-9]", &month, &day,
                                      &hour, &minute, &second, micros) != 6) {
    return std::nullopt;
  }
  const std::time_t now = std::time(nullptr);
  std::tm today{};
  gmtime_r(&now, &today);
  return epoch_ms(today.tm_year + 1900, month, day, hour, minute, second, micros);
}

// The time of the first line of a log that contains every one of `needles`.
std::optional<double> first_line_with(const std::string& log_path,
                                      const std::vector<std::string>& needles,
                                      std::optional<double> (*parse)(const std::string&)) {
  std::ifstream in(log_path);
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (const auto& needle : needles) all = all && line.find(needle) != std::string::npos;
    if (all) return parse(line);
  }
  return std::nullopt;
}

std::optional<double> containerd_line_ms(const std::string& line) {
  const auto at = line.find("time=\"");
  if (at == std::string::npos) return std::nullopt;
  return parse_rfc3339_ms(line.substr(at + 6));
}

std::optional<double> operator_line_ms(const std::string& line) {
  const auto parsed = json::parse(line, nullptr, false);
  if (!parsed.is_object() || !parsed.contains("ts")) return std::nullopt;
  return parse_rfc3339_ms(parsed.value("ts", ""));
}

std::optional<double> cri_log_line_ms(const std::string& line) {
  return parse_rfc3339_ms(line);  // "<RFC 3339 nano> stderr F <text>"
}

// The steps of one session, in order, and which part of the system each gap belongs to.
struct Segment {
  const char* name;
  const char* from;
  const char* to;
  const char* owner;
};
constexpr Segment kSegments[] = {
    {"claim_and_pod_create", "enqueued", "pod_created", "operator (poll, Secret, Pod)"},
    {"schedule", "pod_created", "scheduled", "kube-scheduler"},
    {"kubelet_admit", "scheduled", "sandbox_requested", "kubelet (watch, admit, volumes)"},
    {"sandbox", "sandbox_requested", "sandbox_ready", "runtime (containerd, runc pause, CNI)"},
    {"container_start", "sandbox_ready", "container_started",
     "kubelet + runtime (CreateContainer, StartContainer)"},
    {"runner_start", "container_started", "first_heartbeat", "runner (exec to first lease beat)"},
    {"first_tool", "first_heartbeat", "first_tool_result", "runner (stream, tool, result post)"},
    {"rest_of_session", "first_tool_result", "stopped", "runner + scripted agent (7 more tools)"},
};

class SessionBench {
 public:
  SessionBench(std::string source_dir, std::string bin_dir)
      : source_dir_(std::move(source_dir)), bin_dir_(std::move(bin_dir)) {}

  // One fresh cluster, two sessions; appends one JSON object per session to `sessions` and
  // returns the cluster's start figures.
  json run(int run_index, std::vector<json>* sessions) {
    testing::LocalClusterOptions options;
    options.controller_manager = true;
    options.scheduler = true;
    options.real_node = true;
    options.images = {testing::runner_image_archive()};
    auto cluster = testing::LocalCluster::start(options);
    const json node = cluster->real_node();
    json start = {{"bench", "real_node_session_cluster"},
                  {"run", run_index},
                  {"cluster_phases_ms", cluster->phases()},
                  {"node_phases_ms", node.at("phases")}};
    std::cout << start.dump() << std::endl;

    const std::string kubeconfig = cluster->kubeconfig_path();
    const std::string kubectl =
        localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") + " --kubeconfig " +
        kubeconfig;
    const std::string apply = kubectl + " apply -f " + source_dir_ + "/crds/ >/dev/null && " +
                              kubectl + " wait --for condition=established --timeout=60s" +
                              " crd/agentenvironments.perimeter.dev >/dev/null";
    if (std::system(apply.c_str()) != 0) throw std::runtime_error("applying the CRDs failed");

    auto config = kube::Config::from_kubeconfig_file(kubeconfig);
    config.qps = 0;
    kube::HttpTransport transport(config);
    prometheus::Registry registry;
    kube::ClientMetrics metrics(registry);
    kube::ResourceClient namespaces(transport, kube::resources::namespaces(), metrics);
    kube::ResourceClient secrets(transport, kube::resources::secrets(), metrics);
    kube::ResourceClient pods(transport, kube::resources::pods(), metrics);
    kube::ResourceClient environments(
        transport, {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true},
        metrics);
    kube::ResourceClient events(transport, {"events.k8s.io", "v1", "events", "Event", true},
                                metrics);
    const std::string ns = "bench";
    namespaces.create(
        "", {{"apiVersion", "v1"},
             {"kind", "Namespace"},
             {"metadata",
              {{"name", ns}, {"labels", {{"pod-security.kubernetes.io/enforce", "restricted"}}}}}});

    testing::SimProcess sim({"--address", node.at("gateway").get<std::string>()});
    const auto created =
        testing::http_call(sim.url(), "POST", "/admin/environments", json{{"name", ns}}.dump())
            .json();
    const std::string environment_id = created.at("id");
    const std::string key = created.at("key");
    secrets.create(
        ns, {{"apiVersion", "v1"},
             {"kind", "Secret"},
             {"metadata",
              {{"name", "env-key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
             {"stringData", {{"environment-key", key}}}});
    environments.create(
        ns, {{"apiVersion", "perimeter.dev/v1alpha1"},
             {"kind", "AgentEnvironment"},
             {"metadata", {{"name", "agents"}}},
             {"spec",
              {{"environmentId", environment_id},
               {"environmentKeySecretRef", {{"name", "env-key"}}},
               {"apiBaseUrl", sim.url()},
               {"retention", {{"succeededSeconds", 3600}}},
               {"runner",
                {{"image", testing::kRunnerImage},
                 {"imagePullPolicy", "Never"},
                 {"nodeSelector", {{localcluster::kRealNodeLabel, "true"}}},
                 {"tolerations",
                  {{{"key", localcluster::kRealNodeTaintKey},
                    {"operator", "Equal"},
                    {"value", "true"},
                    {"effect", "NoSchedule"}}}},
                 {"env", {{{"name", "PERIMETER_MAX_IDLE_MS"}, {"value", "3000"}}}}}}}}});
    const std::string operator_log = cluster->dir() + "/bench-operator.log";
    testing::OperatorProcess operator_process(
        testing::OperatorProcessOptions{bin_dir_ + "/perimeter-operator",
                                        kubeconfig,
                                        operator_log,
                                        {"--allowed-api-hosts", sim.url()}});
    // The operator is up and polling before the first session is enqueued, as in a cluster
    // that has been running.
    wait_for(
        [&] {
          return read_file(operator_log).find("started the session poller") != std::string::npos;
        },
        seconds(60), "the operator to start polling");

    const std::string scenario =
        read_file(source_dir_ + "/sim/scenarios/conformance/builtin-tools.yaml");
    const std::string node_dir =
        std::filesystem::path(node.at("containerd_socket").get<std::string>()).parent_path();
    for (const char* ordinal : {"first", "second"}) {
      const auto reply = testing::http_call(sim.url(), "POST",
                                            "/admin/environments/" + environment_id + "/sessions",
                                            json{{"scenario_yaml", scenario}}.dump());
      if (reply.status != 201) throw std::runtime_error("enqueue: " + reply.body);
      const std::string work_id = reply.json().at("work_id");
      const std::string session_id = reply.json().at("session_id");
      json pod;
      wait_for(
          [&] {
            const auto item = testing::http_call(sim.url(), "GET", "/admin/work/" + work_id).json();
            if (item.value("state", "") != "stopped") return false;
            for (const auto& candidate : pods.list(ns).value("items", json::array())) {
              const auto annotations = candidate["metadata"].value("annotations", json::object());
              if (annotations.value("perimeter.dev/work-id", "") == work_id &&
                  candidate["status"].value("phase", "") == "Succeeded") {
                pod = candidate;
                return true;
              }
            }
            return false;
          },
          seconds(300), "session " + session_id + " to finish and its pod to succeed");

      json stamps = timestamps(sim, key, work_id, session_id, pod, node, node_dir, operator_log,
                               events.list(ns).value("items", json::array()));
      json line = {{"bench", "real_node_session"},
                   {"run", run_index},
                   {"session", ordinal},
                   {"work_id", work_id},
                   {"pod", pod["metadata"]["name"]},
                   {"timestamps_epoch_ms", stamps}};
      const double enqueued = stamps.value("enqueued", 0.0);
      for (const auto& segment : kSegments) {
        if (stamps.contains(segment.from) && stamps.contains(segment.to)) {
          line["segments_ms"][segment.name] =
              stamps[segment.to].get<double>() - stamps[segment.from].get<double>();
        }
      }
      for (const char* milestone : {"pod_created", "acknowledged", "container_started",
                                    "first_heartbeat", "first_tool_result", "stopped"}) {
        if (stamps.contains(milestone))
          line["since_enqueue_ms"][milestone] = stamps[milestone].get<double>() - enqueued;
      }
      std::cout << line.dump() << std::endl;
      sessions->push_back(line);
    }
    return start;
  }

 private:
  template <typename Pred>
  static void wait_for(Pred done, seconds limit, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("timed out waiting for " + what);
      std::this_thread::sleep_for(milliseconds(20));
    }
  }

  // Every milestone of one session, in milliseconds since the epoch; a missing one is left out.
  static json timestamps(const testing::SimProcess& sim, const std::string& key,
                         const std::string& work_id, const std::string& session_id, const json& pod,
                         const json& node, const std::string& node_dir,
                         const std::string& operator_log, const json& events) {
    json stamps = json::object();
    const auto put = [&](const char* name, std::optional<double> value) {
      if (value) stamps[name] = *value;
    };
    const auto item = testing::http_call(sim.url(), "GET", "/admin/work/" + work_id).json();
    put("enqueued", parse_rfc3339_ms(item.value("created_at", "")));
    put("acknowledged", parse_rfc3339_ms(item.value("acknowledged_at", "")));
    put("first_heartbeat", parse_rfc3339_ms(item.value("started_at", "")));
    put("stopped", parse_rfc3339_ms(item.value("stopped_at", "")));
    const auto session_events =
        testing::http_call(sim.url(), "GET", "/v1/sessions/" + session_id + "/events?limit=1000",
                           "",
                           {{"anthropic-version", "2023-06-01"},
                            {"anthropic-beta", "managed-agents-2026-04-01"},
                            {"Authorization", "Bearer " + key}})
            .json();
    for (const auto& event : session_events.value("data", json::array())) {
      if (event.value("type", "") == "user.tool_result") {
        put("first_tool_result", parse_rfc3339_ms(event.value("processed_at", "")));
        break;
      }
    }
    put("pod_created",
        first_line_with(operator_log, {"\"runner pod created\"", work_id}, operator_line_ms));
    const std::string pod_name = pod["metadata"]["name"];
    const std::string uid = pod["metadata"]["uid"];
    for (const auto& event : events) {
      if (event.value("reason", "") == "Scheduled" &&
          event.value("regarding", json::object()).value("name", "") == pod_name) {
        put("scheduled", parse_rfc3339_ms(event.value("eventTime", "")));
      }
    }
    const std::string kubelet_log = node.at("kubelet_log");
    const std::string containerd_log = node.at("containerd_log");
    put("kubelet_first_seen", first_line_with(kubelet_log, {uid}, parse_klog_ms));
    const std::string sandbox =
        "RunPodSandbox for &PodSandboxMetadata{Name:" + pod_name + ",Uid:" + uid;
    put("sandbox_requested", first_line_with(containerd_log, {sandbox}, containerd_line_ms));
    put("sandbox_ready",
        first_line_with(containerd_log, {sandbox, "returns sandbox id"}, containerd_line_ms));
    const auto statuses = pod["status"].value("containerStatuses", json::array());
    if (!statuses.empty()) {
      std::string container_id = statuses[0].value("containerID", "");
      container_id = container_id.substr(container_id.find("://") + 3);
      put("container_started",
          first_line_with(containerd_log,
                          {"StartContainer for \\\"" + container_id, "returns successfully"},
                          containerd_line_ms));
    }
    const std::string container_log = node_dir + "/pod-logs/" +
                                      pod["metadata"].value("namespace", "") + "_" + pod_name +
                                      "_" + uid + "/runner/0.log";
    put("runner_first_log_line", first_line_with(container_log, {" F "}, cri_log_line_ms));
    return stamps;
  }

  std::string source_dir_, bin_dir_;
};

}  // namespace
}  // namespace perimeter

int main(int argc, char** argv) {
  using nlohmann::json;
  using perimeter::median;
  int runs = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: real_node_session_bench [--runs N]\n";
      return 2;
    }
  }
  const std::string source =
      perimeter::env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = perimeter::env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // SimProcess and the runner image find it there

  std::map<std::string, std::vector<double>> node_phases;
  std::map<std::string, std::map<std::string, std::vector<double>>> segments, milestones;
  perimeter::SessionBench bench(source, bin);
  try {
    for (int run = 0; run < runs; ++run) {
      std::vector<json> sessions;
      const json start = bench.run(run, &sessions);
      for (const auto& [phase, ms] : start["node_phases_ms"].items())
        node_phases[phase].push_back(ms);
      node_phases["cluster_total_ms"].push_back(start["cluster_phases_ms"].value("total_ms", 0.0));
      for (const auto& session : sessions) {
        const std::string ordinal = session["session"];
        const json session_segments = session.value("segments_ms", json::object());
        for (const auto& [name, ms] : session_segments.items())
          segments[ordinal][name].push_back(ms);
        const json session_milestones = session.value("since_enqueue_ms", json::object());
        for (const auto& [name, ms] : session_milestones.items())
          milestones[ordinal][name].push_back(ms);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "real_node_session_bench: " << e.what() << "\n";
    return 1;
  }

  json summary = {{"bench", "real_node_session_summary"}, {"runs", runs}};
  for (const auto& [phase, values] : node_phases) summary["node_start_ms"][phase] = median(values);
  for (const auto& [ordinal, values] : segments)
    for (const auto& [name, samples] : values)
      summary[ordinal]["segments_ms"][name] = median(samples);
  for (const auto& [ordinal, values] : milestones)
    for (const auto& [name, samples] : values)
      summary[ordinal]["since_enqueue_ms"][name] = median(samples);
  std::cout << summary.dump() << std::endl;

  const auto& start = summary["node_start_ms"];
  std::cout << std::fixed << std::setprecision(0) << "\nmedians of " << runs
            << " runs (each a fresh cluster)\n"
            << "  cluster with real node ready " << start.value("cluster_total_ms", 0.0)
            << " ms; node phases from its start: containerd ready "
            << start.value("containerd_ready_ms", 0.0) << " ms, images imported "
            << start.value("images_imported_ms", 0.0) << " ms, Node Ready "
            << start.value("node_ready_ms", 0.0) << " ms\n";
  for (const char* ordinal : {"first", "second"}) {
    if (!summary.contains(ordinal)) continue;
    const auto& part = summary[ordinal];
    std::cout << "\n  " << ordinal
              << " session on the node (builtin-tools scenario, 8 tool calls)\n";
    for (const auto& segment : perimeter::kSegments) {
      const auto& values = part.value("segments_ms", json::object());
      if (!values.contains(segment.name)) continue;
      std::cout << "    " << std::left << std::setw(22) << segment.name << std::right
                << std::setw(7) << values[segment.name].get<double>() << " ms   " << segment.owner
                << "\n";
    }
    const auto& since = part.value("since_enqueue_ms", json::object());
    std::cout << "    enqueue -> pod created " << since.value("pod_created", 0.0)
              << " ms, -> container started " << since.value("container_started", 0.0)
              << " ms, -> first tool result " << since.value("first_tool_result", 0.0)
              << " ms, -> item stopped " << since.value("stopped", 0.0) << " ms\n";
  }
  return 0;
}
