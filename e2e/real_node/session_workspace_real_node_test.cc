// Session workspaces on the real node (issue 18): runner pods whose /workspace is the session's
// own PersistentVolumeClaim, bound by the node's provisioner (localcluster/local_volumes.h) to a
// host folder, and the claim's end: with the session terminated by the user, with its
// AgentEnvironment (whenEnvironmentDeleted Delete and Retain), and after its idle retention.
// Shares the one real-node cluster of the binary (real_node_cluster.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "agentapi/sim_process.h"
#include "kube/api_error.h"
#include "localcluster/local_volumes.h"
#include "localcluster/real_node.h"
#include "operator/operator_process.h"
#include "operator/pod_tracker.h"
#include "real_node_cluster.h"
#include "runtime/metrics.h"

namespace perimeter::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::seconds;

std::string tail(const std::string& text, size_t size = 6000) {
  return text.size() > size ? text.substr(text.size() - size) : text;
}

kube::ResourceType claims_type() {
  return {"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true};
}
kube::ResourceType volumes_type() {
  return {"", "v1", "persistentvolumes", "PersistentVolume", false};
}

class SessionWorkspaceRealNodeTest : public RealNodeTest {
 protected:
  void SetUp() override {
    RealNodeTest::SetUp();
    if (HasFatalFailure()) return;
    apply_crds();
    if (HasFatalFailure()) return;
    logs_ = std::make_unique<testing::TempDir>();
    sim_ = std::make_unique<testing::SimProcess>(std::vector<std::string>{
        "--address", node_.at("gateway").get<std::string>(), "--lease-ttl-seconds", "60"});
    environment_id_ = create_sim_environment_with_key(sim_->url());
    operator_ = std::make_unique<testing::OperatorProcess>(
        testing::OperatorProcessOptions{required_env("PERIMETER_BIN_DIR") + "/perimeter-operator",
                                        cluster_->kubeconfig_path(),
                                        logs_->path() + "/operator.log",
                                        {"--allowed-api-hosts", sim_->url()}});
  }

  void TearDown() override {
    if (HasFailure()) {
      if (logs_) {
        std::cerr << "---- operator log (tail) ----\n"
                  << tail(read_file(logs_->path() + "/operator.log"));
      }
      if (sim_) std::cerr << "---- perimeter-sim log (tail) ----\n" << tail(sim_->log());
    }
    operator_.reset();
    RealNodeTest::TearDown();
  }

  // An AgentEnvironment whose runner pods run on the real node with `workspace_claim` as their
  // session claim. Finished pods are kept (retention.succeededSeconds) so the test can read them,
  // unless `keep_pods` is false (the default retention: removed at once).
  void create_environment(const json& workspace_claim, bool keep_pods = true) {
    const json runner = {{"image", testing::kRunnerImage},
                         {"imagePullPolicy", "Never"},
                         {"nodeSelector", {{localcluster::kRealNodeLabel, "true"}}},
                         {"tolerations",
                          {{{"key", localcluster::kRealNodeTaintKey},
                            {"operator", "Equal"},
                            {"value", "true"},
                            {"effect", "NoSchedule"}}}},
                         {"env", {{{"name", "PERIMETER_MAX_IDLE_MS"}, {"value", "2000"}}}},
                         {"workspace", {{"persistentVolumeClaim", workspace_claim}}}};
    client(agent_environments())
        ->create(ns_, {{"apiVersion", "perimeter.dev/v1alpha1"},
                       {"kind", "AgentEnvironment"},
                       {"metadata", {{"name", "agents"}}},
                       {"spec",
                        {{"environmentId", environment_id_},
                         {"environmentKeySecretRef", {{"name", "env-key"}}},
                         {"apiBaseUrl", sim_->url()},
                         {"maxConcurrentSessions", 3},
                         {"retention", {{"succeededSeconds", keep_pods ? 600 : 0}}},
                         {"runner", runner}}}});
  }

  std::string enqueue(const std::string& scenario_yaml) {
    const auto reply = testing::http_call(sim_->url(), "POST",
                                          "/admin/environments/" + environment_id_ + "/sessions",
                                          json{{"scenario_yaml", scenario_yaml}}.dump());
    EXPECT_EQ(reply.status, 201) << reply.body;
    return reply.json().value("session_id", "");
  }

  // The session's claim as the apiserver has it (null when there is none).
  json claim_of(const std::string& session_id) {
    for (const auto& claim : list(claims_type())) {
      if (claim["metadata"]
              .value("annotations", json::object())
              .value("perimeter.dev/session-id", "") == session_id) {
        return claim;
      }
    }
    return nullptr;
  }
  json pods_of(const std::string& session_id) {
    json found = json::array();
    for (const auto& pod : list(kube::resources::pods())) {
      if (pod["metadata"].value("labels", json::object()).value("perimeter.dev/session-id", "") ==
          session_id) {
        found.push_back(pod);
      }
    }
    return found;
  }
  // The claim is gone, or its deletion asked for (Kubernetes keeps it Terminating while a pod,
  // finished ones included, refers to it).
  bool claim_deleted(const std::string& session_id) {
    const json claim = claim_of(session_id);
    return claim.is_null() || claim["metadata"].contains("deletionTimestamp");
  }
  bool succeeded(const std::string& session_id) {
    const json pods = pods_of(session_id);
    return pods.size() == 1 &&
           pods[0].value("status", json::object()).value("phase", "") == "Succeeded";
  }
  // The host folder the node's provisioner made for the claim's volume.
  std::string folder_of(const json& claim) {
    const std::string volume = claim["spec"].value("volumeName", "");
    if (volume.empty()) return "";
    return client(volumes_type())->get("", volume)["spec"]["hostPath"].value("path", "");
  }
  json environment() { return client(agent_environments())->get(ns_, "agents"); }

  void start_operator() {
    operator_ = std::make_unique<testing::OperatorProcess>(
        testing::OperatorProcessOptions{required_env("PERIMETER_BIN_DIR") + "/perimeter-operator",
                                        cluster_->kubeconfig_path(),
                                        logs_->path() + "/operator.log",
                                        {"--allowed-api-hosts", sim_->url()}});
  }
  // The simulator's view of a session: its turn, phase, items (GET /admin/sessions/{id}).
  json session_view(const std::string& session_id) {
    return testing::http_call(sim_->url(), "GET", "/admin/sessions/" + session_id).json();
  }
  json results(const std::string& session_id) {
    return testing::http_call(sim_->url(), "GET", "/admin/sessions/" + session_id + "/results")
        .json();
  }
  // Events of the namespace with `reason`.
  std::vector<json> events_with(const std::string& reason) {
    std::vector<json> found;
    for (const auto& event : list(kube::resources::events())) {
      if (event.value("reason", "") == reason) found.push_back(event);
    }
    return found;
  }
  // Every runner pod of the session has finished, and they number `count`.
  bool all_succeeded(const std::string& session_id, size_t count) {
    const json pods = pods_of(session_id);
    if (pods.size() != count) return false;
    for (const auto& pod : pods) {
      if (pod.value("status", json::object()).value("phase", "") != "Succeeded") return false;
    }
    return true;
  }

  std::unique_ptr<testing::TempDir> logs_;
  std::unique_ptr<testing::SimProcess> sim_;
  std::unique_ptr<testing::OperatorProcess> operator_;
  std::string environment_id_;
};

// A one-turn session the user ends (`terminate`): the turn writes into the claim (a file on the
// host folder the provisioner made), the runner ends, and the operator, told by the API that the
// session is terminated, deletes the claim; the provisioner then removes volume and folder.
TEST_F(SessionWorkspaceRealNodeTest, ATerminatedSessionsClaimGoesAndItsFolderWithIt) {
  create_environment({{"storageClassName", localcluster::kLocalStorageClass}}, false);
  const std::string session = enqueue(R"(name: terminated
prompt: Leave a note; the user ends the session afterwards.
terminate: false
steps:
  - tool: write
    input: {file_path: notes.txt, content: "turn one\n"}
    expect: {is_error: false}
)");
  json claim;
  std::string folder;
  ASSERT_TRUE(eventually(
      [&] {
        claim = claim_of(session);
        if (claim.is_null()) return false;
        folder = folder_of(claim);
        return !folder.empty() && fs::exists(folder + "/notes.txt");
      },
      seconds(120), "the first turn's file in the claim's host folder"));
  EXPECT_EQ(read_file(folder + "/notes.txt"), "turn one\n");
  const json pods = pods_of(session);
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            claim["metadata"]["name"]);
  // Succeeded, counted, and removed by the default retention.
  EXPECT_TRUE(eventually([&] { return pods_of(session).empty(); }, seconds(120),
                         "the finished pod to be removed"));
  // Idle, not terminated: the claim stays for the session's next message.
  std::this_thread::sleep_for(seconds(3));
  ASSERT_FALSE(claim_of(session).is_null()) << "an idle session's claim went";
  const auto ended =
      testing::http_call(sim_->url(), "POST", "/admin/sessions/" + session + "/terminate", "");
  ASSERT_EQ(ended.status / 100, 2) << ended.body;
  EXPECT_TRUE(eventually([&] { return claim_of(session).is_null(); }, seconds(120),
                         "the terminated session's claim to go"));
  EXPECT_TRUE(eventually([&] { return !fs::exists(folder); }, seconds(60),
                         "the provisioner to remove the released volume's folder"));
  EXPECT_TRUE(eventually(
      [&] {
        for (const auto& event : list(kube::resources::events())) {
          if (event.value("reason", "") == "WorkspaceDeleted" &&
              event.value("message", "").find("terminated") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      seconds(30), "a WorkspaceDeleted Event saying the session is terminated"));
}

// whenEnvironmentDeleted: Retain keeps the claims (unowned) when the AgentEnvironment goes; the
// default, Delete, lets the garbage collector take them with it. Both on one cluster: first Retain,
// then the policy changed to Delete (the operator moves existing claims' owner), then deletion.
TEST_F(SessionWorkspaceRealNodeTest, TheClaimsGoWithTheEnvironmentOnlyWhenThePolicySaysDelete) {
  create_environment({{"storageClassName", localcluster::kLocalStorageClass},
                      {"whenEnvironmentDeleted", "Retain"}});
  const std::string first = enqueue(R"(name: kept
terminate: false
prompt: Leave a note.
steps:
  - tool: write
    input: {file_path: kept.txt, content: "kept\n"}
    expect: {is_error: false}
)");
  ASSERT_TRUE(eventually([&] { return succeeded(first); }, seconds(120), "the session to end"));
  json claim = claim_of(first);
  ASSERT_FALSE(claim.is_null());
  EXPECT_TRUE(claim["metadata"].value("ownerReferences", json::array()).empty());
  EXPECT_TRUE(eventually(
      [&] { return environment().value("status", json::object()).contains("workspaces"); },
      seconds(30), "status.workspaces"));
  EXPECT_EQ(environment()["status"]["workspaces"].value("claims", -1), 1);

  // Delete: the claim gets its owner.
  client(agent_environments())
      ->merge_patch(
          ns_, "agents",
          {{"spec",
            {{"runner",
              {{"workspace",
                {{"persistentVolumeClaim", {{"whenEnvironmentDeleted", "Delete"}}}}}}}}}});
  const std::string uid = environment()["metadata"]["uid"];
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& ref : claim_of(first)["metadata"].value("ownerReferences", json::array()))
          if (ref.value("uid", "") == uid) return true;
        return false;
      },
      seconds(30), "the claim to be owned by the AgentEnvironment"));
  operator_.reset();  // nothing re-creates what the collector removes
  client(agent_environments())->remove(ns_, "agents");
  EXPECT_TRUE(eventually([&] { return claim_of(first).is_null(); }, seconds(60),
                         "the garbage collector to delete the claim with its AgentEnvironment"));
}

