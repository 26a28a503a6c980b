// The claim with a warm pod (docs/warm-pool.md, docs/claiming.md) against the in-memory
// apiserver: real Secret and Pod writers, the pod cache as the operator trims it, a poller per
// "process", the queue a mock. An operator killed between any two steps of a warm claim, or a
// warm pod that dies before its runner confirmed, leaves the item served exactly once: one pod
// holds it, never a cold pod beside a warm one, and nothing is lost.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentapi/mock_agent_api.h"
#include "agentenvironment/warm_pods.h"
#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "controllers/agentenvironment/session_poller.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "fake_agent_api.h"
#include "kube/fake_api_server.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using std::chrono::seconds;
using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;
using ::testing::Throw;
using testing_support::FakeFactory;

const AssignmentEndpoint kEndpoint{"https://perimeter-assignment.perimeter-system.svc:8443",
                                   "CA PEM"};

// The process ends at this point of the claim: nothing after it happens.
class Killed : public std::runtime_error {
 public:
  Killed() : std::runtime_error("the operator was killed") {}
};

// Writes through to the cluster, and can end the "process" just before or just after the
// assignment patch.
class KillableWriter final : public SessionObjectWriter {
 public:
  explicit KillableWriter(SessionObjectWriter& target) : target_(target) {}
  std::optional<ObjectVersion> ensure_secret(const json& secret) override {
    return target_.ensure_secret(secret);
  }
  bool ensure_pod(const json& pod) override { return target_.ensure_pod(pod); }
  void check_pod(const json& pod) override { target_.check_pod(pod); }
  void release_pod(const std::string& ns, const std::string& name) override {
    target_.release_pod(ns, name);
  }
  void remove_finished(const json& pod) override { target_.remove_finished(pod); }
  bool assign_warm_pod(const std::string& ns, const WarmPodRef& pod, const ClaimedSession& session,
                       const std::string& secret_name, std::int64_t deadline_seconds) override {
    if (kill_before_assignment) throw Killed();
    const bool won = target_.assign_warm_pod(ns, pod, session, secret_name, deadline_seconds);
    if (kill_after_assignment) throw Killed();
    return won;
  }
  std::optional<std::string> find_assigned_pod(const std::string& ns,
                                               const std::string& environment_name,
                                               const std::string& work_id) override {
    return target_.find_assigned_pod(ns, environment_name, work_id);
  }
  bool kill_before_assignment = false;
  bool kill_after_assignment = false;

 private:
  SessionObjectWriter& target_;
};

// One operator process: its own pod cache (empty until synced, as after a restart) and poller.
struct Process {
  runtime::Store cache;
  StoreRunnerPodCensus census{cache};
  std::unique_ptr<SessionPoller> poller;
};

class WarmClaimTest : public ::testing::Test {
 protected:
  WarmClaimTest() {
    server_.use_clock(&clock_);
    ON_CALL(api_, poll(_)).WillByDefault(Return(std::nullopt));
    ON_CALL(api_, ack(_)).WillByDefault([this](const std::string& id) {
      acks_.push_back(id);
      return agentapi::WorkItem{};
    });
  }

  static AgentEnvironment environment() {
    AgentEnvironment env = warm_test::warm_pool_environment();
    env.api_base_url = "http://127.0.0.1:9";
    env.max_concurrent_sessions = 3;
    return env;
  }

  std::unique_ptr<Process> start(SessionObjectWriter& writer) {
    auto process = std::make_unique<Process>();
    PollerDependencies deps{factory_,
                            writer,
                            process->census,
                            metrics_,
                            clock_,
                            random_,
                            Logger("test", StderrSink::instance(), LogLevel::kError),
                            [](const std::string&, const std::string&, const std::string&) {},
                            nullptr};
    // The seeded warm pods' template is the current one: the claim may assign them.
    process->poller = std::make_unique<SessionPoller>(
        PollerSettings{environment(), "envkey", "worker-1", "",
                       warm_runner_template_hash(warm_test::warm_pool_environment(), kEndpoint)},
        std::move(deps), 1);
    return process;
  }

  // The pod informer: the cache shows what the apiserver holds, trimmed as the operator keeps it.
  void sync(Process& process) {
    std::vector<runtime::ObjectPtr> pods;
    const json listed = pod_client_.list("a");
    for (json pod : listed["items"]) {
      trim_runner_pod(pod);
      pods.push_back(std::make_shared<const json>(std::move(pod)));
    }
    process.cache.replace(std::move(pods));
  }

  void next_poll_returns(const std::string& work_id) {
    EXPECT_CALL(api_, poll(_))
        .WillOnce(Return(testing_support::session_item(work_id)))
        .RetiresOnSaturation();
  }
  void queue_says(const std::string& work_id, const std::string& state) {
    agentapi::WorkItem item = testing_support::session_item(work_id);
    item.state = state;
    ON_CALL(api_, retrieve_work(work_id)).WillByDefault(Return(item));
  }

