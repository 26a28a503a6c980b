// perimeter-operator end to end, as separate processes over loopback: a real control plane
// (kube-apiserver, etcd, controller manager, scheduler, KWOK nodes), perimeter-sim as the Managed
// Agents API, and the operator binary. KWOK runs no containers, so these tests prove claiming,
// pods, limits and crash safety; the runner's own work is tested elsewhere.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "core/base64.h"
#include "core/log.h"
#include "gateway/credentials.h"
#include "gateway/gateway_config.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "localcluster/tools.h"
#include "monitoring/prometheus_server.h"
#include "operator/exposition.h"
#include "operator/operator_process.h"
#include "operator/pod_tracker.h"
#include "process/process.h"
#include "runtime/informer.h"

namespace perimeter::e2e {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::metric_sum;

kube::ResourceType agent_environments() {
  return {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true};
}

std::string source_dir() {
  return std::getenv("PERIMETER_SOURCE_DIR");
}
std::string bin_dir() {
  return std::getenv("PERIMETER_BIN_DIR");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The lines of an operator log where the apiserver's authorizer refused a request. RBAC denials
// read `... is forbidden: User "system:serviceaccount:..." cannot ...`; other 403s (an event in a
// namespace that is being deleted, say) are not RBAC's and do not count.
std::string rbac_denials(const std::string& log) {
  std::string denials;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (line.find("forbidden: User ") != std::string::npos) denials += line + "\n";
  return denials;
}

// Waits for `done`, polling; fails the test with `what` when it does not happen in `limit`.
// The limit is a generous bound on a shared machine, not a performance assertion.
template <typename Pred>
bool eventually(Pred done, seconds limit, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(100));
  }
  ADD_FAILURE() << "timed out waiting for " << what;
  return false;
}

// The label names in a Prometheus text exposition, with one sample line that carries each.
std::map<std::string, std::string> label_names(const std::string& exposition) {
  std::map<std::string, std::string> names;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto open = line.find('{');
    const auto close = line.rfind('}');
    if (open == std::string::npos || close == std::string::npos) continue;
    // name="value",name="value": label values may hold any character, so walk the quotes.
    size_t at = open + 1;
    while (at < close) {
      const auto equals = line.find('=', at);
      if (equals == std::string::npos || equals > close) break;
      names.emplace(line.substr(at, equals - at), line);
      size_t end = equals + 2;  // past ="
      while (end < close && line[end] != '"') end += line[end] == '\\' ? 2 : 1;
      at = end + 1;
      if (at < close && line[at] == ',') ++at;
    }
  }
  return names;
}

class OperatorE2eTest : public ::testing::Test {
 protected:
  static testing::LocalClusterOptions cluster_options() {
    testing::LocalClusterOptions options;
    options.controller_manager = true;  // the default ServiceAccount in each namespace
    options.scheduler = true;
    options.kwok_nodes = 3;
    return options;
  }

  static void SetUpTestSuite() {
    auto& cluster = testing::shared_cluster(cluster_options());
    const std::string kubectl =
        localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") + " --kubeconfig " +
        cluster.kubeconfig_path();
    const std::string command = kubectl + " apply -f " + source_dir() + "/crds/ >/dev/null && " +
                                kubectl + " wait --for condition=established --timeout=60s" +
                                " crd/agentenvironments.perimeter.dev >/dev/null";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  void SetUp() override {
    auto& cluster = testing::shared_cluster(cluster_options());
    kubeconfig_ = cluster.kubeconfig_path();
    config_ = kube::Config::from_kubeconfig_file(kubeconfig_);
    config_.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config_);
    ns_ = "e2e-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    client(kube::resources::namespaces())
        ->create("", {{"apiVersion", "v1"},
                      {"kind", "Namespace"},
                      {"metadata",
                       {{"name", ns_},
                        {"labels", {{"pod-security.kubernetes.io/enforce", "restricted"}}}}}});
    // Items are acked but never heartbeated on KWOK; keep their leases from lapsing mid-test.
    sim_ = std::make_unique<testing::SimProcess>(
        std::vector<std::string>{"--lease-ttl-seconds", "3600"});
    const auto created =
        testing::http_call(sim_->url(), "POST", "/admin/environments", json{{"name", ns_}}.dump())
            .json();
    environment_id_ = created["id"];
    environment_key_ = created["key"];
    client(kube::resources::secrets())
        ->create(ns_, {{"apiVersion", "v1"},
                       {"kind", "Secret"},
                       {"metadata", {{"name", "env-key"}, {"labels", key_mark()}}},
                       {"stringData", {{"environment-key", environment_key_}}}});
    scenario_ = read_file(source_dir() + "/sim/scenarios/conformance/builtin-tools.yaml");
    logs_ = std::make_unique<testing::TempDir>();
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- operator log (tail) ----\n" << tail(logs_->path() + "/operator.log");
      // The whole log outlives the test where one asks for it (a run to investigate).
      if (const char* keep = std::getenv("PERIMETER_E2E_KEEP_LOGS"); keep != nullptr) {
        const std::string kept = std::string(keep) + "/" + ns_ + "-operator.log";
        std::ofstream(kept) << read_file(logs_->path() + "/operator.log");
        std::cerr << "operator log kept in " << kept << "\n";
      }
    }
  }

  static std::string tail(const std::string& path) {
    const std::string text = read_file(path);
    return text.size() > 6000 ? text.substr(text.size() - 6000) : text;
  }

  // The environment's work-queue stats, as a worker with the environment key reads them.
  testing::HttpResult queue_stats() {
    return testing::http_call(sim_->url(), "GET",
                              "/v1/environments/" + environment_id_ + "/work/stats", "",
                              {{"Authorization", "Bearer " + environment_key_},
                               {"anthropic-beta", "managed-agents-2026-04-01"},
                               {"anthropic-version", "2023-06-01"}});
  }

  std::unique_ptr<kube::ResourceClient> client(const kube::ResourceType& type) {
    return std::make_unique<kube::ResourceClient>(*transport_, type, metrics_);
  }

  void create_environment(int limit, json runner_extra, json spec_extra = json::object()) {
    json runner = {{"image", "perimeter-runner:e2e"}};
    runner.update(runner_extra);
    json spec = {{"environmentId", environment_id_},
                 {"environmentKeySecretRef", {{"name", "env-key"}}},
                 {"apiBaseUrl", sim_->url()},
                 {"maxConcurrentSessions", limit},
                 {"runner", runner}};
    spec.update(spec_extra);
    client(agent_environments())
        ->create(ns_, {{"apiVersion", "perimeter.dev/v1alpha1"},
                       {"kind", "AgentEnvironment"},
                       {"metadata", {{"name", "agents"}}},
                       {"spec", spec}});
  }

  std::vector<std::string> enqueue(int count) {
    std::vector<std::string> work_ids;
    for (int i = 0; i < count; ++i) {
      const auto reply = testing::http_call(sim_->url(), "POST",
                                            "/admin/environments/" + environment_id_ + "/sessions",
                                            json{{"scenario_yaml", scenario_}}.dump());
      EXPECT_EQ(reply.status, 201) << reply.body;
      work_ids.push_back(reply.json()["work_id"]);
    }
    return work_ids;
  }

  json work_view(const std::string& work_id) {
    return testing::http_call(sim_->url(), "GET", "/admin/work/" + work_id).json();
  }

  // The label with which a namespace's Secret admin marks a Secret as an environment key.
  static json key_mark() { return {{"perimeter.dev/environment-key", "true"}}; }

  // The operator may send keys to the simulator only, unless a test allows more.
  std::unique_ptr<testing::OperatorProcess> start_operator(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--poll-threads", "4", "--allowed-api-hosts", sim_->url()};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<testing::OperatorProcess>(testing::OperatorProcessOptions{
        bin_dir() + "/perimeter-operator", kubeconfig_, logs_->path() + "/operator.log", args});
  }

  json list(const kube::ResourceType& type) { return client(type)->list(ns_)["items"]; }

  static inline int counter_ = 0;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  std::string kubeconfig_;
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  std::string ns_;
  std::unique_ptr<testing::SimProcess> sim_;
  std::string environment_id_, environment_key_, scenario_;
  std::unique_ptr<testing::TempDir> logs_;
};