// Retain, and the environment deleted: the claim stays, unowned.
TEST_F(SessionWorkspaceRealNodeTest, RetainKeepsTheClaimWhenTheEnvironmentIsDeleted) {
  create_environment({{"storageClassName", localcluster::kLocalStorageClass},
                      {"whenEnvironmentDeleted", "Retain"}});
  const std::string session = enqueue(R"(name: retained
terminate: false
prompt: Leave a note.
steps:
  - tool: write
    input: {file_path: kept.txt, content: "kept\n"}
    expect: {is_error: false}
)");
  ASSERT_TRUE(eventually([&] { return succeeded(session); }, seconds(120), "the session to end"));
  const std::string folder = folder_of(claim_of(session));
  operator_.reset();
  client(agent_environments())->remove(ns_, "agents");
  ASSERT_TRUE(eventually([&] { return pods_of(session).empty(); }, seconds(60),
                         "the pods to go with the AgentEnvironment"));
  const json claim = claim_of(session);
  ASSERT_FALSE(claim.is_null()) << "a retained claim went with its AgentEnvironment";
  EXPECT_FALSE(claim["metadata"].contains("deletionTimestamp"));
  EXPECT_EQ(read_file(folder + "/kept.txt"), "kept\n");
}

// idleRetentionSeconds: a claim no pod uses goes once it has been idle that long.
TEST_F(SessionWorkspaceRealNodeTest, AnIdleClaimGoesAfterItsRetention) {
  create_environment(
      {{"storageClassName", localcluster::kLocalStorageClass}, {"idleRetentionSeconds", 5}}, false);
  const std::string session = enqueue(R"(name: idle
terminate: false
prompt: Leave a note.
steps:
  - tool: write
    input: {file_path: idle.txt, content: "idle\n"}
    expect: {is_error: false}
)");
  ASSERT_TRUE(eventually([&] { return !claim_of(session).is_null(); }, seconds(120),
                         "the session's claim"));
  ASSERT_TRUE(eventually([&] { return pods_of(session).empty(); }, seconds(120),
                         "the session's pod to end and be removed"));
  // The 30 s after the item's stamp, then 5 s idle.
  EXPECT_TRUE(eventually([&] { return claim_of(session).is_null(); }, seconds(90),
                         "the idle claim to go after 5 s"));
  EXPECT_FALSE(events_with("WorkspaceDeleted").empty());
}

