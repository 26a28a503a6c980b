// Runner pods that really run: perimeter-operator claims sessions from perimeter-sim and creates
// runner pods that a real kubelet runs on containerd + runc (the local cluster's real node), with
// the runner image imported without a registry. These tests prove what KWOK cannot: the session
// is served by perimeter-runner inside the pod, the pod's confinement is enforced by the runtime,
// the workspace limit and retention hold, and a pod that dies mid-session loses nothing.
//
// One real-node cluster is shared by every test (shared_cluster); each test has its own
// namespace, simulator, AgentEnvironment and operator. Needs root: without it, or when the real
// node cannot start, every test fails (never skips).
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "agentapi/sim_process.h"
#include "agentapi/work_secret.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/warm_pool.h"
#include "core/base64.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"
#include "operator/operator_process.h"
#include "process/process.h"
#include "real_node_cluster.h"
#include "real_node_e2e_fixture.h"

namespace perimeter::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kRunnerUid = 65532;

// "Key:\tvalue" lines (the format of /proc/self/status) of a tool's output.
std::map<std::string, std::string> status_fields(const std::string& text) {
  std::map<std::string, std::string> fields;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto value = line.find_first_not_of(" \t", colon + 1);
    fields[line.substr(0, colon)] = value == std::string::npos ? "" : line.substr(value);
  }
  return fields;
}

TEST_F(RealNodeE2eTest, SessionsUsingEveryToolCompleteThroughRealRunnerPods) {
  start_sim(60);
  // Finished pods are kept so the test can read how they ended.
  create_environment(json::object(), {{"retention", {{"succeededSeconds", 3600}}}});
  start_operator();
  std::map<std::string, Enqueued> sessions;
  for (const char* name : {"builtin-tools", "permissions", "skills"}) {
    sessions[name] = enqueue(conformance_scenario(name));
  }
  for (const auto& [name, session] : sessions) {
    SCOPED_TRACE(name);
    eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
               seconds(300), name + " to be served and its work item stopped");
    const auto recorded = results(session.session_id);
    EXPECT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
    EXPECT_EQ(recorded.value("status", ""), "terminated");
    eventually(
        [&] {
          const auto pods = pods_of(session.work_id);
          return pods.size() == 1 && phase_of(pods[0]) == "Succeeded";
        },
        seconds(120), name + "'s runner pod to succeed");
    const auto pods = pods_of(session.work_id);
    ASSERT_EQ(pods.size(), 1u) << "one pod per session";
    EXPECT_EQ(pods[0]["spec"].value("nodeName", ""), node_.at("name")) << "ran on the real node";
    const auto statuses = pods[0]["status"].value("containerStatuses", json::array());
    ASSERT_EQ(statuses.size(), 1u);
    EXPECT_EQ(statuses[0]["state"]["terminated"].value("exitCode", -1), 0) << statuses.dump();
    EXPECT_EQ(statuses[0].value("image", ""), testing::kRunnerImage);
    // Served once: acknowledged once, and the lease taken by one runner.
    const auto transitions = work_view(session.work_id)["transitions"];
    EXPECT_EQ(std::count(transitions.begin(), transitions.end(), json("queued->starting")), 1)
        << transitions.dump();
  }
}