  json pod(const std::string& name) {
    return *server_.object_at("/api/v1/namespaces/a/pods/" + name);
  }
  std::string assignment_of(const std::string& name) {
    return pod(name)["metadata"]
        .value("annotations", json::object())
        .value(std::string(kAnnotationAssignedWorkId), "");
  }
  // The pods, as the apiserver holds them, that serve `work_id` or may yet: unfinished and
  // assigned it, or its cold pod.
  std::vector<std::string> live_pods_of(const std::string& work_id) {
    std::vector<std::string> names;
    const json listed = pod_client_.list("a");
    for (const auto& p : listed["items"]) {
      const auto& metadata = p["metadata"];
      const auto annotations = metadata.value("annotations", json::object());
      if (pod_finished(p)) continue;
      if (annotations.value(std::string(kAnnotationAssignedWorkId), "") == work_id ||
          annotations.value(std::string(kAnnotationWorkId), "") == work_id) {
        names.push_back(metadata.value("name", ""));
      }
    }
    return names;
  }
  bool cold_pod_of(const std::string& work_id) {
    return server_.object_at("/api/v1/namespaces/a/pods/" + runner_object_name(work_id))
        .has_value();
  }
  std::optional<json> session_secret(const std::string& work_id) {
    return server_.object_at("/api/v1/namespaces/a/secrets/" + runner_object_name(work_id));
  }
  std::string claimed_at_of_secret(const std::string& work_id) {
    return (*session_secret(work_id))["metadata"]["annotations"].value(
        std::string(kAnnotationClaimedAt), "");
  }
  void fail(const std::string& name) {
    json p = pod(name);
    p["status"] = {{"phase", "Failed"}};
    pod_client_.update_status("a", p);
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  kube::ResourceClient secret_client_{server_, kube::resources::secrets(), client_metrics_};
  kube::ResourceClient pod_client_{server_, kube::resources::pods(), client_metrics_};
  KubeSessionObjectWriter writer_{secret_client_, pod_client_};
  OperatorMetrics metrics_{registry_};
  testing::FakeClock clock_;
  testing::FakeRandom random_{0.5};
  NiceMock<testing::MockAgentApi> api_;
  FakeFactory factory_{api_};
  std::vector<std::string> acks_;
};

TEST_F(WarmClaimTest, AClaimAssignsTheOldestReadyWarmPodAsTheContractSays) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  clock_.advance(seconds(1));
  warm_test::seed_ready_warm_pod(server_, "warm-2", kEndpoint);
  auto process = start(writer_);
  sync(*process);
  next_poll_returns("work_A");
  EXPECT_EQ(process->poller->poll_once(), PollOutcome::kClaimed);

  const json assigned = pod("warm-1");
  const json& annotations = assigned["metadata"]["annotations"];
  EXPECT_EQ(annotations[std::string(kAnnotationAssignedWorkId)], "work_A");
  EXPECT_EQ(annotations[std::string(kAnnotationAssignedSessionId)], "sesn_work_A");
  EXPECT_EQ(annotations[std::string(kAnnotationAssignedSecret)], runner_object_name("work_A"));
  EXPECT_EQ(annotations[std::string(kAnnotationClaimedAt)], claimed_at_of_secret("work_A"));
  const json secret = *session_secret("work_A");
  EXPECT_EQ(annotations[std::string(kAnnotationSecretVersion)],
            secret["metadata"]["uid"].get<std::string>() + "/" +
                secret["metadata"]["resourceVersion"].get<std::string>());
  EXPECT_EQ(assigned["metadata"]["labels"][std::string(kLabelSessionId)], "sesn_work_A");
  // The session's deadline with it (this pod shows no start, so it counts from now).
  EXPECT_EQ(assigned["spec"]["activeDeadlineSeconds"],
            environment().runner.active_deadline_seconds);
  // The work secret is where a cold claim puts it; the warm pod's own Secret is untouched.
  EXPECT_EQ(secret["stringData"][std::string(kSecretKeyWorkSecret)], testing_support::kSecret);
  EXPECT_EQ(assignment_of("warm-2"), "");
  EXPECT_FALSE(cold_pod_of("work_A"));
  EXPECT_EQ(acks_, std::vector<std::string>{"work_A"});

  // The cache shows it assigned: no longer ready, and found by its item.
  sync(*process);
  ASSERT_EQ(process->census.ready_warm_pods("a", "payments").size(), 1u);
  EXPECT_EQ(process->census.ready_warm_pods("a", "payments")[0].name, "warm-2");
  ASSERT_TRUE(process->census.assigned_pod("a", "work_A").has_value());
  EXPECT_EQ(process->census.assigned_pod("a", "work_A")->name, "warm-1");
}