// A server of the attacker's own on loopback: it records every byte any client sends it and
// answers 401, so a test can say exactly what reached it.
class RecordingServer {
 public:
  RecordingServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("RecordingServer: cannot listen on 127.0.0.1");
    }
    url_ = "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port));
    thread_ = std::thread([this] { serve(); });
  }
  ~RecordingServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  const std::string& url() const { return url_; }
  // Everything received so far, connections in order.
  std::string received() const {
    std::lock_guard lock(mutex_);
    return received_;
  }
  int connections() const {
    std::lock_guard lock(mutex_);
    return connections_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd listening{listen_fd_, POLLIN, 0};
      if (::poll(&listening, 1, 100) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      {
        std::lock_guard lock(mutex_);
        ++connections_;
      }
      std::string request;
      char buffer[4096];
      const auto deadline = std::chrono::steady_clock::now() + seconds(2);
      while (request.find("\r\n\r\n") == std::string::npos &&
             std::chrono::steady_clock::now() < deadline) {
        pollfd client{fd, POLLIN, 0};
        if (::poll(&client, 1, 100) <= 0) continue;
        const ssize_t n = ::read(fd, buffer, sizeof(buffer));
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      {
        std::lock_guard lock(mutex_);
        received_ += request;
      }
      const std::string reply =
          "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)!::write(fd, reply.data(), reply.size());
      ::close(fd);
    }
  }

  int listen_fd_ = -1;
  std::string url_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::string received_;
  int connections_ = 0;
  std::thread thread_;
};

TEST_F(OperatorE2eTest, FiftySessionsGetFiftyPodsAndTheLimitHoldsExactly) {
  constexpr int kSessions = 50;
  constexpr int kLimit = 5;
  // Each pod "exits" a second after it runs (a KWOK stage of the harness); succeeded pods are
  // removed at once.
  create_environment(kLimit, {{"podAnnotations", {{"perimeter.dev/kwok-complete-after", "1s"}}}});
  auto pods = client(kube::resources::pods());
  runtime::RuntimeMetrics runtime_metrics(registry_);
  testing::PodTracker tracker(*pods, ns_, runtime_metrics);
  auto operator_process = start_operator();
  const auto work_ids = enqueue(kSessions);

  auto environments = client(agent_environments());
  eventually(
      [&] {
        const auto status = environments->get(ns_, "agents").value("status", json::object());
        return status.value("sessions", json::object()).value("succeeded", 0) == kSessions;
      },
      seconds(300), "every session's pod to succeed and be counted");

  const auto adds = tracker.adds_per_work_id();
  EXPECT_EQ(adds.size(), static_cast<size_t>(kSessions));
  for (const auto& work_id : work_ids) {
    const auto it = adds.find(work_id);
    ASSERT_NE(it, adds.end()) << work_id << " never got a pod";
    EXPECT_EQ(it->second, 1) << work_id << " got more than one pod";
    EXPECT_EQ(work_view(work_id)["state"], "starting") << work_id << " was not acknowledged";
  }
  EXPECT_LE(tracker.max_unfinished(), static_cast<size_t>(kLimit));
  // The limit was reached, so the bound above was really exercised.
  EXPECT_EQ(tracker.max_unfinished(), static_cast<size_t>(kLimit));
  const auto status = environments->get(ns_, "agents")["status"];
  EXPECT_EQ(status["sessions"]["claimed"], kSessions);
  EXPECT_EQ(status["sessions"]["failed"], 0);
  EXPECT_EQ(status["activeSessions"], 0);
  // Succeeded pods are removed with their Secrets (retention.succeededSeconds defaults to 0).
  eventually([&] { return list(kube::resources::secrets()).size() == 1; }, seconds(60),
             "session Secrets to be removed with their pods (only the key remains)");
  const std::string metrics = operator_process->metrics();
  EXPECT_EQ(metric_sum(metrics, "perimeter_sessions_started_total"), kSessions);
  EXPECT_EQ(metric_sum(metrics, "perimeter_sessions_succeeded_total"), kSessions);
  EXPECT_EQ(metric_sum(metrics, "perimeter_claim_to_pod_created_seconds_count"), kSessions);
}

TEST_F(OperatorE2eTest, KillingTheOperatorMidClaimTenTimesLosesAndDoublesNothing) {
  constexpr int kSessions = 40;
  // 150 ms on every API reply keeps each claim (poll ... ack) open for a few hundred
  // milliseconds, so the kills below land in the middle of claims rather than between them.
  ASSERT_EQ(
      testing::http_call(sim_->url(), "POST", "/admin/faults", json{{"latency_ms", 150}}.dump())
          .status,
      200);
  create_environment(100, json::object(), {{"poll", {{"reclaimOlderThanMs", 1000}}}});
  const auto work_ids = enqueue(kSessions);
  std::mt19937 random(20261123);
  std::uniform_int_distribution<int> lifetime_ms(150, 1500);
  for (int round = 0; round < 10; ++round) {
    auto operator_process = start_operator();
    std::this_thread::sleep_for(milliseconds(lifetime_ms(random)));
    operator_process->kill9();
  }
  auto operator_process = start_operator();
  // The pod comes after the ack: an item a kill left acknowledged without its pod gets it from
  // the new leader's claims sweep, so both are waited for.
  eventually(
      [&] {
        for (const auto& work_id : work_ids) {
          if (work_view(work_id)["state"] != "starting") return false;
        }
        std::set<std::string> with_pods;
        for (const auto& pod : list(kube::resources::pods()))
          with_pods.insert(pod["metadata"]["annotations"].value("perimeter.dev/work-id", ""));
        return std::all_of(work_ids.begin(), work_ids.end(),
                           [&](const std::string& id) { return with_pods.count(id) > 0; });
      },
      seconds(180), "every work item to be acknowledged and to have its pod");
  // Evidence that kills hit between a poll and its ack: those items were handed out again.
  int reclaimed = 0;
  for (const auto& work_id : work_ids) {
    const auto transitions = work_view(work_id)["transitions"];
    reclaimed +=
        static_cast<int>(std::count(transitions.begin(), transitions.end(), json("reclaimed")));
  }
  std::cout << "items handed out again after a kill: " << reclaimed << "\n";
  EXPECT_GT(reclaimed, 0) << "no kill landed mid-claim; the test proved nothing";

  const auto pods = list(kube::resources::pods());
  std::map<std::string, int> pods_per_work_id;
  for (const auto& pod : pods)
    ++pods_per_work_id[pod["metadata"]["annotations"]["perimeter.dev/work-id"]];
  EXPECT_EQ(pods.size(), static_cast<size_t>(kSessions));
  for (const auto& work_id : work_ids) {
    EXPECT_EQ(pods_per_work_id[work_id], 1) << work_id;
    // Acknowledged exactly once: a doubled claim would show a second queued->starting.
    const auto transitions = work_view(work_id)["transitions"];
    EXPECT_EQ(std::count(transitions.begin(), transitions.end(), json("queued->starting")), 1)
        << work_id << ": " << transitions.dump();
  }
  // No orphan: one Secret per pod, plus the environment key.
  EXPECT_EQ(list(kube::resources::secrets()).size(), static_cast<size_t>(kSessions) + 1);
}