// The warm path end to end (docs/warm-pool.md): the pool's pods admitted under `restricted` and
// ready before any session; each session handed to one of them over the assignment channel,
// served once, by a warm pod and no cold one; the pool refilled after the claims.
TEST_F(RealNodeE2eTest, AWarmPoolServesEachSessionOnceOnAWarmPodAndRefills) {
  start_sim(60);
  create_environment(json::object(), {{"retention", {{"succeededSeconds", 3600}}},
                                      {"warmPool", {{"minReady", 2}, {"maxReady", 2}}}});
  start_operator_serving_warm_pods();
  eventually([&] { return warm_pool_ready(2); }, seconds(180),
             "the pool's two warm pods to be ready");

  std::map<std::string, Enqueued> sessions;
  for (const char* name : {"builtin-tools", "permissions"}) {
    sessions[name] = enqueue(conformance_scenario(name));
  }
  for (const auto& [name, session] : sessions) {
    SCOPED_TRACE(name);
    eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
               seconds(300), name + " to be served and its work item stopped");
    const auto recorded = results(session.session_id);
    EXPECT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
    // Served by the warm pod it was assigned to, and by no pod the claim made.
    std::vector<json> serving;
    for (const auto& pod : list(kube::resources::pods())) {
      const auto annotations = pod["metadata"].value("annotations", json::object());
      if (annotations.value("perimeter.dev/assigned-work-id", "") == session.work_id ||
          annotations.value("perimeter.dev/work-id", "") == session.work_id) {
        serving.push_back(pod);
      }
    }
    ASSERT_EQ(serving.size(), 1u) << "one pod per session";
    EXPECT_EQ(serving[0]["metadata"]["labels"].value("perimeter.dev/warm", ""), "true");
    EXPECT_TRUE(
        serving[0]["metadata"]["annotations"].contains("perimeter.dev/assignment-confirmed-at"));
    EXPECT_EQ(serving[0]["spec"].value("nodeName", ""), node_.at("name"));
    const auto transitions = work_view(session.work_id)["transitions"];
    EXPECT_EQ(std::count(transitions.begin(), transitions.end(), json("queued->starting")), 1)
        << transitions.dump();
  }
  eventually([&] { return warm_pool_ready(2); }, seconds(180),
             "the pool to refill after its two claims");
}

TEST_F(RealNodeE2eTest, ContainerRunsAsNonRootOnAReadOnlyRootWithNoCapabilitiesAndSeccomp) {
  // Asked from inside, through the runner's own bash tool. The image has no `id`, so uid and gid
  // come from /proc/self/status as well (real, effective, saved, filesystem).
  const std::string scenario = R"(name: pod-confinement-probe
prompt: Show how this container is confined.
steps:
  - tool: bash
    input:
      command: |
        grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
        touch /probe-root-write; echo "RootWriteExit: $?"
        touch /workspace/probe-write; echo "WorkspaceWriteExit: $?"
    expect: {is_error: false}
)";
  start_sim(60);
  create_environment(json::object());
  start_operator();
  const auto session = enqueue(scenario);
  eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
             seconds(300), "the probe session to be served");
  const auto recorded = results(session.session_id);
  ASSERT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
  const std::string text = recorded["steps"][0]["received"].value("text", "");
  const auto fields = status_fields(text);
  const std::string ids = std::to_string(kRunnerUid) + "\t" + std::to_string(kRunnerUid) + "\t" +
                          std::to_string(kRunnerUid) + "\t" + std::to_string(kRunnerUid);
  EXPECT_EQ(fields.count("Uid") ? fields.at("Uid") : "", ids) << text;
  EXPECT_EQ(fields.count("Gid") ? fields.at("Gid") : "", ids) << text;
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(fields.count(set) ? fields.at(set) : "", "0000000000000000") << set << "\n" << text;
  }
  EXPECT_EQ(fields.count("NoNewPrivs") ? fields.at("NoNewPrivs") : "", "1") << text;
  EXPECT_EQ(fields.count("Seccomp") ? fields.at("Seccomp") : "", "2")
      << "2 is SECCOMP_MODE_FILTER\n"
      << text;
  // The root filesystem refuses the write with EROFS; the workspace takes it.
  EXPECT_NE(text.find("touch: cannot touch '/probe-root-write': Read-only file system"),
            std::string::npos)
      << text;
  EXPECT_EQ(fields.count("RootWriteExit") ? fields.at("RootWriteExit") : "", "1") << text;
  EXPECT_EQ(fields.count("WorkspaceWriteExit") ? fields.at("WorkspaceWriteExit") : "", "0") << text;
}