// Issue 18's two-turn session: turn one writes a file and installs a tool into the workspace;
// the runner ends idle and stops its item; the simulator queues turn two (a new item, same
// session) at once, while the first pod is still ending; the operator claims it and its pod
// waits for the first to finish, then mounts the same claim and finds both.
TEST_F(SessionWorkspaceRealNodeTest, TurnTwoOnANewPodFindsWhatTurnOneLeftOnTheSameClaim) {
  prometheus::Registry tracker_registry;
  runtime::RuntimeMetrics runtime_metrics(tracker_registry);
  auto pods = client(kube::resources::pods());
  testing::PodTracker tracker(*pods, ns_, runtime_metrics);
  create_environment({{"storageClassName", localcluster::kLocalStorageClass}});
  const std::string session = enqueue(read_file(
      required_env("PERIMETER_SOURCE_DIR") + "/examples/local/sessions/two-turns-workspace.yaml"));
  ASSERT_TRUE(eventually([&] { return session_view(session).value("phase", "") == "finished"; },
                         seconds(180), "both turns of the session to finish"))
      << session_view(session).dump();
  const json recorded = results(session);
  EXPECT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
  ASSERT_TRUE(eventually([&] { return all_succeeded(session, 2); }, seconds(60),
                         "two pods of the session, both succeeded"));
  const json claim = claim_of(session);
  ASSERT_FALSE(claim.is_null());
  for (const auto& pod : pods_of(session)) {
    EXPECT_EQ(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
              claim["metadata"]["name"]);
  }
  EXPECT_EQ(session_view(session)["items"].size(), 2u) << "turn two did not get an item of its own";
  EXPECT_EQ(tracker.max_unfinished_of_one_session(), 1u) << "two live pods on one workspace";
  // The second item came while the first pod was still ending (the simulator queues it the
  // moment the first item stops): its pod waited, and the operator said so.
  EXPECT_FALSE(events_with("WaitingForWorkspace").empty())
      << "turn two's item never waited: the first pod had ended before it was claimed";
  // The scenario terminates the session after its last turn: the claim is deleted (and kept
  // Terminating while the test keeps the finished pods that refer to it).
  EXPECT_TRUE(eventually([&] { return claim_deleted(session); }, seconds(120),
                         "the terminated session's claim to be deleted"));
}