// Two hundred sessions while the operator is killed with SIGKILL at random moments and started
// again, with retention and the orphan and gate sweeps all running at short intervals, so that
// kills land in claims, in status writes, in the marking of outcomes and in retention's deletes.
// Every item ends with exactly one pod that ran, status counts what the simulator recorded, and
// no Secret outlives its pod. The kills are drawn from a seed printed at the start
// (PERIMETER_E2E_SEED repeats a run).
TEST_F(OperatorE2eTest, KillingTheOperatorAtRandomForTwoHundredSessionsLosesAndDoublesNothing) {
  constexpr int kSessions = 200;
  constexpr int kRetentionSeconds = 5;
  constexpr int kOrphanSweepSeconds = 5;
  constexpr int kResyncSeconds = 3;
  const auto started = std::chrono::steady_clock::now();
  const char* seed_text = std::getenv("PERIMETER_E2E_SEED");
  const unsigned seed =
      seed_text != nullptr ? static_cast<unsigned>(std::stoul(seed_text)) : std::random_device{}();
  std::cout << "seed " << seed << " (PERIMETER_E2E_SEED=" << seed << " repeats the kills)\n";
  std::mt19937 random(seed);

  // As in the ten-kill test: 150 ms on every API reply keeps claims open so kills land in them.
  ASSERT_EQ(
      testing::http_call(sim_->url(), "POST", "/admin/faults", json{{"latency_ms", 150}}.dump())
          .status,
      200);
  create_environment(
      50, {{"podAnnotations", {{"perimeter.dev/kwok-complete-after", "1s"}}}},
      {{"poll", {{"reclaimOlderThanMs", 1000}}},
       {"retention",
        {{"succeededSeconds", kRetentionSeconds}, {"failedSeconds", kRetentionSeconds}}}});
  auto pods = client(kube::resources::pods());
  runtime::RuntimeMetrics runtime_metrics(registry_);
  testing::PodTracker tracker(*pods, ns_, runtime_metrics);
  const std::vector<std::string> sweeps = {"--resync-seconds",
                                           std::to_string(kResyncSeconds),
                                           "--orphan-sweep-seconds",
                                           std::to_string(kOrphanSweepSeconds),
                                           "--gate-sweep-seconds",
                                           "2"};
  const auto work_ids = enqueue(kSessions);

  const int kills = std::uniform_int_distribution<int>(15, 20)(random);
  std::uniform_int_distribution<int> lifetime_ms(300, 2500);
  std::cout << kills << " kills, after (ms):";
  for (int kill = 0; kill < kills; ++kill) {
    auto operator_process = start_operator(sweeps);
    const int lifetime = lifetime_ms(random);
    std::cout << " " << lifetime << std::flush;
    std::this_thread::sleep_for(milliseconds(lifetime));
    operator_process->kill9();
  }
  std::cout << "\n";
  auto operator_process = start_operator(sweeps);

  // Every wait is bounded; together they stay well inside the test's timeout.
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& work_id : work_ids) {
          if (work_view(work_id)["state"] != "starting") return false;
        }
        return true;
      },
      seconds(150), "every work item to be acknowledged"));
  auto environments = client(agent_environments());
  const auto sessions = [&] {
    return environments->get(ns_, "agents")
        .value("status", json::object())
        .value("sessions", json::object());
  };
  EXPECT_TRUE(eventually(
      [&] {
        const json counted = sessions();
        return counted.value("succeeded", 0) >= kSessions &&
               counted.value("pendingMarks", json::array()).empty();
      },
      seconds(120), "every session counted as succeeded, and no mark pending"))
      << sessions().dump();
  EXPECT_TRUE(eventually([&] { return list(kube::resources::pods()).empty(); }, seconds(60),
                         "retention to remove every finished runner pod"));

  // No Secret outlives its pod by more than a sweep and a margin (retention already ran before
  // the pod was deleted). Checked against when the watch saw each pod go.
  const auto allowed = seconds(kOrphanSweepSeconds + kResyncSeconds + 20);
  std::string outliving, left;
  eventually(
      [&] {
        outliving.clear();
        left.clear();
        for (const auto& secret : list(kube::resources::secrets())) {
          const std::string name = secret["metadata"]["name"];
          if (name == "env-key") continue;
          const auto gone = tracker.deleted_at(name);
          const std::string about =
              name + " (pod " +
              (gone ? "gone " +
                          std::to_string(std::chrono::duration_cast<seconds>(
                                             std::chrono::steady_clock::now() - *gone)
                                             .count()) +
                          " s"
                    : std::string("never seen deleted")) +
              ", annotations " + secret["metadata"].value("annotations", json::object()).dump() +
              ")\n";
          if (gone && std::chrono::steady_clock::now() - *gone > allowed) outliving += about;
          left += about;
        }
        return left.empty() || !outliving.empty();
      },
      allowed + seconds(10), "every runner Secret to be removed after its pod");
  EXPECT_TRUE(outliving.empty()) << "Secrets that outlived their pods by more than "
                                 << allowed.count() << " s:\n"
                                 << outliving;
  EXPECT_TRUE(left.empty()) << "runner Secrets left:\n" << left;

  // Exactly one pod per item, and it ran to the end; none for anything else.
  const auto uids = tracker.uids_per_work_id();
  const auto succeeded = tracker.succeeded_uids();
  EXPECT_EQ(uids.size(), static_cast<size_t>(kSessions));
  int reclaimed = 0, started_items = 0;
  for (const auto& work_id : work_ids) {
    const auto it = uids.find(work_id);
    if (it == uids.end()) {
      ADD_FAILURE() << work_id << " never got a pod";
    } else {
      EXPECT_EQ(it->second.size(), 1u) << work_id << " got more than one pod";
      for (const auto& uid : it->second)
        EXPECT_EQ(succeeded.count(uid), 1u) << work_id << ": pod " << uid << " never succeeded";
    }
    const auto transitions = work_view(work_id)["transitions"];
    const auto starts = std::count(transitions.begin(), transitions.end(), json("queued->starting"));
    EXPECT_EQ(starts, 1) << work_id << ": " << transitions.dump();
    started_items += starts > 0 ? 1 : 0;
    reclaimed +=
        static_cast<int>(std::count(transitions.begin(), transitions.end(), json("reclaimed")));
  }
  std::cout << "items handed out again after a kill: " << reclaimed << "\n";
  EXPECT_GT(reclaimed, 0) << "no kill landed mid-claim; the test proved nothing";

  // The counts in status are what the simulator recorded, and survive every kill.
  const json counted = sessions();
  EXPECT_EQ(counted.value("claimed", -1), started_items) << counted.dump();
  EXPECT_EQ(counted.value("succeeded", -1), started_items) << counted.dump();
  EXPECT_EQ(counted.value("failed", -1), 0) << counted.dump();
  EXPECT_TRUE(counted.value("pendingMarks", json::array()).empty()) << counted.dump();
  EXPECT_TRUE(operator_process->running());
  std::cout << "took "
            << std::chrono::duration_cast<seconds>(std::chrono::steady_clock::now() - started)
                   .count()
            << " s\n";
}