TEST_F(RealNodeE2eTest, AWorkspaceOverItsSizeLimitGetsThePodEvictedAndTheItemServedAgain) {
  // /workspace is a disk-backed emptyDir with sizeLimit, so the write itself succeeds; the
  // kubelet measures the volume (every volumeStatsAggPeriod, 1-2 min with jitter) and its
  // eviction manager (every 10 s) evicts the pod once usage passes the limit. The step then
  // sleeps so that the pod is still running when that happens.
  const std::string scenario = R"(name: workspace-filler
prompt: Fill the workspace past its limit.
steps:
  - tool: bash
    input:
      command: |
        head -c 16777216 /dev/zero > /workspace/fill; echo "FillExit: $?"; sleep 900
      timeout_ms: 1000000
)";
  start_sim(10);
  // Failed pods are kept 20 s so the test sees how the pod ended, then removed so the item's
  // next claim can create its pod again.
  create_environment({{"workspaceSizeLimit", "8Mi"}}, {{"retention", {{"failedSeconds", 20}}}});
  start_operator();
  const auto session = enqueue(scenario);
  eventually(
      [&] {
        const auto pods = pods_of(session.work_id);
        if (pods.size() != 1 || phase_of(pods[0]) != "Running") return false;
        std::error_code missing;
        const auto size = fs::file_size(workspace_on_node(pods[0]) + "/fill", missing);
        return !missing && size == (16u << 20);
      },
      seconds(180), "the runner to write 16 MiB into its 8 MiB workspace");
  const std::string first_uid = pods_of(session.work_id).at(0)["metadata"]["uid"];

  json evicted;
  eventually(
      [&] {
        const auto pods = pods_of(session.work_id);
        if (pods.size() != 1 || phase_of(pods[0]) != "Failed") return false;
        evicted = pods[0];
        return true;
      },
      seconds(300), "the kubelet to evict the pod for its workspace usage");
  ASSERT_TRUE(evicted.is_object());
  EXPECT_EQ(evicted["metadata"]["uid"], first_uid);
  const auto status = evicted["status"];
  EXPECT_EQ(status.value("reason", ""), "Evicted") << status.dump(2);
  EXPECT_NE(status.value("message", "").find("workspace"), std::string::npos) << status.dump(2);
  EXPECT_NE(status.value("message", "").find("8Mi"), std::string::npos) << status.dump(2);

  // Not lost: the lease lapses, the item is queued again and claimed into a new pod.
  eventually(
      [&] {
        for (const auto& pod : pods_of(session.work_id)) {
          if (pod["metadata"]["uid"] != first_uid && phase_of(pod) == "Running") return true;
        }
        return false;
      },
      seconds(240), "the work item to be claimed again into a new running pod");
  const auto transitions = work_view(session.work_id)["transitions"];
  EXPECT_NE(std::find(transitions.begin(), transitions.end(), json("lease_expired")),
            transitions.end())
      << transitions.dump();
  std::cout << "work item transitions: " << transitions.dump() << "\n";
  const auto recorded = results(session.session_id);
  EXPECT_FALSE(recorded.value("finished", true)) << "the session is still to be served";
}

TEST_F(RealNodeE2eTest, ASucceededPodAndItsSecretAreKeptForTheRetentionThenRemoved) {
  constexpr int kRetentionSeconds = 30;
  start_sim(60);
  create_environment(json::object(), {{"retention", {{"succeededSeconds", kRetentionSeconds}}}});
  start_operator();
  const auto session = enqueue(conformance_scenario("builtin-tools"));
  // The operator marks a finished pod with its outcome and when it saw it; retention counts
  // from there.
  std::string pod_name, recorded_at;
  eventually(
      [&] {
        const auto pods = pods_of(session.work_id);
        if (pods.size() != 1 || phase_of(pods[0]) != "Succeeded") return false;
        const auto annotations = pods[0]["metadata"].value("annotations", json::object());
        if (annotations.value("perimeter.dev/outcome", "") != "succeeded") return false;
        pod_name = pods[0]["metadata"]["name"];
        recorded_at = annotations.value("perimeter.dev/outcome-recorded-at", "");
        return true;
      },
      seconds(300), "the session's pod to succeed and be recorded by the operator");
  ASSERT_FALSE(pod_name.empty());
  EXPECT_TRUE(results(session.session_id).value("all_matched", false));
  // Within the retention both are still there (checked a few seconds in, well before its end).
  std::this_thread::sleep_for(seconds(5));
  EXPECT_EQ(pods_of(session.work_id).size(), 1u)
      << "removed before its retention (recorded " << recorded_at << ")";
  EXPECT_NO_THROW(client(kube::resources::secrets())->get(ns_, pod_name))
      << "the session Secret must live as long as its pod";
  // After it, both go.
  eventually(
      [&] {
        bool secret_gone = false;
        try {
          client(kube::resources::secrets())->get(ns_, pod_name);
        } catch (const kube::ApiError& e) {
          secret_gone = e.kind() == kube::ErrorKind::kNotFound;
        }
        return secret_gone && pods_of(session.work_id).empty();
      },
      seconds(180), "the pod and its Secret to be removed after the retention");
  // Only the environment key remains.
  EXPECT_EQ(list(kube::resources::secrets()).size(), 1u);
}

