// Where one session's time goes on the local real node: enqueue -> the operator claims it and
// creates the pod -> the scheduler binds it -> the kubelet admits it -> containerd/runc make the
// sandbox and start the container -> perimeter-runner takes the lease -> the first tool result ->
// the item stopped. Each run starts a fresh cluster with a real node (its start phases are
// figures too) and serves, one after the other:
//   - two sessions with the default emptyDir workspace: the node's first pod, then a second;
//   - one session of three turns whose workspace is its own PersistentVolumeClaim
//     (spec.runner.workspace.persistentVolumeClaim, bound by the node's host-folder provisioner):
//     turn one makes the claim; turn two is sent as turn one's item stops, so its item waits for
//     turn one's pod to end (a phase of its own, "waited for previous pod"); turn three is sent
//     once turn two's pod has ended, as a user coming back later would;
//   - with --warm [N] (default 20): N sessions on an environment with a warm pool (minReady 2)
//     and N cold ones, in turns, each warm one sent once the pool has a ready pod; the operator
//     serves warm runners their assignments at the node's gateway address
//     (--warm-assignment-address). p50 and p99 over every session from enqueue and from the ack:
//     the ack, the assignment (the operator's log), the runner receiving it (its log), its
//     confirm (the pod's annotation, then the runner's log), the runner serving its item (its
//     log), its first heartbeat, its session runner's start and first tool call (its log), its
//     first tool result.
//
// Timestamps come from where each step happens, all on this machine's clock: perimeter-sim
// (created_at, acknowledged_at, started_at = first heartbeat, stopped_at, events' processed_at;
// microseconds), the operator's log (milliseconds), the provisioner's lines in the supervisor's
// log (milliseconds), the scheduler's events.k8s.io Event (eventTime, microseconds), the kubelet's
// klog lines (microseconds), containerd's log and the CRI container log (nanoseconds).
// Kubernetes' object timestamps (1 s) are not used.
//
// Prints one JSON line per session and a summary line (medians, min and max over the runs), then a
// human summary with the ratios of the workspace turns. Never asserts a timing.
//   build/bin/real_node_session_bench [--runs N] [--warm [N]]   (root; `make build setup` first)
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/local_volumes.h"
#include "localcluster/ports.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"
#include "operator/operator_process.h"
#include "operator/pod_tracker.h"
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

// The time of the last line of a log that parses.
std::optional<double> last_line_of(const std::string& log_path,
                                   std::optional<double> (*parse)(const std::string&)) {
  std::ifstream in(log_path);
  std::optional<double> last;
  for (std::string line; std::getline(in, line);) {
    if (const auto at = parse(line)) last = at;
  }
  return last;
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

// The sessions of one run, in the order they are served; each is a column of the summary.
struct SessionKind {
  const char* key{};
  const char* title{};
};
constexpr SessionKind kKinds[] = {
    {"first", "emptyDir, the node's first pod"},
    {"second", "emptyDir, a later pod"},
    {"workspace_turn_one", "PVC turn one: the claim made and bound"},
    {"workspace_turn_two", "PVC turn two: sent as turn one's item stopped"},
    {"workspace_turn_three", "PVC turn three: sent after turn two's pod ended"},
};

// The steps of one session, in order, and which part of the system each gap belongs to. A step
// with `only_with` counts for the sessions that have that stamp, one with `only_without` for the
// others: an item that waited for the session's previous pod has its wait where the others have
// their pod create.
struct Segment {
  const char* name{};
  const char* from{};
  const char* to{};
  const char* owner{};
  const char* only_with{};
  const char* only_without{};
};
constexpr const char* kWaited = "workspace_wait_logged";
constexpr Segment kSegments[] = {
    {"claim", "enqueued", "acknowledged", "operator (poll, Secret, ack)"},
    {"pod_create", "acknowledged", "pod_created", "operator (workspace claim or its stamp, Pod)",
     nullptr, kWaited},
    {"waited_for_previous_pod", "acknowledged", "pod_created",
     "the session's previous pod ending, then the operator's next pass (and the Pod)", kWaited},
    {"schedule", "pod_created", "scheduled", "kube-scheduler (turn one: and the claim's binding)"},
    {"kubelet_admit", "scheduled", "sandbox_requested", "kubelet (watch, admit, volumes)"},
    {"sandbox", "sandbox_requested", "sandbox_ready", "runtime (containerd, runc pause, CNI)"},
    {"container_start", "sandbox_ready", "container_started",
     "kubelet + runtime (CreateContainer, StartContainer)"},
    {"lease", "container_started", "first_heartbeat", "runner (exec to its first lease heartbeat)"},
    {"first_tool", "first_heartbeat", "first_tool_result", "runner (stream, tool, result post)"},
    {"rest_of_session", "first_tool_result", "stopped",
     "runner + scripted agent (the other tools; a turn that ends idle: the 3 s idle countdown)"},
};
// Parts of the steps above, each shown under the step it is part of, not added to the steps.
struct Detail {
  const char* under{};
  Segment part{};
};
constexpr Detail kDetails[] = {
    {"waited_for_previous_pod",
     {"previous_runner_running", "acknowledged", "wait_previous_runner_gone",
      "of the wait: the previous runner not yet ended (to its last log line)", kWaited}},
    {"waited_for_previous_pod",
     {"previous_pod_reported_ended", "wait_previous_runner_gone", "wait_previous_pod_succeeded",
      "of the wait: the kubelet reporting the pod Succeeded (seen by a watch)", kWaited}},
    {"waited_for_previous_pod",
     {"operator_next_pass", "wait_previous_pod_succeeded", "pod_created",
      "of the wait: the operator's next pass (every 1-3 s after a long poll), the Pod", kWaited}},
    {"schedule",
     {"claim_to_volume", "claim_created", "volume_provisioned",
      "the claim made -> its volume provisioned (our provisioner, a pass every 500 ms)"}},
};

// The session of three turns on one claim (see the top of this file). Turn one installs a small
// tool; the later turns read what it left, so a turn that did not mount the claim fails.
constexpr const char* kWorkspaceScenario = R"(name: workspace-turns
turns:
  - prompt: Start a plan and install the greeting tool.
    steps:
      - tool: write
        input: {file_path: notes/plan.txt, content: "1. write the plan\n"}
        expect: {is_error: false, text: "wrote 18 bytes to notes/plan.txt"}
      - tool: bash
        input: {command: "mkdir -p bin && printf 'echo greeting-from-turn-one\\n' > bin/greet && echo installed"}
        expect: {is_error: false, contains: "installed"}
  - prompt: Read the plan back and run the tool you installed.
    after: released
    steps:
      - tool: read
        input: {file_path: notes/plan.txt}
        expect: {is_error: false, text: "1. write the plan\n"}
      - tool: bash
        input: {command: "sh bin/greet"}
        expect: {is_error: false, contains: "greeting-from-turn-one"}
  - prompt: Back later; is the plan still there?
    after: admin
    steps:
      - tool: read
        input: {file_path: notes/plan.txt}
        expect: {is_error: false, text: "1. write the plan\n"}
)";