TEST_F(OperatorE2eTest, EverySessionGetsItsPodWhileTwentyPercentOfApiCallsFail) {
  constexpr int kSessions = 30;
  const auto faults = testing::http_call(sim_->url(), "POST", "/admin/faults",
                                         json{{"error_5xx_rate", 0.2}}.dump());
  ASSERT_EQ(faults.status, 200) << faults.body;
  create_environment(100, json::object(), {{"poll", {{"reclaimOlderThanMs", 1000}}}});
  const auto work_ids = enqueue(kSessions);
  auto operator_process = start_operator();
  eventually(
      [&] {
        for (const auto& work_id : work_ids) {
          if (work_view(work_id)["state"] != "starting") return false;
        }
        return list(kube::resources::pods()).size() == static_cast<size_t>(kSessions);
      },
      seconds(240), "every session to get its pod and be acknowledged");
  std::set<std::string> pod_work_ids;
  for (const auto& pod : list(kube::resources::pods())) {
    pod_work_ids.insert(pod["metadata"]["annotations"]["perimeter.dev/work-id"].get<std::string>());
  }
  EXPECT_EQ(pod_work_ids, std::set<std::string>(work_ids.begin(), work_ids.end()));
  // The faults really happened and were retried.
  const std::string metrics = operator_process->metrics();
  EXPECT_GT(metric_sum(metrics, "perimeter_agentapi_retries_total"), 0) << metrics;
}

TEST_F(OperatorE2eTest, AMissingKeyIsAConditionThatClearsWhenTheSecretAppears) {
  client(kube::resources::secrets())->remove(ns_, "env-key");
  create_environment(3, json::object());
  auto operator_process = start_operator();
  auto environments = client(agent_environments());
  const auto condition = [&](const std::string& type) {
    const auto object = environments->get(ns_, "agents");
    for (const auto& c :
         object.value("status", json::object()).value("conditions", json::array())) {
      if (c["type"] == type) return c;
    }
    return json::object();
  };
  eventually([&] { return condition("CredentialsReady").value("reason", "") == "SecretNotFound"; },
             seconds(60), "CredentialsReady=False/SecretNotFound");
  EXPECT_EQ(condition("Ready")["status"], "False");
  EXPECT_TRUE(operator_process->running()) << "a missing key must not crash the operator";

  client(kube::resources::secrets())
      ->create(ns_, {{"apiVersion", "v1"},
                     {"kind", "Secret"},
                     {"metadata", {{"name", "env-key"}, {"labels", key_mark()}}},
                     {"stringData", {{"environment-key", "not-the-key"}}}});
  eventually([&] { return condition("CredentialsReady").value("reason", "") == "KeyRejected"; },
             seconds(120), "CredentialsReady=False/KeyRejected for a wrong key");

  client(kube::resources::secrets())
      ->merge_patch(ns_, "env-key", {{"stringData", {{"environment-key", environment_key_}}}});
  eventually([&] { return condition("Ready").value("status", "") == "True"; }, seconds(120),
             "Ready=True once the right key is in the Secret");
  EXPECT_EQ(condition("QueueReachable")["status"], "True");
}

TEST_F(OperatorE2eTest, SuspendClaimsNothingNewAndLetsRunningSessionsFinish) {
  create_environment(10, {{"podAnnotations", {{"perimeter.dev/kwok-complete-after", "3s"}}}});
  auto operator_process = start_operator();
  const auto first = enqueue(2);
  eventually([&] { return list(kube::resources::pods()).size() == 2; }, seconds(60),
             "the first two sessions' pods");
  auto environments = client(agent_environments());
  environments->merge_patch(ns_, "agents", {{"spec", {{"suspend", true}}}});
  const auto status = [&] {
    return environments->get(ns_, "agents").value("status", json::object());
  };
  eventually([&] { return status()["observedGeneration"] == 2; }, seconds(60),
             "the operator to see the suspension");
  const auto later = enqueue(3);
  // The running sessions finish while suspended...
  eventually([&] { return status().value("sessions", json::object()).value("succeeded", 0) == 2; },
             seconds(60), "the two running sessions to finish while suspended");
  // ... and nothing new was claimed meanwhile (polls every few seconds would have taken them).
  std::this_thread::sleep_for(seconds(5));
  EXPECT_EQ(status()["sessions"]["claimed"], 2) << status().dump();
  for (const auto& work_id : later) EXPECT_EQ(work_view(work_id)["state"], "queued") << work_id;
  json ready;
  const json current = status();
  for (const auto& c : current["conditions"]) {
    if (c["type"] == "Ready") ready = c;
  }
  EXPECT_EQ(ready["reason"], "Suspended");

  environments->merge_patch(ns_, "agents", {{"spec", {{"suspend", false}}}});
  eventually([&] { return status().value("sessions", json::object()).value("succeeded", 0) == 5; },
             seconds(90), "the queued sessions to be claimed and finish once resumed");
}

TEST_F(OperatorE2eTest, DeletingTheEnvironmentStopsClaimingAndItsPodsGoWithIt) {
  create_environment(10, json::object());
  auto operator_process = start_operator();
  enqueue(3);
  eventually([&] { return list(kube::resources::pods()).size() == 3; }, seconds(60),
             "three runner pods");
  client(agent_environments())->remove(ns_, "agents");
  // The garbage collector removes what the AgentEnvironment owned.
  eventually(
      [&] {
        return list(kube::resources::pods()).empty() &&
               list(kube::resources::secrets()).size() == 1 &&
               list(kube::resources::network_policies()).empty();
      },
      seconds(120), "the runner pods, their Secrets and the NetworkPolicy to be collected");
  // No poller is left claiming for it.
  const auto after = enqueue(2);
  std::this_thread::sleep_for(seconds(5));
  for (const auto& work_id : after) EXPECT_EQ(work_view(work_id)["state"], "queued") << work_id;
  EXPECT_TRUE(operator_process->running());
}