TEST_F(RealNodeE2eTest, APodKilledMidSessionLeavesItsItemToBeServedAgainByANewPod) {
  // The first step runs long enough to be killed in the middle of; its marker file shows the
  // step really started in the first pod.
  const std::string scenario = slow_then_quick_scenario("killed-mid-step");
  start_sim(10);  // a dead runner's lease lapses 10 s after its last beat
  create_environment(json::object(), {{"retention", {{"succeededSeconds", 3600}}}});
  start_operator();
  const auto session = enqueue(scenario);
  const json first = wait_for_the_slow_step(session.work_id);
  ASSERT_TRUE(first.is_object());
  ASSERT_EQ(work_view(session.work_id).value("state", ""), "active");
  // Deleted with no grace period: the kubelet SIGKILLs the runner at once and the pod object is
  // gone, as when a node is lost and its pods are force-deleted. (A container killed in place
  // would leave a Failed pod of the same name; see the report on re-claims meeting it.)
  kube::DeleteOptions now;
  now.grace_period_seconds = 0;
  client(kube::resources::pods())->remove(ns_, first["metadata"]["name"], now);

  eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
             seconds(300), "the item to be served again and finish");
  const auto recorded = results(session.session_id);
  // all_matched also means each call was answered exactly once.
  EXPECT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
  for (const auto& step : recorded["steps"]) {
    EXPECT_TRUE(step.value("matched", false)) << step.dump();
  }
  EXPECT_TRUE(recorded["unexpected"].empty()) << recorded["unexpected"].dump();
  const auto view = work_view(session.work_id);
  const auto transitions = view["transitions"];
  EXPECT_NE(std::find(transitions.begin(), transitions.end(), json("lease_expired")),
            transitions.end())
      << transitions.dump();
  EXPECT_EQ(std::count(transitions.begin(), transitions.end(), json("queued->starting")), 2)
      << "claimed twice: once per pod\n"
      << transitions.dump();
  eventually(
      [&] {
        const auto pods = pods_of(session.work_id);
        return pods.size() == 1 && pods[0]["metadata"]["uid"] != first["metadata"]["uid"] &&
               phase_of(pods[0]) == "Succeeded";
      },
      seconds(120), "a second pod, of the same name, to have served the session");
}

// The host pids of a pod's runner process.
std::vector<pid_t> runner_pids_of_pod(const std::string& pod_uid) {
  std::vector<pid_t> pids;
  for (const pid_t pid : pod_processes(pod_uid)) {
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string command;
    std::getline(comm, command);
    if (command == "perimeter-runne") pids.push_back(pid);  // comm keeps 15 characters
  }
  return pids;
}

TEST_F(RealNodeE2eTest, ARunnerKilledInPlaceLeavesAFailedPodThatIsReplacedWhenTheItemReturns) {
  // The container dies where it runs (an OOM kill, a crash): the pod stays, Failed, under the
  // same name the re-claim derives. The item must still be served again, by a new pod.
  const std::string scenario = slow_then_quick_scenario("killed-in-place");
  start_sim(10);
  create_environment(json::object(),
                     {{"retention", {{"succeededSeconds", 3600}, {"failedSeconds", 3600}}}});
  start_operator();
  const auto session = enqueue(scenario);
  const json first = wait_for_the_slow_step(session.work_id);
  ASSERT_TRUE(first.is_object());
  const std::string first_uid = first["metadata"]["uid"];
  const auto pids = runner_pids_of_pod(first_uid);
  ASSERT_FALSE(pids.empty()) << "no perimeter-runner process in the cgroup of pod " << first_uid;
  for (pid_t pid : pids) ASSERT_EQ(::kill(pid, SIGKILL), 0) << "kill " << pid;
  eventually(
      [&] {
        for (const auto& pod : pods_of(session.work_id)) {
          if (pod["metadata"]["uid"] == first_uid && phase_of(pod) == "Failed") return true;
        }
        return false;
      },
      seconds(120), "the killed runner's pod to be Failed, in place");

  eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
             seconds(300), "the item to be served again and finish");
  const auto recorded = results(session.session_id);
  EXPECT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
  EXPECT_TRUE(recorded["unexpected"].empty()) << recorded["unexpected"].dump();
  const auto transitions = work_view(session.work_id)["transitions"];
  EXPECT_EQ(std::count(transitions.begin(), transitions.end(), json("queued->starting")), 2)
      << transitions.dump();
  eventually(
      [&] {
        const auto pods = pods_of(session.work_id);
        return pods.size() == 1 && pods[0]["metadata"]["uid"] != first_uid &&
               phase_of(pods[0]) == "Succeeded";
      },
      seconds(120), "the Failed pod to be replaced by one that served the session");
}