class SessionBench {
 public:
  // `pool_sessions`: with --warm, how many sessions of each series (warm pool, cold) a run serves.
  SessionBench(std::string source_dir, std::string bin_dir, int pool_sessions)
      : source_dir_(std::move(source_dir)),
        bin_dir_(std::move(bin_dir)),
        pool_sessions_(pool_sessions) {}

  // One fresh cluster and every session of kKinds; appends one JSON object per session to
  // `sessions` and returns the cluster's start figures.
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
    // Two AgentEnvironments served by one operator: the default emptyDir workspace, and a claim
    // per session.
    const Environment plain = create_environment(sim, secrets, environments, ns, "agents", nullptr);
    const Environment with_claims = create_environment(
        sim, secrets, environments, ns, "workspace-agents",
        {{"persistentVolumeClaim", {{"storageClassName", localcluster::kLocalStorageClass}}}});
    // With --warm, a third with a pool, filling while the sessions above are served.
    std::optional<Environment> pooled;
    if (pool_sessions_ > 0) {
      pooled = create_environment(sim, secrets, environments, ns, kPooledName, nullptr,
                                  {{"minReady", 2}, {"maxReady", 2}});
    }
    // When each runner pod turned Succeeded, as a watch sees it.
    prometheus::Registry tracker_registry;
    runtime::RuntimeMetrics tracker_metrics(tracker_registry);
    testing::PodTracker tracker(pods, ns, tracker_metrics);
    const std::string operator_log = cluster->dir() + "/bench-operator.log";
    std::vector<std::string> operator_flags = {"--allowed-api-hosts", sim.url()};
    if (pooled) {
      for (auto& flag : warm_assignment_flags(node.at("gateway").get<std::string>()))
        operator_flags.push_back(std::move(flag));
    }
    // The assignment service's CA Secret is kept in the operator's namespace: the bench's.
    testing::OperatorProcess operator_process(
        testing::OperatorProcessOptions{bin_dir_ + "/perimeter-operator",
                                        kubeconfig,
                                        operator_log,
                                        operator_flags,
                                        {"POD_NAMESPACE=" + ns}});
    // The operator is up and polling for every environment before the first session is enqueued,
    // as in a cluster that has been running.
    const size_t environment_count = pooled ? 3 : 2;
    wait_for(
        [&] {
          return count_of(read_file(operator_log), "started the session poller") >=
                 environment_count;
        },
        seconds(60), "the operator to start polling for every AgentEnvironment");

    const Served where{sim,
                       pods,
                       tracker,
                       events,
                       ns,
                       node,
                       std::filesystem::path(node.at("containerd_socket").get<std::string>())
                           .parent_path()
                           .string(),
                       operator_log,
                       cluster->dir() + "/supervisor.log"};
    const auto record = [&](const char* kind, json line) {
      line["run"] = run_index;
      line["session"] = kind;
      std::cout << line.dump() << std::endl;
      sessions->push_back(std::move(line));
    };

    const std::string scenario =
        read_file(source_dir_ + "/sim/scenarios/conformance/builtin-tools.yaml");
    for (const char* kind : {"first", "second"}) {
      const json reply = enqueue(sim, plain, scenario);
      const std::string work_id = reply.at("work_id");
      const json pod = wait_until_served(where, work_id);
      record(kind, measure(where, plain, work_id, reply.at("session_id").get<std::string>(), pod,
                           nullptr));
    }