// Two operators (an old leader that has not noticed losing its lease, and the new one) assign one
// warm pod from the same cached resourceVersion: the apiserver takes one patch, and the other
// claim goes to the next ready pod.
TEST_F(WarmClaimTest, TwoClaimsOfOneWarmPodAssignItOnce) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  auto process = start(writer_);
  sync(*process);
  const auto ready = process->census.ready_warm_pods("a", "payments");
  ASSERT_EQ(ready.size(), 1u);
  const ClaimedSession first{"work_A", "sesn_work_A", "", "2026-12-01T00:00:00.000001Z"};
  const ClaimedSession second{"work_B", "sesn_work_B", "", "2026-12-01T00:00:00.000002Z"};
  EXPECT_TRUE(writer_.assign_warm_pod("a", ready[0], first, runner_object_name("work_A"), 3600));
  EXPECT_FALSE(writer_.assign_warm_pod("a", ready[0], second, runner_object_name("work_B"), 3600));
  EXPECT_EQ(assignment_of("warm-1"), "work_A");
  // A pod that is gone is no pod to assign.
  WarmPodRef gone = ready[0];
  gone.name = "warm-gone";
  EXPECT_FALSE(writer_.assign_warm_pod("a", gone, second, runner_object_name("work_B"), 3600));
}

// Killed after the Secret, before the ack: nothing holds the item and it was not acknowledged.
// The next leader's sweep leaves the Secret to the reclaim; the item comes back and is claimed
// once, on the warm pod.
TEST_F(WarmClaimTest, KilledAfterTheSecretBeforeTheAckTheItemIsClaimedOnceLater) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  {
    auto first = start(writer_);
    sync(*first);
    next_poll_returns("work_A");
    // The process ends in its ack; later acks reach the queue.
    EXPECT_CALL(api_, ack(_))
        .WillOnce(Throw(Killed()))
        .WillRepeatedly([this](const std::string& id) {
          acks_.push_back(id);
          return agentapi::WorkItem{};
        });
    first->poller->poll_once();
  }
  ASSERT_TRUE(session_secret("work_A").has_value());
  EXPECT_EQ(assignment_of("warm-1"), "");
  EXPECT_TRUE(acks_.empty());

  auto next = start(writer_);
  sync(*next);
  queue_says("work_A", "queued");
  EXPECT_EQ(next->poller->start_if_acknowledged("work_A", claimed_at_of_secret("work_A")),
            PodlessClaim::kQueued);
  EXPECT_FALSE(cold_pod_of("work_A"));

  clock_.advance(seconds(6));  // past the reclaim window: the queue hands it out again
  next_poll_returns("work_A");
  EXPECT_EQ(next->poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(live_pods_of("work_A"), std::vector<std::string>{"warm-1"});
  EXPECT_FALSE(cold_pod_of("work_A"));
  EXPECT_EQ(acks_, std::vector<std::string>{"work_A"});
}

// Killed after the ack, before the assignment: the item is acknowledged and no pod holds it, as
// a cold claim killed before its pod. The next leader's sweep asks the apiserver for a warm pod
// holding it, finds none, and makes the cold pod: served once, and the warm pod stays the pool's.
TEST_F(WarmClaimTest, KilledAfterTheAckBeforeTheAssignmentTheSweepMakesOneColdPod) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  {
    KillableWriter dying(writer_);
    dying.kill_before_assignment = true;
    auto first = start(dying);
    sync(*first);
    next_poll_returns("work_A");
    first->poller->poll_once();
  }
  EXPECT_EQ(assignment_of("warm-1"), "");
  EXPECT_EQ(acks_, std::vector<std::string>{"work_A"});

  auto next = start(writer_);
  sync(*next);
  queue_says("work_A", "starting");
  EXPECT_EQ(next->poller->start_if_acknowledged("work_A", claimed_at_of_secret("work_A")),
            PodlessClaim::kStarted);
  EXPECT_TRUE(cold_pod_of("work_A"));
  EXPECT_EQ(live_pods_of("work_A").size(), 1u);
  EXPECT_EQ(assignment_of("warm-1"), "");
  EXPECT_EQ(acks_, std::vector<std::string>{"work_A"});
}