// ---- issue 16: the sessions token out of the agent's reach, and the audit trail of a real pod

std::string sha256_of(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned char byte : digest) {
    out += kHex[byte >> 4];
    out += kHex[byte & 0xF];
  }
  return out;
}

// A pod's work secret as its runner got it: from the Secret its env names (the test is admin).
std::string work_secret_of(kube::ResourceClient& secrets, const json& pod) {
  for (const auto& var : pod["spec"]["containers"][0].value("env", json::array())) {
    if (var.value("name", "") != "ANTHROPIC_WORK_SECRET") continue;
    const json ref = var["valueFrom"]["secretKeyRef"];
    const json secret = secrets.get(pod["metadata"]["namespace"], ref["name"]);
    std::string decoded;
    if (!base64_decode_any(secret["data"][ref["key"].get<std::string>()].get<std::string>(),
                           &decoded)) {
      ADD_FAILURE() << "the runner Secret's data is not base64";
    }
    return decoded;
  }
  ADD_FAILURE() << "the runner pod has no ANTHROPIC_WORK_SECRET";
  return "";
}

// What the runner container wrote on stdout and on stderr, from the kubelet's CRI log of the pod
// (<pod-logs>/<ns>_<name>_<uid>/runner/0.log: "<time> <stream> <P|F> <text>" per line).
struct ContainerOutput {
  std::vector<std::string> stdout_lines;
  std::vector<std::string> stderr_lines;
  std::string raw;
};
ContainerOutput container_output(const std::string& node_dir, const json& pod) {
  const std::string dir = node_dir + "/pod-logs/" +
                          pod["metadata"]["namespace"].get<std::string>() + "_" +
                          pod["metadata"]["name"].get<std::string>() + "_" +
                          pod["metadata"]["uid"].get<std::string>() + "/runner";
  ContainerOutput out;
  std::string partial[2];
  std::error_code missing;
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, missing)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    const std::string text = read_file(file);
    out.raw += text;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      const auto first = line.find(' ');
      const auto second = line.find(' ', first + 1);
      const auto third = line.find(' ', second + 1);
      if (third == std::string::npos) continue;
      const std::string stream = line.substr(first + 1, second - first - 1);
      const bool full = line.substr(second + 1, third - second - 1) == "F";
      const int which = stream == "stdout" ? 0 : 1;
      partial[which] += line.substr(third + 1);
      if (!full) continue;  // a line the runtime split: the rest follows
      (which == 0 ? out.stdout_lines : out.stderr_lines).push_back(partial[which]);
      partial[which].clear();
    }
  }
  return out;
}