// Issue 17, item 4, against a real apiserver: the runner pods' NetworkPolicy, opened to every
// destination or deleted by hand, is put back by the pass its watch event wakes. The bound is
// far below the five-minute periodic check, so only the watch can meet it.
TEST_F(OperatorE2eTest, ARunnerNetworkPolicyOpenedOrDeletedByHandIsPutBackBeforeTheNextCheck) {
  create_environment(3, json::object());
  auto operator_process = start_operator();
  auto policies = client(kube::resources::network_policies());
  json applied;
  eventually(
      [&] {
        const auto items = list(kube::resources::network_policies());
        if (items.size() != 1) return false;
        applied = items[0];
        return true;
      },
      seconds(60), "the runner NetworkPolicy");
  const std::string name = applied["metadata"]["name"];

  policies->merge_patch(ns_, name, {{"spec", {{"egress", json::array({json::object()})}}}});
  eventually([&] { return policies->get(ns_, name)["spec"] == applied["spec"]; }, seconds(30),
             "the opened NetworkPolicy to be closed again");

  policies->remove(ns_, name);
  eventually(
      [&] {
        const auto items = list(kube::resources::network_policies());
        return items.size() == 1 && items[0]["spec"] == applied["spec"];
      },
      seconds(30), "the deleted NetworkPolicy to be back");
  EXPECT_TRUE(operator_process->running());
}

// Gateway egress mode, end to end on the apiserver: the operator runs the egress gateway
// (Deployment, Service, NetworkPolicy, ConfigMap, key Secret) and keeps its configuration equal
// to the environments; a runner pod's HTTPS_PROXY carries a credential the gateway's own code
// accepts for that session under the key in the Secret; objects deleted by hand come back, the
// key unchanged (a new key would lock every running session out).
TEST_F(OperatorE2eTest, InGatewayModeTheOperatorRunsTheGatewayAndKeepsItsConfigAndKey) {
  create_environment(2, json::object(),
                     {{"egress", {{"allowedHosts", json::array({{{"host", "pypi.org"}}})}}}});
  auto operator_process =
      start_operator({"--runner-egress", "gateway", "--egress-gateway-namespace", ns_,
                      "--egress-gateway-image", "perimeter-egress-gateway:e2e"});
  enqueue(1);
  auto config_maps = client(kube::resources::config_maps());
  auto secrets = client(kube::resources::secrets());
  const auto gateway_config = [&]() -> std::string {
    try {
      return config_maps->get(ns_, "perimeter-egress-gateway")["data"].value("gateway.yaml", "");
    } catch (const kube::ApiError&) {
      return "";
    }
  };
  const auto gateway_key = [&]() -> std::string {
    try {
      std::string key;
      base64_decode_any(secrets->get(ns_, "perimeter-egress-gateway-key")["data"].value("key", ""),
                        &key);
      return key;
    } catch (const kube::ApiError&) {
      return "";
    }
  };
  eventually([&] { return gateway_config().find("pypi.org") != std::string::npos; }, seconds(60),
             "the gateway's configuration to list the environment's host");
  const std::string key = gateway_key();
  ASSERT_EQ(key.size(), 64u);
  // The configuration the operator renders is one the gateway accepts.
  const auto parsed = egressgateway::parse_gateway_config(gateway_config(), false);
  ASSERT_TRUE(parsed.config) << parsed.error;
  const auto* environment = parsed.config->find_environment(ns_ + "/agents");
  ASSERT_NE(environment, nullptr) << gateway_config();
  EXPECT_TRUE(egressgateway::environment_allows(*environment, "pypi.org", 443));
  EXPECT_FALSE(egressgateway::environment_allows(*environment, "example.com", 443));

  // Restricted Pod Security admits the gateway's pods: the Deployment becomes available.
  auto deployments = client(kube::resources::deployments());
  eventually(
      [&] {
        try {
          const auto status =
              deployments->get(ns_, "perimeter-egress-gateway").value("status", json::object());
          return status.value("availableReplicas", 0) == 2;
        } catch (const kube::ApiError&) {
          return false;  // not applied yet
        }
      },
      seconds(90), "the gateway's two replicas to be available");
  EXPECT_NO_THROW(client(kube::resources::services())->get(ns_, "perimeter-egress-gateway"));

  // The runner pod goes through the gateway with its session's credential.
  json pod;
  eventually(
      [&] {
        const auto pods = list(kube::resources::pods());
        for (const auto& candidate : pods) {
          if (candidate["metadata"]["labels"].value("app.kubernetes.io/component", "") == "runner")
            pod = candidate;
        }
        return !pod.is_null();
      },
      seconds(60), "the session's runner pod");
  std::string secret_name;
  for (const auto& variable : pod["spec"]["containers"][0]["env"]) {
    if (variable["name"] == "HTTPS_PROXY")
      secret_name = variable["valueFrom"]["secretKeyRef"]["name"];
  }
  ASSERT_FALSE(secret_name.empty()) << pod["spec"]["containers"][0]["env"].dump();
  std::string proxy_url;
  ASSERT_TRUE(base64_decode_any(secrets->get(ns_, secret_name)["data"].value("https-proxy", ""),
                                &proxy_url));
  EXPECT_NE(proxy_url.find("@perimeter-egress-gateway." + ns_ + ".svc.cluster.local:3128"),
            std::string::npos)
      << "the Service's name";
  const std::string userinfo = proxy_url.substr(7, proxy_url.find('@') - 7);
  const auto check =
      egressgateway::verify_proxy_authorization("Basic " + base64_encode(userinfo), key);
  ASSERT_TRUE(check.identity) << check.failure;
  EXPECT_EQ(check.identity->environment, ns_ + "/agents");
  EXPECT_EQ(check.identity->session,
            pod["metadata"]["labels"].value("perimeter.dev/session-id", ""));

  // A new host on the resource reaches the gateway's configuration.
  client(agent_environments())
      ->merge_patch(ns_, "agents",
                    {{"spec",
                      {{"egress",
                        {{"allowedHosts",
                          json::array({{{"host", "pypi.org"}}, {{"host", "*.example.com"}}})}}}}}});
  eventually([&] { return gateway_config().find("*.example.com") != std::string::npos; },
             seconds(30), "the new host in the gateway's configuration");

  // Deleted by hand: back, and the key the same.
  config_maps->remove(ns_, "perimeter-egress-gateway");
  secrets->remove(ns_, "perimeter-egress-gateway-key");
  eventually([&] { return !gateway_config().empty() && gateway_key() == key; }, seconds(30),
             "the configuration and the key to be put back");
  const auto status = client(agent_environments())->get(ns_, "agents")["status"];
  EXPECT_EQ(status["egress"]["mode"], "Gateway");
  EXPECT_TRUE(operator_process->running());
}