// Killed right after the assignment: the pod holds the acknowledged item. The next leader's
// sweep finds it in its cache and makes no cold pod; no second warm pod is assigned.
TEST_F(WarmClaimTest, KilledAfterTheAssignmentTheSamePodServesTheItem) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  clock_.advance(seconds(1));
  warm_test::seed_ready_warm_pod(server_, "warm-2", kEndpoint);
  {
    KillableWriter dying(writer_);
    dying.kill_after_assignment = true;
    auto first = start(dying);
    sync(*first);
    next_poll_returns("work_A");
    first->poller->poll_once();
  }
  EXPECT_EQ(assignment_of("warm-1"), "work_A");
  EXPECT_EQ(acks_, std::vector<std::string>{"work_A"});

  auto next = start(writer_);
  sync(*next);
  EXPECT_CALL(api_, retrieve_work(_)).Times(0);  // the cache answers the sweep
  EXPECT_EQ(next->poller->start_if_acknowledged("work_A", claimed_at_of_secret("work_A")),
            PodlessClaim::kStarted);
  EXPECT_FALSE(cold_pod_of("work_A"));
  EXPECT_EQ(live_pods_of("work_A"), std::vector<std::string>{"warm-1"});
  EXPECT_EQ(assignment_of("warm-2"), "");
}

// Killed after the whole claim: the item is the pod's. The next leader's sweep finds it even
// before its cache shows the assignment (it asks the apiserver before making a cold pod).
TEST_F(WarmClaimTest, KilledAfterTheAckTheSweepFindsTheWarmPodEvenBeforeTheCacheDoes) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  {
    auto first = start(writer_);
    sync(*first);
    next_poll_returns("work_A");
    ASSERT_EQ(first->poller->poll_once(), PollOutcome::kClaimed);
  }
  auto next = start(writer_);  // its cache not synced yet
  queue_says("work_A", "starting");
  EXPECT_EQ(next->poller->start_if_acknowledged("work_A", claimed_at_of_secret("work_A")),
            PodlessClaim::kStarted);
  EXPECT_FALSE(cold_pod_of("work_A"));
  sync(*next);
  EXPECT_EQ(next->poller->start_if_acknowledged("work_A", claimed_at_of_secret("work_A")),
            PodlessClaim::kStarted);
  EXPECT_FALSE(cold_pod_of("work_A"));
  EXPECT_EQ(live_pods_of("work_A"), std::vector<std::string>{"warm-1"});
  EXPECT_EQ(acks_, std::vector<std::string>{"work_A"});
}

// A warm pod that dies after its assignment and ack, before its runner confirmed (nothing
// heartbeat the lease): the sweep makes no cold pod beside it; the item comes back from the
// queue when its lease lapses and is claimed anew, on another warm pod. Retention then removes
// the dead pod and its own Secret, and leaves the session Secret the new claim rewrote.
TEST_F(WarmClaimTest, AWarmPodThatDiesBeforeItsRunnerConfirmedLosesNothing) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  clock_.advance(seconds(1));
  warm_test::seed_ready_warm_pod(server_, "warm-2", kEndpoint);
  auto process = start(writer_);
  sync(*process);
  next_poll_returns("work_A");
  ASSERT_EQ(process->poller->poll_once(), PollOutcome::kClaimed);
  ASSERT_EQ(assignment_of("warm-1"), "work_A");

  fail("warm-1");
  sync(*process);
  queue_says("work_A", "active");
  EXPECT_EQ(process->poller->start_if_acknowledged("work_A", claimed_at_of_secret("work_A")),
            PodlessClaim::kStarted);
  EXPECT_FALSE(cold_pod_of("work_A"));

  clock_.advance(seconds(60));  // the lease lapsed: the queue hands the item out again
  next_poll_returns("work_A");
  EXPECT_EQ(process->poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(live_pods_of("work_A"), std::vector<std::string>{"warm-2"});
  EXPECT_FALSE(cold_pod_of("work_A"));
  EXPECT_EQ(acks_, (std::vector<std::string>{"work_A", "work_A"}));

  sync(*process);
  writer_.remove_finished(*process->cache.get("a/warm-1"));
  EXPECT_FALSE(server_.object_at("/api/v1/namespaces/a/pods/warm-1").has_value());
  EXPECT_FALSE(server_.object_at("/api/v1/namespaces/a/secrets/warm-1").has_value());
  EXPECT_TRUE(session_secret("work_A").has_value()) << "warm-2's session lost its Secret";
  EXPECT_TRUE(server_.object_at("/api/v1/namespaces/a/secrets/warm-2").has_value());
}

// The same, with no warm pod left: a cold pod serves the returned item.
TEST_F(WarmClaimTest, AnItemWhoseWarmPodDiedGoesColdWhenNoWarmPodIsLeft) {
  warm_test::seed_ready_warm_pod(server_, "warm-1", kEndpoint);
  auto process = start(writer_);
  sync(*process);
  next_poll_returns("work_A");
  ASSERT_EQ(process->poller->poll_once(), PollOutcome::kClaimed);
  fail("warm-1");
  sync(*process);

  clock_.advance(seconds(60));
  next_poll_returns("work_A");
  EXPECT_EQ(process->poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(live_pods_of("work_A"), std::vector<std::string>{runner_object_name("work_A")});
  EXPECT_EQ(acks_, (std::vector<std::string>{"work_A", "work_A"}));
}

}  // namespace
}  // namespace perimeter::agentenvironment