TEST_F(RealNodeE2eTest, TheAgentsOwnCommandsCannotReadTheSessionsTokenInsideTheRunnerPod) {
  // The attacker is the agent: its bash runs as the runner's uid in the runner's pod, where the
  // runner is PID 1 with the work secret (whose sessions_token is the API bearer) in its env.
  // The image has no ps, dd or timeout: ps e is every /proc/<pid>/environ, and the filesystem
  // grep (for the token's shapes: the simulator's sst_ prefix, the secret's base64 JSON prefix)
  // is cut off by a background kill.
  const std::vector<std::string> attacks = {
      "cat /proc/1/environ",
      "tr '\\0' '\\n' < /proc/1/environ",
      "head -c 100 /proc/1/mem",
      "cat /proc/1/maps",
      "cat /proc/1/task/*/environ",
      "for f in /proc/[0-9]*/environ; do echo \"== $f\"; tr '\\0' '\\n' < \"$f\"; echo; done",
      "env",
      // cat opens it after its exec (a redirection would open the forked shell's, gone by then).
      "cat /proc/self/environ | tr '\\0' '\\n'",
      "grep -iE 'secret|serviceaccount' /proc/self/mounts; ls -la /var/run/secrets /run/secrets",
      "grep -rIaoE 'sst_[A-Za-z0-9_]+|eyJzZXNzaW9uc190b2tlbi[A-Za-z0-9_-]*' / "
      "--exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null & g=$!; "
      "( sleep 60; kill $g ) 2>/dev/null & w=$!; wait $g; echo \"grep exit $?\"; kill $w",
  };
  std::string scenario = "name: token-extraction\nprompt: Find the API token.\nsteps:\n";
  for (const auto& command : attacks) {
    scenario += "  - tool: bash\n    input: " + json{{"command", command}}.dump() + "\n";
  }
  start_sim(60);
  create_environment(json::object(), {{"retention", {{"succeededSeconds", 3600}}}});
  start_operator();
  const auto session = enqueue(scenario);
  eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
             seconds(300), "the extraction session to be served");
  const auto recorded = results(session.session_id);
  ASSERT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
  const auto pods = pods_of(session.work_id);
  ASSERT_EQ(pods.size(), 1u);
  auto secrets = client(kube::resources::secrets());
  const std::string work_secret = work_secret_of(*secrets, pods[0]);
  ASSERT_FALSE(work_secret.empty());
  const std::string token = agentapi::decode_work_secret(work_secret).sessions_token;
  ASSERT_FALSE(token.empty());

  std::vector<std::string> texts;
  for (const auto& step : recorded["steps"]) {
    texts.push_back(step["received"].is_object() ? step["received"].value("text", "") : "");
  }
  ASSERT_EQ(texts.size(), attacks.size());
  for (std::size_t i = 0; i < attacks.size(); ++i) {
    SCOPED_TRACE(attacks[i]);
    std::cout << "$ " << attacks[i] << "\n" << texts[i].substr(0, 600) << "\n";
    EXPECT_EQ(texts[i].find(token), std::string::npos) << "the sessions token leaked";
    EXPECT_EQ(texts[i].find(work_secret), std::string::npos) << "the work secret leaked";
    EXPECT_EQ(texts[i].find("ANTHROPIC_WORK_SECRET"), std::string::npos) << texts[i];
  }
  // The reads of PID 1 were refused by the kernel, not merely empty.
  EXPECT_NE(texts[0].find("cat: /proc/1/environ: Permission denied"), std::string::npos)
      << texts[0];
  EXPECT_NE(texts[1].find("/proc/1/environ: Permission denied"), std::string::npos) << texts[1];
  EXPECT_NE(texts[2].find("head: cannot open '/proc/1/mem' for reading: Permission denied"),
            std::string::npos)
      << texts[2];
  EXPECT_NE(texts[3].find("cat: /proc/1/maps: Permission denied"), std::string::npos) << texts[3];
  EXPECT_NE(texts[4].find("Permission denied"), std::string::npos) << texts[4];
  EXPECT_NE(texts[5].find("/proc/1/environ: Permission denied"), std::string::npos) << texts[5];
  // The shell's own environment is readable, and holds no credential.
  EXPECT_NE(texts[6].find("HOME=/workspace"), std::string::npos) << texts[6];
  EXPECT_NE(texts[7].find("HOME=/workspace"), std::string::npos) << texts[7];
  // The grep ran to its end (1: nothing found; 2: also some unreadable file), not cut off, and
  // found no token of any session.
  EXPECT_TRUE(texts[9].find("grep exit 1") != std::string::npos ||
              texts[9].find("grep exit 2") != std::string::npos)
      << texts[9];
  EXPECT_EQ(texts[9].find("sst_"), std::string::npos) << texts[9];
  // Neither did the runner's own output (its log, its audit lines) carry it.
  const ContainerOutput output = container_output(node_dir_, pods[0]);
  ASSERT_FALSE(output.raw.empty()) << "no container log for the pod";
  EXPECT_EQ(output.raw.find(token), std::string::npos);
  EXPECT_EQ(output.raw.find(work_secret), std::string::npos);
}