    const json reply = enqueue(sim, with_claims, kWorkspaceScenario);
    const std::string session_id = reply.at("session_id");
    json previous_pod = nullptr;
    int turn = 0;
    for (const char* kind : {"workspace_turn_one", "workspace_turn_two", "workspace_turn_three"}) {
      if (turn == 2) {
        // Turn two's pod has ended (wait_until_served): the user comes back.
        const auto next = testing::http_call(sim.url(), "POST",
                                             "/admin/sessions/" + session_id + "/next_turn", "");
        if (next.status / 100 != 2) throw std::runtime_error("next_turn: " + next.body);
      }
      std::string work_id;
      wait_for(
          [&] {
            const json items = session_view(sim, session_id).value("items", json::array());
            if (items.size() <= static_cast<size_t>(turn)) return false;
            work_id = items[turn].value("work_id", "");
            return true;
          },
          seconds(120), "the work item of turn " + std::to_string(turn + 1));
      const json pod = wait_until_served(where, work_id);
      record(kind, measure(where, with_claims, work_id, session_id, pod, previous_pod));
      previous_pod = pod;
      ++turn;
    }
    // A turn that did not find turn one's files fails its expectation: the figures above would be
    // of something other than a shared workspace.
    wait_for([&] { return session_view(sim, session_id).value("phase", "") == "finished"; },
             seconds(60), "the workspace session to finish");
    const json results =
        testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_id + "/results").json();
    if (!results.value("all_matched", false))
      throw std::runtime_error("the workspace session's results differ from its script: " +
                               results.dump());
    if (pooled) serve_pool_series(where, *pooled, plain, scenario, record);
    return start;
  }

 private:
  struct Environment {
    std::string id;
    std::string key;
  };
  // Where a run's sessions are served, and the logs their timestamps come from.
  struct Served {
    const testing::SimProcess& sim;
    kube::ResourceClient& pods;
    const testing::PodTracker& tracker;
    kube::ResourceClient& events;
    std::string ns;
    json node;
    std::string node_dir;
    std::string operator_log;
    std::string supervisor_log;
  };

  template <typename Pred>
  static void wait_for(Pred done, seconds limit, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("timed out waiting for " + what);
      std::this_thread::sleep_for(milliseconds(20));
    }
  }

  static size_t count_of(const std::string& text, const std::string& needle) {
    size_t count = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
      ++count;
    return count;
  }

  // A simulator environment, its key in a marked Secret, and an AgentEnvironment of `name` whose
  // runner pods run on the real node with `workspace` (null: the default emptyDir).
  Environment create_environment(const testing::SimProcess& sim, kube::ResourceClient& secrets,
                                 kube::ResourceClient& environments, const std::string& ns,
                                 const std::string& name, const json& workspace,
                                 const json& warm_pool = nullptr) const {
    const auto created =
        testing::http_call(sim.url(), "POST", "/admin/environments", json{{"name", name}}.dump())
            .json();
    Environment environment{created.at("id").get<std::string>(),
                            created.at("key").get<std::string>()};
    secrets.create(
        ns, {{"apiVersion", "v1"},
             {"kind", "Secret"},
             {"metadata",
              {{"name", name + "-key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
             {"stringData", {{"environment-key", environment.key}}}});
    json runner = {{"image", testing::kRunnerImage},
                   {"imagePullPolicy", "Never"},
                   {"nodeSelector", {{localcluster::kRealNodeLabel, "true"}}},
                   {"tolerations",
                    {{{"key", localcluster::kRealNodeTaintKey},
                      {"operator", "Equal"},
                      {"value", "true"},
                      {"effect", "NoSchedule"}}}},
                   {"env", {{{"name", "PERIMETER_MAX_IDLE_MS"}, {"value", "3000"}}}}};
    if (!workspace.is_null()) runner["workspace"] = workspace;
    json spec = {{"environmentId", environment.id},
                 {"environmentKeySecretRef", {{"name", name + "-key"}}},
                 {"apiBaseUrl", sim.url()},
                 {"retention", {{"succeededSeconds", 3600}}},
                 {"runner", runner}};
    if (!warm_pool.is_null()) spec["warmPool"] = warm_pool;
    environments.create(ns, {{"apiVersion", "perimeter.dev/v1alpha1"},
                             {"kind", "AgentEnvironment"},
                             {"metadata", {{"name", name}}},
                             {"spec", spec}});
    return environment;
  }

  static json enqueue(const testing::SimProcess& sim, const Environment& environment,
                      const std::string& scenario_yaml) {
    const auto reply =
        testing::http_call(sim.url(), "POST", "/admin/environments/" + environment.id + "/sessions",
                           json{{"scenario_yaml", scenario_yaml}}.dump());
    if (reply.status != 201) throw std::runtime_error("enqueue: " + reply.body);
    return reply.json();
  }

  static json session_view(const testing::SimProcess& sim, const std::string& session_id) {
    return testing::http_call(sim.url(), "GET", "/admin/sessions/" + session_id).json();
  }

  // Waits for the item to stop and its pod to succeed; returns the pod.
  static json wait_until_served(const Served& where, const std::string& work_id) {
    json pod;
    wait_for(
        [&] {
          const auto item =
              testing::http_call(where.sim.url(), "GET", "/admin/work/" + work_id).json();
          if (item.value("state", "") != "stopped") return false;
          for (const auto& candidate : where.pods.list(where.ns).value("items", json::array())) {
            const auto annotations = candidate["metadata"].value("annotations", json::object());
            const bool runs_it = annotations.value("perimeter.dev/work-id", "") == work_id ||
                                 annotations.value("perimeter.dev/assigned-work-id", "") == work_id;
            if (runs_it && candidate["status"].value("phase", "") == "Succeeded") {
              pod = candidate;
              return true;
            }
          }
          return false;
        },
        seconds(300), "work item " + work_id + " to stop and its pod to succeed");
    return pod;
  }

  // One session's JSON line: its timestamps, its steps (kSegments, kDetails) and its milestones
  // since enqueue.
  static json measure(const Served& where, const Environment& environment,
                      const std::string& work_id, const std::string& session_id, const json& pod,
                      const json& previous_pod) {
    const json stamps = timestamps(where, environment.key, work_id, session_id, pod, previous_pod);
    json line = {{"bench", "real_node_session"},
                 {"work_id", work_id},
                 {"pod", pod["metadata"]["name"]},
                 {"waited_for_previous_pod", stamps.contains(kWaited)},
                 {"timestamps_epoch_ms", stamps}};
    const auto applies = [&](const Segment& segment) {
      return stamps.contains(segment.from) && stamps.contains(segment.to) &&
             (segment.only_with == nullptr || stamps.contains(segment.only_with)) &&
             (segment.only_without == nullptr || !stamps.contains(segment.only_without));
    };
    const auto gap = [&](const Segment& segment) {
      return stamps[segment.to].get<double>() - stamps[segment.from].get<double>();
    };
    for (const auto& segment : kSegments)
      if (applies(segment)) line["segments_ms"][segment.name] = gap(segment);
    for (const auto& detail : kDetails)
      if (applies(detail.part)) line["details_ms"][detail.part.name] = gap(detail.part);
    const double enqueued = stamps.value("enqueued", 0.0);
    for (const char* milestone : {"acknowledged", "pod_created", "container_started",
                                  "first_heartbeat", "first_tool_result", "stopped"}) {
      if (stamps.contains(milestone))
        line["since_enqueue_ms"][milestone] = stamps[milestone].get<double>() - enqueued;
    }
    // Without the claim step, whose length is mostly where the enqueue fell in the operator's poll
    // cycle (a long poll, then 1 to 3 s before the next one when the queue was empty).
    if (stamps.contains("acknowledged") && stamps.contains("first_tool_result")) {
      line["since_ack_ms"]["first_tool_result"] =
          stamps["first_tool_result"].get<double>() - stamps["acknowledged"].get<double>();
    }
    return line;
  }

  // Every milestone of one item, in milliseconds since the epoch; a missing one is left out.
  // `previous_pod` is the session's pod before this item's (null for none).
  static json timestamps(const Served& where, const std::string& key, const std::string& work_id,
                         const std::string& session_id, const json& pod, const json& previous_pod) {
    json stamps = json::object();
    const auto put = [&](const char* name, std::optional<double> value) {
      if (value) stamps[name] = *value;
    };
    const auto item = testing::http_call(where.sim.url(), "GET", "/admin/work/" + work_id).json();
    put("enqueued", parse_rfc3339_ms(item.value("created_at", "")));
    put("acknowledged", parse_rfc3339_ms(item.value("acknowledged_at", "")));
    put("first_heartbeat", parse_rfc3339_ms(item.value("started_at", "")));
    put("stopped", parse_rfc3339_ms(item.value("stopped_at", "")));
    const auto session_events =
        testing::http_call(where.sim.url(), "GET",
                           "/v1/sessions/" + session_id + "/events?limit=1000", "",
                           {{"anthropic-version", "2023-06-01"},
                            {"anthropic-beta", "managed-agents-2026-04-01"},
                            {"Authorization", "Bearer " + key}})
            .json();
    // The session's events hold every turn's results: this item's first is the first after its
    // enqueue.
    for (const auto& event : session_events.value("data", json::array())) {
      if (event.value("type", "") != "user.tool_result") continue;
      const auto processed = parse_rfc3339_ms(event.value("processed_at", ""));
      if (processed && stamps.contains("enqueued") &&
          *processed >= stamps["enqueued"].get<double>()) {
        put("first_tool_result", processed);
        break;
      }
    }
    put("pod_created",
        first_line_with(where.operator_log, {"\"runner pod created\"", work_id}, operator_line_ms));
    put(kWaited, first_line_with(where.operator_log,
                                 {"the session's workspace is in use; the item waits", work_id},
                                 operator_line_ms));
    const std::string pod_name = pod["metadata"]["name"];
    const std::string uid = pod["metadata"]["uid"];
    for (const auto& event : where.events.list(where.ns).value("items", json::array())) {
      if (event.value("reason", "") == "Scheduled" &&
          event.value("regarding", json::object()).value("name", "") == pod_name) {
        put("scheduled", parse_rfc3339_ms(event.value("eventTime", "")));
      }
    }
    const std::string kubelet_log = where.node.at("kubelet_log");
    const std::string containerd_log = where.node.at("containerd_log");
    put("kubelet_first_seen", first_line_with(kubelet_log, {uid}, parse_klog_ms));
    const std::string sandbox =
        "RunPodSandbox for &PodSandboxMetadata{Name:" + pod_name + ",Uid:" + uid;
    put("sandbox_requested", first_line_with(containerd_log, {sandbox}, containerd_line_ms));
    put("sandbox_ready",
        first_line_with(containerd_log, {sandbox, "returns sandbox id"}, containerd_line_ms));
    if (const std::string container_id = container_id_of(pod); !container_id.empty()) {
      put("container_started",
          first_line_with(containerd_log,
                          {"StartContainer for \\\"" + container_id, "returns successfully"},
                          containerd_line_ms));
    }
    put("runner_first_log_line",
        first_line_with(container_log_of(where, pod), {" F "}, cri_log_line_ms));

    // A waiting item: when the previous runner ended (its last log line, written as it exits;
    // containerd 1.6 logs a container's exit only at debug level), or the ack if before.
    if (!previous_pod.is_null() && stamps.contains(kWaited) && stamps.contains("acknowledged")) {
      put("previous_runner_last_log_line",
          last_line_of(container_log_of(where, previous_pod), cri_log_line_ms));
      if (const auto seen = where.tracker.succeeded_seen_at(previous_pod["metadata"]["uid"])) {
        stamps["previous_pod_seen_succeeded"] =
            std::chrono::duration<double, std::milli>(seen->time_since_epoch()).count();
      }
      if (stamps.contains("previous_runner_last_log_line") &&
          stamps.contains("previous_pod_seen_succeeded")) {
        const double gone = std::max(stamps["acknowledged"].get<double>(),
                                     stamps["previous_runner_last_log_line"].get<double>());
        stamps["wait_previous_runner_gone"] = gone;
        stamps["wait_previous_pod_succeeded"] =
            std::max(gone, stamps["previous_pod_seen_succeeded"].get<double>());
      }
    }
    // The item that made the session's claim: when, and when the provisioner made its volume.
    const json volumes = pod["spec"].value("volumes", json::array());
    const auto claim = std::find_if(volumes.begin(), volumes.end(), [](const json& volume) {
      return volume.contains("persistentVolumeClaim");
    });
    if (claim != volumes.end() && stamps.contains("pod_created")) {
      const std::string claim_name = (*claim)["persistentVolumeClaim"].value("claimName", "");
      const auto created =
          first_line_with(where.operator_log, {"created the session's workspace claim", session_id},
                          operator_line_ms);
      if (created && stamps.contains("acknowledged") &&
          *created >= stamps["acknowledged"].get<double>() &&
          *created <= stamps["pod_created"].get<double>()) {
        put("claim_created", created);
        put("volume_provisioned",
            first_line_with(where.supervisor_log,
                            {"provisioned a volume", where.ns + "/" + claim_name},
                            operator_line_ms));
      }
    }
    return stamps;
  }

  // The runner container's log as the kubelet writes it (CRI format, a timestamp a line).
  static std::string container_log_of(const Served& where, const json& pod) {
    const auto& metadata = pod["metadata"];
    return where.node_dir + "/pod-logs/" + metadata.value("namespace", "") + "_" +
           metadata.value("name", "") + "_" + metadata.value("uid", "") + "/runner/0.log";
  }

  static std::string container_id_of(const json& pod) {
    const auto statuses = pod["status"].value("containerStatuses", json::array());
    if (statuses.empty()) return "";
    const std::string id = statuses[0].value("containerID", "");
    const auto scheme = id.find("://");
    return scheme == std::string::npos ? id : id.substr(scheme + 3);
  }

  // The warm series: an environment with a pool, and the plain one, served in turns, so both
  // series see the same machine. Each warm session is sent once the pool has a ready pod, as in a
  // cluster whose pool keeps up; a session the pool could not serve is counted as cold.
  void serve_pool_series(const Served& where, const Environment& pooled, const Environment& plain,
                         const std::string& scenario,
                         const std::function<void(const char*, json)>& record) const {
    for (int i = 0; i < pool_sessions_; ++i) {
      wait_for([&] { return ready_warm_pods(where, kPooledName) > 0; }, seconds(120),
               "a ready warm pod");
      const json warm_reply = enqueue(where.sim, pooled, scenario);
      const std::string warm_work = warm_reply.at("work_id");
      const json warm_pod = wait_until_served(where, warm_work);
      record("warm_pool",
             measure_pool_session(where, pooled, warm_work, warm_reply.at("session_id"), warm_pod));

      const json cold_reply = enqueue(where.sim, plain, scenario);
      const std::string cold_work = cold_reply.at("work_id");
      const json cold_pod = wait_until_served(where, cold_work);
      record("cold_series",
             measure_pool_session(where, plain, cold_work, cold_reply.at("session_id"), cold_pod));
    }
  }

  // Warm pods of `environment` the pool has ready, by the operator's own rules (warm_pool.h).
  static int ready_warm_pods(const Served& where, const std::string& environment) {
    int ready = 0;
    kube::ListOptions options;
    options.label_selector = "perimeter.dev/warm=true,perimeter.dev/environment=" + environment;
    const json list = where.pods.list(where.ns, options);
    for (const auto& pod : list.value("items", json::array())) {
      ready += agentenvironment::unassigned_warm_pod(pod) &&
               agentenvironment::warm_pod_state(pod) == agentenvironment::WarmPodState::kReady;
    }
    return ready;
  }

  // One session of a series: its milestones from the simulator and, for a warm pod, when the
  // assignment service recorded its delivery (the annotation it writes, microseconds).
  static json measure_pool_session(const Served& where, const Environment& environment,
                                   const std::string& work_id, const std::string& session_id,
                                   const json& pod) {
    const json stamps = timestamps(where, environment.key, work_id, session_id, pod, nullptr);
    const json annotations = pod["metadata"].value("annotations", json::object());
    const bool warm =
        pod["metadata"].value("labels", json::object()).value("perimeter.dev/warm", "") == "true";
    json line = {{"bench", "real_node_session"},
                 {"work_id", work_id},
                 {"pod", pod["metadata"]["name"]},
                 {"warm_pod", warm}};
    const double enqueued = stamps.value("enqueued", 0.0);
    json milestones = stamps;
    if (const auto confirmed =
            parse_rfc3339_ms(annotations.value("perimeter.dev/assignment-confirmed-at", ""))) {
      milestones["assignment_confirmed"] = *confirmed;
    }
    if (warm) {
      // The claim's assignment patch answered (the operator's log), the runner holding its
      // assignment, and the runner with its configuration resolved (its "serving work item").
      if (const auto assigned =
              first_line_with(where.operator_log, {"assigned the session to a warm pod", work_id},
                              operator_line_ms)) {
        milestones["assigned"] = *assigned;
      }
      if (const auto received =
              first_line_with(container_log_of(where, pod), {"warm: assigned"}, cri_log_line_ms)) {
        milestones["runner_assigned"] = *received;
      }
      if (const auto serving = first_line_with(container_log_of(where, pod), {"serving work item"},
                                               cri_log_line_ms)) {
        milestones["runner_serving"] = *serving;
      }
      // The runner's own view of its confirm's answer (an operator of an earlier version only),
      // its session runner's start (session fetched, toolset built) and its first tool call's
      // start.
      for (const auto& [milestone, needle] :
           {std::pair{"runner_confirmed", "warm: confirmed"},
            std::pair{"runner_session_started", "session tool runner starting"},
            std::pair{"runner_tool_started", "executing tool"}}) {
        if (const auto at =
                first_line_with(container_log_of(where, pod), {needle}, cri_log_line_ms))
          milestones[milestone] = *at;
      }
    }
    for (const char* milestone :
         {"acknowledged", "assigned", "pod_created", "runner_assigned", "assignment_confirmed",
          "runner_confirmed", "runner_serving", "first_heartbeat", "runner_session_started",
          "runner_tool_started", "first_tool_result"}) {
      if (!milestones.contains(milestone)) continue;
      line["since_enqueue_ms"][milestone] = milestones[milestone].get<double>() - enqueued;
      // From the ack: without where the enqueue fell in the poll cycle.
      if (milestones.contains("acknowledged") && std::string_view(milestone) != "acknowledged") {
        line["since_ack_ms"][milestone] =
            milestones[milestone].get<double>() - milestones["acknowledged"].get<double>();
      }
    }
    return line;
  }

  // The operator serves warm runners' assignments on the node's gateway address, which the
  // pods reach as they reach the simulator, under a certificate for that address.
  static std::vector<std::string> warm_assignment_flags(const std::string& gateway) {
    return {"--warm-assignment-port", std::to_string(localcluster::pick_free_port()),
            "--warm-assignment-address", gateway};
  }

  static constexpr const char* kPooledName = "warm-agents";
  std::string source_dir_, bin_dir_;
  int pool_sessions_ = 0;
};

// The nearest-rank percentile (p in 0..100) of `values`; 0 for none.
double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

struct Spread {
  double median = 0, min = 0, max = 0;
};
Spread spread_of(const std::vector<double>& values) {
  if (values.empty()) return {};
  const auto [low, high] = std::minmax_element(values.begin(), values.end());
  return {median(values), *low, *high};
}

}  // namespace
}  // namespace perimeter