// The confused deputy, both ways. Mallory may create AgentEnvironments in the namespace and read
// nothing else; she runs a server of her own. Neither pointing an AgentEnvironment at her server
// with the namespace's real key, nor naming some other Secret of the namespace on a host the
// installer allowed, gets one byte of a Secret to her.
TEST_F(OperatorE2eTest, AUserWhoMayOnlyCreateAgentEnvironmentsCannotHaveASecretSentToHerServer) {
  const std::string kubectl = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
                              " --kubeconfig " + kubeconfig_;
  const auto apply_as_mallory = [&](const json& object) {
    const std::string file = logs_->path() + "/mallory.json";
    std::ofstream(file) << object.dump();
    const auto applied = process::run_shell(kubectl + " --as=mallory create -f " + file);
    EXPECT_EQ(applied.exit_code, 0) << applied.output;
  };
  const json author_role = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "Role"},
      {"metadata", {{"name", "agentenvironment-author"}, {"namespace", ns_}}},
      {"rules",
       {{{"apiGroups", {"perimeter.dev"}},
         {"resources", {"agentenvironments"}},
         {"verbs", {"get", "list", "watch", "create", "update", "patch", "delete"}}}}}};
  const json author_binding = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "RoleBinding"},
      {"metadata", {{"name", "mallory"}, {"namespace", ns_}}},
      {"roleRef",
       {{"apiGroup", "rbac.authorization.k8s.io"},
        {"kind", "Role"},
        {"name", "agentenvironment-author"}}},
      {"subjects",
       {{{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "User"}, {"name", "mallory"}}}}};
  client({"rbac.authorization.k8s.io", "v1", "roles", "Role", true})->create(ns_, author_role);
  client({"rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true})
      ->create(ns_, author_binding);
  for (const char* verb : {"get", "list", "watch"}) {
    EXPECT_EQ(
        process::run_shell(kubectl + " auth can-i " + verb + " secrets --as=mallory -n " + ns_)
            .last_line(),
        "no")
        << "the test needs a user who cannot read Secrets herself";
  }
  EXPECT_EQ(
      process::run_shell(
          kubectl + " auth can-i create agentenvironments.perimeter.dev --as=mallory -n " + ns_)
          .last_line(),
      "yes");

  // Another application's Secret in the same namespace, never marked for Perimeter.
  const std::string db_password = "db-password-" + std::to_string(::getpid());
  client(kube::resources::secrets())
      ->create(ns_, {{"apiVersion", "v1"},
                     {"kind", "Secret"},
                     {"metadata", {{"name", "payments-db"}}},
                     {"stringData", {{"password", db_password}}}});

  RecordingServer not_allowed;  // her server, which no installer allowed
  RecordingServer allowed;      // her server behind an origin the installer did allow
  auto operator_process =
      start_operator({"--allowed-api-hosts", sim_->url() + "," + allowed.url()});
  const auto environment = [&](const std::string& name, const std::string& url,
                               const std::string& secret, const std::string& key) {
    return json{{"apiVersion", "perimeter.dev/v1alpha1"},
                {"kind", "AgentEnvironment"},
                {"metadata", {{"name", name}, {"namespace", ns_}}},
                {"spec",
                 {{"environmentId", environment_id_},
                  {"environmentKeySecretRef", {{"name", secret}, {"key", key}}},
                  {"apiBaseUrl", url},
                  {"runner", {{"image", "perimeter-runner:e2e"}}}}}};
  };
  // Way 1: the namespace's real, marked key, to her host.
  apply_as_mallory(environment("exfiltrate-key", not_allowed.url(), "env-key", "environment-key"));
  // Way 2: an allowed host, but a Secret nobody marked for Perimeter.
  apply_as_mallory(environment("exfiltrate-db", allowed.url(), "payments-db", "password"));

  auto environments = client(agent_environments());
  const auto credentials = [&](const std::string& name) {
    const auto object = environments->get(ns_, name);
    for (const auto& c : object.value("status", json::object()).value("conditions", json::array()))
      if (c["type"] == "CredentialsReady") return c;
    return json::object();
  };
  eventually(
      [&] { return credentials("exfiltrate-key").value("reason", "") == "ApiHostNotAllowed"; },
      seconds(60), "CredentialsReady=False/ApiHostNotAllowed for a host nobody allowed");
  eventually([&] { return credentials("exfiltrate-db").value("reason", "") == "SecretNotMarked"; },
             seconds(60), "CredentialsReady=False/SecretNotMarked for an unmarked Secret");
  EXPECT_EQ(credentials("exfiltrate-key")["status"], "False");
  EXPECT_NE(credentials("exfiltrate-key").value("message", "").find("--allowed-api-hosts"),
            std::string::npos);
  EXPECT_NE(credentials("exfiltrate-db")
                .value("message", "")
                .find("label secret payments-db perimeter.dev/environment-key=true"),
            std::string::npos);
  // Long enough for several reconciles and poll attempts, had any been made.
  std::this_thread::sleep_for(seconds(5));
  EXPECT_EQ(not_allowed.connections(), 0) << not_allowed.received();
  EXPECT_EQ(allowed.connections(), 0) << allowed.received();
  EXPECT_TRUE(operator_process->running());

  // The control that shows the servers would have seen a delivery: once the Secret's owner marks
  // it, the allowed server receives it as a Bearer token. (This is the owner's decision, which
  // Mallory cannot make: she may not write Secrets.)
  EXPECT_EQ(
      process::run_shell(kubectl + " auth can-i patch secrets --as=mallory -n " + ns_).last_line(),
      "no");
  client(kube::resources::secrets())
      ->merge_patch(ns_, "payments-db", {{"metadata", {{"labels", key_mark()}}}});
  eventually([&] { return allowed.received().find("Bearer " + db_password) != std::string::npos; },
             seconds(60), "the marked Secret to reach the allowed host");
  EXPECT_EQ(not_allowed.connections(), 0) << not_allowed.received();
}

// The same attack with the marked key and a host the operator allows, for another environment id
// than the one the key's owner named: refused with the reason, and nothing is sent.
TEST_F(OperatorE2eTest, AKeyMarkedForOneEnvironmentIsNotSentForAnother) {
  client(kube::resources::secrets())
      ->merge_patch(
          ns_, "env-key",
          {{"metadata", {{"annotations", {{"perimeter.dev/environment-ids", "env_other"}}}}}});
  create_environment(3, json::object());
  auto operator_process = start_operator();
  auto environments = client(agent_environments());
  const auto condition = [&](const std::string& type) {
    for (const auto& c : environments->get(ns_, "agents")
                             .value("status", json::object())
                             .value("conditions", json::array()))
      if (c["type"] == type) return c;
    return json::object();
  };
  eventually(
      [&] {
        return condition("CredentialsReady").value("reason", "") == "SecretNotForEnvironment";
      },
      seconds(60), "CredentialsReady=False/SecretNotForEnvironment");
  // Nothing reached the queue for it: no worker has polled the environment.
  std::this_thread::sleep_for(seconds(3));
  const auto stats = queue_stats();
  ASSERT_EQ(stats.status, 200) << stats.body;
  EXPECT_EQ(stats.json().value("workers_polling", -1), 0) << stats.body;
  client(kube::resources::secrets())
      ->merge_patch(ns_, "env-key",
                    {{"metadata",
                      {{"annotations",
                        {{"perimeter.dev/environment-ids", "env_other," + environment_id_}}}}}});
  eventually([&] { return condition("Ready").value("status", "") == "True"; }, seconds(120),
             "Ready=True once the key's owner names this environment too");
}

// Two AgentEnvironments for one hosted environment would claim the same items: the second is
// refused with the reason and never polls; when the first goes, the second takes over.
TEST_F(OperatorE2eTest, ASecondAgentEnvironmentForTheSameEnvironmentIsRefusedUntilTheFirstGoes) {
  create_environment(3, json::object());
  const std::string other = ns_ + "-dup";
  client(kube::resources::namespaces())
      ->create("", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", other}}}});
  client(kube::resources::secrets())
      ->create(other, {{"apiVersion", "v1"},
                       {"kind", "Secret"},
                       {"metadata", {{"name", "env-key"}, {"labels", key_mark()}}},
                       {"stringData", {{"environment-key", environment_key_}}}});
  auto environments = client(agent_environments());
  std::this_thread::sleep_for(milliseconds(1100));  // creationTimestamp has 1 s resolution
  environments->create(other, {{"apiVersion", "perimeter.dev/v1alpha1"},
                               {"kind", "AgentEnvironment"},
                               {"metadata", {{"name", "agents"}}},
                               {"spec",
                                {{"environmentId", environment_id_},
                                 {"environmentKeySecretRef", {{"name", "env-key"}}},
                                 {"apiBaseUrl", sim_->url()},
                                 {"runner", {{"image", "perimeter-runner:e2e"}}}}}});
  auto operator_process = start_operator();
  const auto ready = [&](const std::string& ns) {
    for (const auto& c : environments->get(ns, "agents")
                             .value("status", json::object())
                             .value("conditions", json::array()))
      if (c["type"] == "Ready") return c;
    return json::object();
  };
  ASSERT_TRUE(eventually([&] { return ready(ns_).value("status", "") == "True"; }, seconds(120),
                         "the first AgentEnvironment Ready"));
  ASSERT_TRUE(eventually(
      [&] { return ready(other).value("reason", "") == "DuplicateEnvironment"; }, seconds(60),
      "the second refused with DuplicateEnvironment"));
  EXPECT_NE(ready(other).value("message", "").find(ns_ + "/agents"), std::string::npos)
      << ready(other).dump();
  // One worker polls the environment, not two.
  std::this_thread::sleep_for(seconds(2));
  const auto stats = queue_stats();
  ASSERT_EQ(stats.status, 200) << stats.body;
  EXPECT_LE(stats.json().value("workers_polling", -1), 1) << stats.body;
  environments->remove(ns_, "agents");
  EXPECT_TRUE(eventually([&] { return ready(other).value("status", "") == "True"; },
                         seconds(120), "the second to take over once the first is gone"));
  client(kube::resources::namespaces())->remove("", other);
}

// The chart's default RBAC, rendered, applied, and the operator run under exactly that identity:
// it serves the namespace that opted in, tells the one that did not, and can touch no Secret in
// kube-system or in that other namespace, by any verb.
TEST_F(OperatorE2eTest,
       UnderTheChartsDefaultRbacTheOperatorTouchesSecretsOnlyWhereANamespaceOptedIn) {
  auto& cluster = testing::shared_cluster(cluster_options());
  const std::string tools = localcluster::tools_bin_dir();
  const std::string kubectl =
      localcluster::require_tool(tools, "kubectl") + " --kubeconfig " + kubeconfig_;
  const std::string closed = ns_ + "-closed", system = ns_ + "-system", release = "p" + ns_;
  for (const auto& ns : {closed, system}) {
    client(kube::resources::namespaces())
        ->create("", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});
  }
  const std::string helm_template =
      localcluster::require_tool(tools, "helm") + " template " + release + " " + source_dir() +
      "/charts/perimeter --namespace " + system + " --set fullnameOverride=" + release +
      " --set sessionNamespaces={" + ns_ + "} --set allowedApiHosts={" + sim_->url() + "}";
  const auto rbac = process::run_shell(helm_template +
                                       " --show-only templates/rbac.yaml"
                                       " --show-only templates/serviceaccount.yaml > " +
                                       logs_->path() + "/rbac.yaml && " + kubectl + " apply -f " +
                                       logs_->path() + "/rbac.yaml");
  ASSERT_EQ(rbac.exit_code, 0) << rbac.output;

  const std::string as = " --as=system:serviceaccount:" + system + ":" + release;
  const auto can = [&](const std::string& what) {
    return process::run_shell(kubectl + " auth can-i " + what + as).last_line();
  };
  for (const char* verb :
       {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}) {
    for (const auto& ns : {std::string("kube-system"), closed, system}) {
      EXPECT_EQ(can(std::string(verb) + " secrets -n " + ns), "no") << verb << " secrets in " << ns;
      EXPECT_EQ(can(std::string(verb) + " pods -n " + ns), "no") << verb << " pods in " << ns;
    }
    EXPECT_EQ(can(std::string(verb) + " secrets --all-namespaces"), "no") << verb;
  }
  EXPECT_EQ(can("get secrets -n " + ns_), "yes");
  EXPECT_EQ(can("create pods -n " + ns_), "yes");
  EXPECT_EQ(can("list agentenvironments.perimeter.dev --all-namespaces"), "yes");

  // The operator as that ServiceAccount, with the flags the chart renders.
  const auto token = process::run_shell(kubectl + " -n " + system + " create token " + release +
                                        " --duration=1h 2>/dev/null");
  ASSERT_EQ(token.exit_code, 0) << token.output;
  const std::string kubeconfig = logs_->path() + "/operator-sa.kubeconfig";
  std::ofstream(kubeconfig)
      << "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n"
      << "    server: " << cluster.apiserver_url() << "\n"
      << "    certificate-authority: " << cluster.ca_file() << "\n"
      << "users:\n- name: operator\n  user:\n    token: " << token.last_line()
      << "\ncontexts:\n- name: operator\n  context:\n    cluster: local\n"
      << "    user: operator\ncurrent-context: operator\n";
  std::vector<std::string> args = {"--poll-threads", "4"};
  const auto deployment =
      process::run_shell(helm_template + " --show-only templates/deployment.yaml");
  ASSERT_EQ(deployment.exit_code, 0) << deployment.output;
  for (const char* flag : {"--session-namespaces=", "--allowed-api-hosts=", "--tunnel-namespaces=",
                           "--tunnels-service-account="}) {
    const auto at = deployment.output.find(flag);
    ASSERT_NE(at, std::string::npos) << flag << " is not in the rendered Deployment";
    args.push_back(deployment.output.substr(at, deployment.output.find('\n', at) - at));
  }
  EXPECT_EQ(args[2], "--session-namespaces=" + ns_);

  // An AgentEnvironment in each namespace, each with a marked key.
  create_environment(3, json::object());
  client(kube::resources::secrets())
      ->create(closed, {{"apiVersion", "v1"},
                        {"kind", "Secret"},
                        {"metadata", {{"name", "env-key"}, {"labels", key_mark()}}},
                        {"stringData", {{"environment-key", environment_key_}}}});
  client(agent_environments())
      ->create(closed, {{"apiVersion", "perimeter.dev/v1alpha1"},
                        {"kind", "AgentEnvironment"},
                        {"metadata", {{"name", "agents"}}},
                        {"spec",
                         {{"environmentId", environment_id_},
                          {"environmentKeySecretRef", {{"name", "env-key"}}},
                          {"apiBaseUrl", sim_->url()},
                          {"runner", {{"image", "perimeter-runner:e2e"}}}}}});
  testing::OperatorProcess operator_process(testing::OperatorProcessOptions{
      bin_dir() + "/perimeter-operator", kubeconfig, logs_->path() + "/operator.log", args});

  auto environments = client(agent_environments());
  const auto ready = [&](const std::string& ns) {
    for (const auto& c : environments->get(ns, "agents")
                             .value("status", json::object())
                             .value("conditions", json::array()))
      if (c["type"] == "Ready") return c;
    return json::object();
  };
  eventually([&] { return ready(closed).value("reason", "") == "NamespaceNotEnabled"; },
             seconds(60), "Ready=False/NamespaceNotEnabled where the namespace did not opt in");
  EXPECT_EQ(ready(closed)["status"], "False");
  EXPECT_NE(ready(closed).value("message", "").find("sessionNamespaces"), std::string::npos);
  eventually([&] { return ready(ns_).value("status", "") == "True"; }, seconds(60),
             "Ready=True in the namespace that opted in");
  enqueue(2);
  eventually([&] { return list(kube::resources::pods()).size() == 2; }, seconds(60),
             "two runner pods, created under the namespace's RoleBinding");
  EXPECT_TRUE(operator_process.running()) << "a namespace that did not opt in must not crash it";
  EXPECT_EQ(client(kube::resources::pods())->list(closed)["items"].size(), 0u);
  const std::string log = read_file(logs_->path() + "/operator.log");
  EXPECT_EQ(rbac_denials(log), "") << "the operator tried something its RBAC does not allow";
}

// Metric hygiene and the counters as a platform team's Prometheus sees them: a real Prometheus
// scrapes the operator every second while ten sessions are claimed and finish, and its HTTP API
// must report exactly what the simulator handed out and acknowledged; promtool's linter passes
// the operator's exposition, and no series carries a per-session label (a work id, a session id,
// a pod name), whose values would grow without bound.
TEST_F(OperatorE2eTest, APrometheusScrapingTheOperatorFindsTheSessionsTheSimulatorRecorded) {
  ASSERT_EQ(testing::missing_prometheus_tools(), "");
  constexpr int kSessions = 10;
  create_environment(kSessions,
                     {{"podAnnotations", {{"perimeter.dev/kwok-complete-after", "1s"}}}});
  auto operator_process = start_operator();
  testing::PrometheusServer prometheus("perimeter-operator", operator_process->metrics_address());
  ASSERT_TRUE(eventually([&] { return prometheus.query("up{job=\"perimeter-operator\"}") == 1.0; },
                         seconds(30), "Prometheus to scrape the operator (up == 1)"))
      << "Prometheus running: " << prometheus.running() << "\n"
      << prometheus.log();

  const auto work_ids = enqueue(kSessions);
  auto environments = client(agent_environments());
  ASSERT_TRUE(eventually(
      [&] {
        const auto status = environments->get(ns_, "agents").value("status", json::object());
        return status.value("sessions", json::object()).value("succeeded", 0) == kSessions;
      },
      seconds(60), "every session's pod to succeed and be counted in the status"));

  // What the simulator recorded: every item handed out by a poll (once, plus once more for each
  // reclaim after a lapsed claim) and every item acknowledged, which is what gets a runner pod.
  int acknowledged = 0;
  int reclaims = 0;
  std::vector<std::string> session_ids;
  for (const auto& work_id : work_ids) {
    const auto view = work_view(work_id);
    if (!view["acknowledged_at"].is_null()) ++acknowledged;
    for (const auto& transition : view["transitions"]) reclaims += transition == "reclaimed";
    session_ids.push_back(view["data"]["id"]);
  }
  EXPECT_EQ(acknowledged, kSessions);
  const double handed_out = kSessions + reclaims;
  // The simulator does not see a KWOK pod end; the succeeded count is the cluster's.
  const double succeeded = environments->get(ns_, "agents")["status"]["sessions"]["succeeded"];

  const auto counters = [&] {
    return std::map<std::string, std::optional<double>>{
        {"claimed", prometheus.query("sum(perimeter_sessions_claimed_total)")},
        {"started", prometheus.query("sum(perimeter_sessions_started_total)")},
        {"succeeded", prometheus.query("sum(perimeter_sessions_succeeded_total)")}};
  };
  const std::map<std::string, std::optional<double>> expected = {
      {"claimed", handed_out}, {"started", acknowledged}, {"succeeded", succeeded}};
  eventually([&] { return counters() == expected; }, seconds(20),
             "Prometheus' query API to report the simulator's numbers");
  const auto seen = counters();
  for (const auto& [counter, value] : expected) {
    ASSERT_TRUE(seen.at(counter).has_value()) << counter << ": no sample in Prometheus";
    EXPECT_EQ(*seen.at(counter), *value) << "sum(perimeter_sessions_" << counter << "_total)";
  }
  // Nothing failed, and Prometheus holds the series (an empty sum would have no sample at all).
  EXPECT_EQ(prometheus.query("sum(perimeter_sessions_failed_total) or vector(0)"), 0.0);

  // promtool's linter on the exposition as scraped: counters end in _total, units are base units
  // spelled out, every family has its HELP.
  const std::string exposition = operator_process->metrics();
  ASSERT_NE(exposition.find("perimeter_sessions_started_total"), std::string::npos) << exposition;
  std::ofstream(logs_->path() + "/metrics.txt") << exposition;
  const auto lint = testing::promtool_check_metrics(exposition);
  EXPECT_EQ(lint.exit_code, 0) << "promtool check metrics found problems:\n" << lint.output;
  std::cout << "promtool check metrics: exit " << lint.exit_code << ", "
            << (lint.output.empty() ? "no problems" : lint.output) << "\n";

  // No label whose values are per session, in the exposition or in what Prometheus stored.
  // (`name` is fine: the work queue's, as controller-runtime names it, one per controller.)
  const std::set<std::string> unbounded = {"work_id",  "workid", "session_id", "session", "pod",
                                           "pod_name", "uid",    "id",         "token",   "secret"};
  for (const auto& [label, line] : label_names(exposition))
    EXPECT_EQ(unbounded.count(label), 0u) << "label " << label << " has unbounded values: " << line;
  const auto stored = prometheus.api("/api/v1/labels?match%5B%5D=" +
                                     testing::percent_encode("{job=\"perimeter-operator\"}"));
  ASSERT_TRUE(stored.has_value()) << "Prometheus' labels API did not answer";
  for (const auto& label : *stored)
    EXPECT_EQ(unbounded.count(label.get<std::string>()), 0u)
        << "Prometheus stored label " << label << " from the operator";
  for (const auto& ids : {work_ids, session_ids})
    for (const auto& id : ids)
      EXPECT_EQ(exposition.find(id), std::string::npos) << id << " appears in a metric";
}

}  // namespace
}  // namespace perimeter::e2e