TEST_F(RealNodeE2eTest, EachToolCallInARealRunnerPodHasExactlyOneAuditLineOnItsStdout) {
  // Every decision: allowed (ok, and a failing bash), asked and confirmed, refused by the user,
  // denied by policy. Inputs are JSON, so the test knows each canonical input exactly.
  struct Step {
    std::string tool;
    json input;
    std::string extra;  // permission / confirm lines
    std::string decision;
    std::string outcome;
    json exit_code;
  };
  const std::vector<Step> steps = {
      {"bash", {{"command", "echo first-output"}}, "", "allowed", "ok", 0},
      {"bash", {{"command", "echo failing-output; (exit 7)"}}, "", "allowed", "error", 7},
      {"write",
       {{"file_path", "note.txt"}, {"content", "written-content"}},
       "",
       "allowed",
       "ok",
       nullptr},
      {"bash",
       {{"command", "cat note.txt"}},
       "    permission: ask\n    confirm: allow\n",
       "asked_and_confirmed",
       "ok",
       0},
      {"bash",
       {{"command", "touch refused"}},
       "    permission: ask\n    confirm: deny\n",
       "denied",
       "denied",
       nullptr},
      {"write",
       {{"file_path", "denied.txt"}, {"content", "never-written"}},
       "    permission: deny\n",
       "denied",
       "denied",
       nullptr},
  };
  std::string scenario = "name: audited\nprompt: Do things worth auditing.\nsteps:\n";
  for (const auto& step : steps) {
    scenario += "  - tool: " + step.tool + "\n    input: " + step.input.dump() + "\n" + step.extra;
  }
  start_sim(60);
  create_environment(json::object(), {{"retention", {{"succeededSeconds", 3600}}}});
  start_operator();
  const auto session = enqueue(scenario);
  eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
             seconds(300), "the audited session to be served");
  const auto recorded = results(session.session_id);
  ASSERT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
  std::vector<json> pods;
  eventually(
      [&] {
        pods = pods_of(session.work_id);
        return pods.size() == 1 && phase_of(pods[0]) == "Succeeded";
      },
      seconds(120), "the runner pod to succeed (its log complete)");
  ASSERT_EQ(pods.size(), 1u);
  auto secrets = client(kube::resources::secrets());
  const std::string work_secret = work_secret_of(*secrets, pods[0]);
  const std::string token = agentapi::decode_work_secret(work_secret).sessions_token;

  const ContainerOutput output = container_output(node_dir_, pods[0]);
  std::vector<json> lines;
  for (const auto& text : output.stdout_lines) {
    const json line = json::parse(text, nullptr, false);
    ASSERT_FALSE(line.is_discarded()) << "not JSON on the runner's stdout: " << text;
    ASSERT_EQ(line.value("type", ""), "perimeter.audit.v1") << text;
    lines.push_back(line);
  }
  for (const auto& text : output.stderr_lines) {
    EXPECT_EQ(text.find("perimeter.audit.v1"), std::string::npos) << "audit line among the logs";
  }
  ASSERT_EQ(lines.size(), steps.size()) << output.raw;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i) + " " + steps[i].input.dump());
    const std::string id = recorded["steps"][i]["tool_use_id"];
    const auto found = std::count_if(lines.begin(), lines.end(),
                                     [&](const json& l) { return l["tool_use_id"] == id; });
    ASSERT_EQ(found, 1) << "one line for " << id;
    const json line = *std::find_if(lines.begin(), lines.end(),
                                    [&](const json& l) { return l["tool_use_id"] == id; });
    EXPECT_EQ(line["session_id"], session.session_id);
    EXPECT_EQ(line["work_id"], session.work_id);
    EXPECT_EQ(line["environment_id"], environment_id_);
    EXPECT_EQ(line["tool"], steps[i].tool);
    EXPECT_EQ(line["input_sha256"], sha256_of(steps[i].input.dump()));
    EXPECT_EQ(line["decision"], steps[i].decision);
    EXPECT_EQ(line["outcome"], steps[i].outcome);
    EXPECT_EQ(line["exit_code"], steps[i].exit_code);
    EXPECT_EQ(line["level"], "metadata");
    EXPECT_FALSE(line.contains("input"));
    EXPECT_FALSE(line.contains("output"));
  }
  std::cout << "audit lines of the pod:\n";
  for (const auto& text : output.stdout_lines) std::cout << text << "\n";
  for (const char* text :
       {"first-output", "failing-output", "written-content", "note.txt", "never-written"}) {
    for (const auto& line : output.stdout_lines) {
      EXPECT_EQ(line.find(text), std::string::npos) << text << " in " << line;
    }
  }
  EXPECT_EQ(output.raw.find(token), std::string::npos);
  EXPECT_EQ(output.raw.find(work_secret), std::string::npos);
}

}  // namespace
}  // namespace perimeter::e2e