// The operator is killed between two turns (the second item is queued while none runs) and
// again while an item waits for the session's previous pod: nothing is lost, and never two pods
// of the session are live at once.
TEST_F(SessionWorkspaceRealNodeTest, AnOperatorKilledBetweenTurnsAndWhileAnItemWaitsLosesNothing) {
  prometheus::Registry tracker_registry;
  runtime::RuntimeMetrics runtime_metrics(tracker_registry);
  auto pods = client(kube::resources::pods());
  testing::PodTracker tracker(*pods, ns_, runtime_metrics);
  create_environment({{"storageClassName", localcluster::kLocalStorageClass}});
  const std::string session = enqueue(R"(name: three-turns
turns:
  - prompt: Turn one.
    steps:
      - tool: write
        input: {file_path: one.txt, content: "one\n"}
        expect: {is_error: false}
  - prompt: Turn two.
    after: admin
    steps:
      - tool: read
        input: {file_path: one.txt}
        expect: {is_error: false, text: "one\n"}
      - tool: write
        input: {file_path: two.txt, content: "two\n"}
        expect: {is_error: false}
  - prompt: Turn three.
    after: released
    steps:
      - tool: bash
        input: {command: "cat one.txt two.txt"}
        expect: {is_error: false, text: "one\ntwo"}
)");
  ASSERT_TRUE(
      eventually([&] { return all_succeeded(session, 1); }, seconds(120), "turn one's pod to end"));
  // Between turns: the operator dies, the user's next message queues turn two's item, and a new
  // operator claims it.
  operator_->kill9();
  const auto next =
      testing::http_call(sim_->url(), "POST", "/admin/sessions/" + session + "/next_turn", "");
  ASSERT_EQ(next.status / 100, 2) << next.body;
  start_operator();
  // Turn three's item is queued as turn two's stops, usually while its pod is still ending; the
  // operator is killed as soon as it says the item waits. Whether the item finds the pod still
  // live is a race with the kubelet (under load the pod can be gone first): then the operator is
  // killed once turn three's pod exists, and what follows must hold all the same. The kill while
  // an item waits is replayed deterministically by WorkspaceClaimPathTest's
  // AnOperatorKilledWhileAnItemWaitsLosesItAndDoublesNothing.
  const auto wait_until = std::chrono::steady_clock::now() + seconds(120);
  bool waited = false;
  while (std::chrono::steady_clock::now() < wait_until) {
    waited = !events_with("WaitingForWorkspace").empty();
    if (waited || pods_of(session).size() >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  operator_->kill9();
  const bool second_still_live = !all_succeeded(session, 2);
  std::cerr << "operator killed while an item waited: " << (waited ? "yes" : "no")
            << "; turn two's pod still live then: " << (second_still_live ? "yes" : "no") << "\n";
  start_operator();
  ASSERT_TRUE(eventually([&] { return session_view(session).value("phase", "") == "finished"; },
                         seconds(180), "all three turns to finish"))
      << session_view(session).dump();
  EXPECT_TRUE(results(session).value("all_matched", false)) << results(session).dump(2);
  EXPECT_TRUE(eventually([&] { return all_succeeded(session, 3); }, seconds(60),
                         "three pods of the session, all succeeded"));
  EXPECT_EQ(session_view(session)["items"].size(), 3u);
  for (const auto& [work_id, uids] : tracker.uids_per_work_id()) {
    EXPECT_EQ(uids.size(), 1u) << "work item " << work_id << " had more than one pod";
  }
  EXPECT_EQ(tracker.max_unfinished_of_one_session(), 1u) << "two live pods on one workspace";
}

}  // namespace
}  // namespace perimeter::e2e