int main(int argc, char** argv) {
  using nlohmann::json;
  using perimeter::spread_of;
  int runs = 3;
  int pool_sessions = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--warm") {
      pool_sessions = 20;
      if (i + 1 < argc && std::isdigit(static_cast<unsigned char>(argv[i + 1][0])))
        pool_sessions = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: real_node_session_bench [--runs N] [--warm [SESSIONS]]\n";
      return 2;
    }
  }
  const std::string source =
      perimeter::env_or("PERIMETER_SOURCE_DIR", PERIMETER_DEFAULT_SOURCE_DIR);
  const std::string bin = perimeter::env_or("PERIMETER_BIN_DIR", PERIMETER_DEFAULT_BIN_DIR);
  setenv("PERIMETER_BIN_DIR", bin.c_str(), 0);  // SimProcess and the runner image find it there

  std::map<std::string, std::vector<double>> node_phases;
  // kind -> "segments_ms" / "details_ms" / "since_enqueue_ms" -> name -> one value per run.
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>> samples;
  std::map<std::string, int> waited_runs;
  // With --warm: series -> milestone -> every session's ms since enqueue.
  std::map<std::string, std::map<std::string, std::vector<double>>> series;
  int warm_served = 0, cold_served = 0;
  perimeter::SessionBench bench(source, bin, pool_sessions);
  try {
    for (int run = 0; run < runs; ++run) {
      std::vector<json> sessions;
      const json start = bench.run(run, &sessions);
      for (const auto& [phase, ms] : start["node_phases_ms"].items())
        node_phases[phase].push_back(ms);
      node_phases["cluster_total_ms"].push_back(start["cluster_phases_ms"].value("total_ms", 0.0));
      for (const auto& session : sessions) {
        const std::string kind = session["session"];
        for (const char* group :
             {"segments_ms", "details_ms", "since_enqueue_ms", "since_ack_ms"}) {
          // A named copy: the range of a for statement does not keep value()'s result alive.
          const json values = session.value(group, json::object());
          for (const auto& [name, ms] : values.items()) samples[kind][group][name].push_back(ms);
        }
        if (session.value("waited_for_previous_pod", false)) ++waited_runs[kind];
        if (kind == "warm_pool" || kind == "cold_series") {
          const json since = session.value("since_enqueue_ms", json::object());
          for (const auto& [milestone, ms] : since.items()) series[kind][milestone].push_back(ms);
          const json since_ack = session.value("since_ack_ms", json::object());
          for (const auto& [milestone, ms] : since_ack.items())
            series[kind]["ack_to_" + milestone].push_back(ms);
          if (kind == "warm_pool") ++(session.value("warm_pod", false) ? warm_served : cold_served);
        }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "real_node_session_bench: " << e.what() << "\n";
    return 1;
  }

  json summary = {{"bench", "real_node_session_summary"}, {"runs", runs}};
  for (const auto& [phase, values] : node_phases)
    summary["node_start_ms"][phase] = perimeter::median(values);
  for (const auto& [kind, groups] : samples) {
    summary[kind]["waited_for_previous_pod_runs"] = waited_runs[kind];
    for (const auto& [group, names] : groups) {
      for (const auto& [name, values] : names) {
        const auto spread = spread_of(values);
        summary[kind][group][name] = spread.median;
        summary[kind][group + "_range"][name] = {spread.min, spread.max};
      }
    }
  }
  // Medians over medians, from enqueue and from the ack to the first tool result.
  const auto to_first_result = [&](const char* kind, const char* since) {
    return summary.contains(kind)
               ? summary[kind].value(since, json::object()).value("first_tool_result", 0.0)
               : 0.0;
  };
  for (const char* since : {"since_enqueue_ms", "since_ack_ms"}) {
    const auto ratio = [&](const char* over, const char* under) {
      const double base = to_first_result(under, since);
      return base > 0 ? to_first_result(over, since) / base : 0.0;
    };
    summary["ratios"][since] = {
        {"workspace_turn_two_over_turn_one", ratio("workspace_turn_two", "workspace_turn_one")},
        {"workspace_turn_three_over_turn_one", ratio("workspace_turn_three", "workspace_turn_one")},
        {"workspace_turn_one_over_emptydir_second", ratio("workspace_turn_one", "second")}};
  }
  // The warm series: every session of every run, p50 and p99 (nearest rank) from enqueue.
  if (pool_sessions > 0) {
    for (const char* kind : {"warm_pool", "cold_series"}) {
      for (const auto& [milestone, values] : series[kind]) {
        summary["pool_series"][kind][milestone] = {{"p50", perimeter::percentile(values, 50)},
                                                   {"p99", perimeter::percentile(values, 99)},
                                                   {"sessions", values.size()}};
      }
    }
    summary["pool_series"]["warm_pool"]["served_by_warm_pod"] = warm_served;
    summary["pool_series"]["warm_pool"]["served_by_cold_pod"] = cold_served;
  }
  std::cout << summary.dump() << std::endl;

  const auto& start = summary["node_start_ms"];
  std::cout << std::fixed << std::setprecision(0) << "\nmedians of " << runs
            << " runs (each a fresh cluster)\n"
            << "  cluster with real node ready " << start.value("cluster_total_ms", 0.0)
            << " ms; node phases from its start: containerd ready "
            << start.value("containerd_ready_ms", 0.0) << " ms, images imported "
            << start.value("images_imported_ms", 0.0) << " ms, Node Ready "
            << start.value("node_ready_ms", 0.0) << " ms\n\n";
  // One column per session kind, one row per step (its parts under it); ms.
  for (size_t column = 0; column < std::size(perimeter::kKinds); ++column)
    std::cout << "  [" << column + 1 << "] " << perimeter::kKinds[column].title << "\n";
  std::cout << "\n  " << std::left << std::setw(30) << "step, median ms" << std::right;
  for (size_t column = 0; column < std::size(perimeter::kKinds); ++column)
    std::cout << std::setw(8) << ("[" + std::to_string(column + 1) + "]");
  std::cout << "\n";
  const auto row = [&](const char* group, const perimeter::Segment& segment, bool part) {
    std::vector<std::optional<double>> cells;
    for (const auto& kind : perimeter::kKinds) {
      const json values = summary.contains(kind.key)
                              ? summary[kind.key].value(group, json::object())
                              : json::object();
      cells.push_back(values.contains(segment.name)
                          ? std::optional<double>(values[segment.name].get<double>())
                          : std::nullopt);
    }
    if (std::none_of(cells.begin(), cells.end(), [](const auto& cell) { return cell.has_value(); }))
      return;
    std::cout << "  " << std::left << std::setw(30)
              << (std::string(part ? "  " : "") + segment.name) << std::right;
    for (const auto& cell : cells) {
      if (cell) {
        std::cout << std::setw(8) << *cell;
      } else {
        std::cout << std::setw(8) << "-";
      }
    }
    std::cout << "   " << segment.owner << "\n";
  };
  for (const auto& segment : perimeter::kSegments) {
    row("segments_ms", segment, false);
    for (const auto& detail : perimeter::kDetails)
      if (std::string_view(detail.under) == segment.name) row("details_ms", detail.part, true);
  }
  for (const auto& [since, title] :
       {std::pair{"since_enqueue_ms", "enqueue"}, std::pair{"since_ack_ms", "ack"}}) {
    std::cout << "\n  " << title << " -> first tool result, median (min..max):\n";
    for (size_t column = 0; column < std::size(perimeter::kKinds); ++column) {
      const auto& kind = perimeter::kKinds[column];
      if (!summary.contains(kind.key)) continue;
      const json& part = summary[kind.key];
      const json range = part.value(std::string(since) + "_range", json::object())
                             .value("first_tool_result", json::array({0, 0}));
      std::cout << "    [" << column + 1 << "] " << std::left << std::setw(48) << kind.title
                << std::right << std::setw(6)
                << part.value(since, json::object()).value("first_tool_result", 0.0) << " ("
                << range[0].get<double>() << ".." << range[1].get<double>() << ")";
      if (part.value("waited_for_previous_pod_runs", 0) > 0) {
        std::cout << "; waited for the previous pod in "
                  << part.value("waited_for_previous_pod_runs", 0) << " of " << runs << " runs";
      }
      std::cout << "\n";
    }
  }
  const json& ratios = summary["ratios"];
  const auto both = [&](const char* name) {
    std::ostringstream text;
    text << std::fixed << std::setprecision(2) << ratios["since_enqueue_ms"].value(name, 0.0)
         << "x from enqueue, " << ratios["since_ack_ms"].value(name, 0.0) << "x from the ack";
    return text.str();
  };
  std::cout << "\n  ratios of the medians to the first tool result:\n"
            << "    PVC turn two / turn one     " << both("workspace_turn_two_over_turn_one")
            << "  (turn two's time includes its wait for turn one's pod)\n"
            << "    PVC turn three / turn one   " << both("workspace_turn_three_over_turn_one")
            << "  (the previous pod already gone)\n"
            << "    PVC turn one / emptyDir [2] " << both("workspace_turn_one_over_emptydir_second")
            << "\n";
  if (pool_sessions > 0) {
    const json& pool = summary["pool_series"];
    std::cout << "\n  warm pool (minReady 2) vs cold, " << pool_sessions
              << " sessions of each per run, "
              << "served in turns; ms from enqueue (ack_to_: from the ack), p50 / p99 over every "
              << "session:\n"
              << "    warm pool sessions served by a warm pod: "
              << pool["warm_pool"].value("served_by_warm_pod", 0)
              << ", by a cold pod: " << pool["warm_pool"].value("served_by_cold_pod", 0) << "\n";
    for (const char* milestone : {"acknowledged",
                                  "assigned",
                                  "runner_assigned",
                                  "assignment_confirmed",
                                  "runner_confirmed",
                                  "runner_serving",
                                  "pod_created",
                                  "first_heartbeat",
                                  "runner_session_started",
                                  "runner_tool_started",
                                  "first_tool_result",
                                  "ack_to_assigned",
                                  "ack_to_runner_assigned",
                                  "ack_to_assignment_confirmed",
                                  "ack_to_runner_confirmed",
                                  "ack_to_runner_serving",
                                  "ack_to_pod_created",
                                  "ack_to_first_heartbeat",
                                  "ack_to_runner_session_started",
                                  "ack_to_runner_tool_started",
                                  "ack_to_first_tool_result"}) {
      std::cout << "    " << std::left << std::setw(30) << milestone << std::right;
      for (const char* kind : {"warm_pool", "cold_series"}) {
        const json cell = pool[kind].value(milestone, json());
        if (cell.is_null()) {
          std::cout << "  " << std::setw(6) << kind << std::setw(16) << "-";
          continue;
        }
        std::cout << "  " << kind << " " << std::setw(6) << cell.value("p50", 0.0) << " / "
                  << std::setw(6) << cell.value("p99", 0.0);
      }
      std::cout << "\n";
    }
    const double warm =
        pool["warm_pool"].value("first_tool_result", json::object()).value("p50", 0.0);
    const double cold =
        pool["cold_series"].value("first_tool_result", json::object()).value("p50", 0.0);
    if (cold > 0) {
      std::cout << std::setprecision(2) << "    first tool result p50, warm / cold: " << warm / cold
                << "x\n";
    }
  }
  return 0;
}
