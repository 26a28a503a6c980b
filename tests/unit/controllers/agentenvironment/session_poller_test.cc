#include "controllers/agentenvironment/session_poller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "core/time_format.h"
#include "fake_agent_api.h"
#include "kube/metric_value.h"

namespace perimeter::agentenvironment {
namespace {

using std::chrono::milliseconds;
using ::testing::_;
using ::testing::InSequence;
using ::testing::Return;
using ::testing::StrictMock;
using ::testing::Throw;
using testing_support::FakeFactory;
using testing_support::kSecret;
using testing_support::session_item;

// What the fake writer answers for a Secret it wrote.
const ObjectVersion kSecretWritten{"uid-secret", "42"};

class MockObjectWriter : public SessionObjectWriter {
 public:
  MOCK_METHOD(std::optional<ObjectVersion>, ensure_secret, (const nlohmann::json&), (override));
  MOCK_METHOD(bool, ensure_pod, (const nlohmann::json&), (override));
  MOCK_METHOD(void, check_pod, (const nlohmann::json&), (override));
  MOCK_METHOD(void, release_pod, (const std::string&, const std::string&), (override));
  MOCK_METHOD(void, remove_finished, (const nlohmann::json&), (override));
  MOCK_METHOD(bool, assign_warm_pod,
              (const std::string&, const WarmPodRef&, const ClaimedSession&, const std::string&,
               std::int64_t),
              (override));
  MOCK_METHOD(std::optional<std::string>, find_assigned_pod,
              (const std::string&, const std::string&, const std::string&), (override));
};

class FakeCensus final : public RunnerPodCensus {
 public:
  std::size_t unfinished(const std::string&, const std::string&) override {
    const std::size_t answer = value.unfinished.size();
    // The informer delivers these just after this census was taken.
    for (const auto& pod : arrives_after_census) {
      value.unfinished.insert(pod);
      in_cache.insert(pod);
    }
    arrives_after_census.clear();
    // Runs once, between this census and the count that uses it.
    if (auto hook = std::exchange(after_next_census, nullptr)) hook();
    return answer;
  }
  std::map<std::string, std::string> gated(const std::string&, const std::string&) override {
    return value.gated;
  }
  bool cached(const std::string&, const std::string& name) override {
    return in_cache.count(name) > 0;
  }
  std::vector<WarmPodRef> ready_warm_pods(const std::string&, const std::string&) override {
    return value.ready_warm;
  }
  std::optional<AssignedPod> assigned_pod(const std::string&, const std::string& work_id) override {
    const auto it = value.assigned.find(work_id);
    if (it == value.assigned.end()) return std::nullopt;
    return it->second;
  }
  struct {
    std::set<std::string> unfinished;          // names of pods not yet Succeeded or Failed
    std::map<std::string, std::string> gated;  // name -> work id
    std::vector<WarmPodRef> ready_warm{};      // oldest first
    std::map<std::string, AssignedPod> assigned{};  // work id -> the pod holding it
  } value;
  std::set<std::string> in_cache;  // every pod the cache shows, finished or not
  std::set<std::string> arrives_after_census;  // running pods that land between two reads
  std::function<void()> after_next_census;
};

class SessionPollerTest : public ::testing::Test {
 protected:
  SessionPollerTest() : factory_(api_) {}

  AgentEnvironment environment(int limit = 2) {
    AgentEnvironment env;
    env.name = "payments";
    env.namespace_ = "agents";
    env.uid = "uid-1";
    env.environment_id = "env_1";
    env.key_secret_name = "key";
    env.api_base_url = "http://127.0.0.1:9";
    env.max_concurrent_sessions = limit;
    env.runner.image = "runner:1";
    return env;
  }

  // What claims handed over to the assignment service, in order.
  std::vector<WarmHandOver> handed_over_;
  // The assignment service's view of waiting runners: pod uid -> nonce hash.
  std::map<std::string, std::string> waiting_nonces_;

  std::unique_ptr<SessionPoller> make_poller(AgentEnvironment env, int threads = 1,
                                             std::shared_ptr<PollThreadBudget> budget = nullptr) {
    PollerDependencies deps{
        factory_,
        writer_,
        census_,
        metrics_,
        clock_,
        random_,
        Logger("test", sink_),
        [this](const std::string& type, const std::string& reason, const std::string& message) {
          events_.push_back(type + " " + reason + ": " + message);
        },
        [this] { ++state_changes_; },
        std::move(budget)};
    deps.hand_over_warm_pod = [this](WarmHandOver hand_over) {
      handed_over_.push_back(std::move(hand_over));
    };
    deps.warm_pod_waiting_nonce = [this](const std::string& uid) -> std::optional<std::string> {
      const auto it = waiting_nonces_.find(uid);
      if (it == waiting_nonces_.end()) return std::nullopt;
      return it->second;
    };
    return std::make_unique<SessionPoller>(PollerSettings{std::move(env), "envkey", "worker-1"},
                                           std::move(deps), threads);
  }

  // An assign_warm_pod that wins its pod and writes the pod's name to `assigned`.
  static auto assigns_and_records(std::string* assigned) {
    return [assigned](const std::string&, const WarmPodRef& pod, const ClaimedSession&,
                      const std::string&, std::int64_t) {
      *assigned = pod.name;
      return true;
    };
  }

  // For tests that run the poll threads: every call a claim makes succeeds, as often as made.
  void every_claim_succeeds() {
    EXPECT_CALL(api_, stats()).WillRepeatedly(Return(agentapi::WorkQueueStats{}));
    EXPECT_CALL(api_, ack(_)).WillRepeatedly(Return(agentapi::WorkItem{}));
    EXPECT_CALL(writer_, ensure_secret(_)).WillRepeatedly(Return(kSecretWritten));
    EXPECT_CALL(writer_, check_pod(_)).WillRepeatedly(Return());
    EXPECT_CALL(writer_, ensure_pod(_)).WillRepeatedly(Return(true));
  }

  // Waits (up to 10 s, real time) for `condition`, for tests that run the poll threads.
  static bool eventually(const std::function<bool()>& condition) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (condition()) return true;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return condition();
  }

  double counter(prometheus::Family<prometheus::Counter>& family,
                 const std::map<std::string, std::string>& labels) {
    return family.Add(labels).Value();
  }

  StrictMock<testing::MockAgentApi> api_;
  FakeFactory factory_;
  StrictMock<MockObjectWriter> writer_;
  FakeCensus census_;
  prometheus::Registry registry_;
  OperatorMetrics metrics_{registry_};
  testing::FakeClock clock_;
  testing::FakeRandom random_{0.5};
  std::shared_ptr<testing::CapturingLogSink> sink_ = std::make_shared<testing::CapturingLogSink>();
  std::vector<std::string> events_;
  int state_changes_ = 0;
};

// Issue 15, throughput: two apiserver writes per claim. The Secret is written before the ack and
// the pod after it, so no scheduling gate (and no patch to lift it) is needed: the runner can only
// start once its item's lease has.
TEST_F(SessionPollerTest, ClaimsWithSecretThenAckThenAnUngatedPod) {
  auto poller = make_poller(environment());
  nlohmann::json secret, pod;
  {
    InSequence order;
    EXPECT_CALL(api_, poll(_)).WillOnce([](const agentapi::PollOptions& options) {
      EXPECT_EQ(options.block_ms, 999);
      EXPECT_EQ(options.reclaim_older_than_ms, 5000);
      EXPECT_EQ(options.worker_id, "worker-1");
      return session_item("work_A");
    });
    EXPECT_CALL(writer_, ensure_secret(_)).WillOnce([&](const nlohmann::json& s) {
      secret = s;
      return std::optional<ObjectVersion>(kSecretWritten);
    });
    // The first claim of a spec generation asks the apiserver (a dry run) whether it would take
    // the pod, while the item can still go back to the queue.
    EXPECT_CALL(writer_, check_pod(_));
    EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
    // Only once acknowledged may the runner exist (and heartbeat the lease).
    EXPECT_CALL(writer_, ensure_pod(_)).WillOnce([&](const nlohmann::json& p) {
      pod = p;
      return true;
    });
  }
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(secret["stringData"]["work-secret"], kSecret);
  EXPECT_EQ(pod["metadata"]["name"], runner_object_name("work_A"));
  EXPECT_FALSE(pod["spec"].contains("schedulingGates")) << pod["spec"].dump();
  EXPECT_EQ(pod["metadata"]["annotations"]["perimeter.dev/claimed-at"],
            secret["metadata"]["annotations"]["perimeter.dev/claimed-at"]);
  // The Secret as this claim wrote it, for retention's delete by preconditions.
  EXPECT_EQ(pod["metadata"]["annotations"]["perimeter.dev/secret-version"], "uid-secret/42");
  EXPECT_EQ(pod["metadata"]["labels"]["perimeter.dev/session-id"], "sesn_work_A");
  EXPECT_EQ(factory_.credentials, std::vector<std::string>{"envkey"});
  EXPECT_EQ(counter(metrics_.sessions_started_total, {{"environment", "agents/payments"}}), 1);
  EXPECT_EQ(poller->state().health, PollerHealth::kPolling);
}

// Issue 15, item 4: the Secret names when its claim polled the item, with microseconds, so two
// claims of one item are ordered by it.
TEST_F(SessionPollerTest, TheSecretCarriesWhenThePollReturned) {
  auto poller = make_poller(environment());
  nlohmann::json secret;
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce([&](const nlohmann::json& s) {
    secret = s;
    return std::optional<ObjectVersion>();
  });
  poller->poll_once();
  EXPECT_EQ(secret["metadata"]["annotations"]["perimeter.dev/claimed-at"],
            format_rfc3339_micros(clock_.wall_now()));
}

TEST_F(SessionPollerTest, AClaimOvertakenByALaterClaimOfItsItemMakesNoPodAndNoAck) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(std::nullopt));  // a later claim's Secret
  EXPECT_CALL(writer_, ensure_pod(_)).Times(0);
  EXPECT_CALL(api_, ack(_)).Times(0);
  poller->poll_once();
  // Its slot is free again.
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
}

// Issue 15, item 1: a claim slower than the reclaim window gives the item up before its ack, so
// the claims sweep's horizon (twice the window and a margin) covers every live claim.
TEST_F(SessionPollerTest, AClaimSlowerThanTheReclaimWindowGivesTheItemUpBeforeItsAck) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce([this](const nlohmann::json&) {
    clock_.advance(milliseconds(5000));  // an apiserver slow to answer
    return std::optional<ObjectVersion>(kSecretWritten);
  });
  EXPECT_CALL(writer_, ensure_pod(_)).Times(0);
  EXPECT_CALL(api_, ack(_)).Times(0);
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
  EXPECT_EQ(
      counter(metrics_.claim_errors_total,
              {{"environment", "agents/payments"}, {"step", "ack"}, {"reason", "claim_too_slow"}}),
      1);
}

// Issue 15, item 12: the queue's figures in status follow a drained queue within a second,
// not at the next five-second refresh.
TEST_F(SessionPollerTest, AnEmptyPollAfterTheQueueShowedItemsRefreshesTheFiguresSoon) {
  auto poller = make_poller(environment());
  agentapi::WorkQueueStats two;
  two.depth = 2;
  EXPECT_CALL(api_, stats()).WillOnce(Return(two));
  poller->refresh_stats();
  const auto refreshed_at = clock_.now();
  clock_.advance(milliseconds(1000));
  EXPECT_FALSE(poller->stats_due(refreshed_at));
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  poller->poll_once();
  EXPECT_TRUE(poller->stats_due(refreshed_at));
}

// Issue 15, many tenants: an idle environment is not asked for its figures every five seconds;
// one whose figures show items, or that makes no poll at its limit, is.
TEST_F(SessionPollerTest, AnEmptyQueueIsAskedForItsFiguresEveryThirtySeconds) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, stats()).WillOnce(Return(agentapi::WorkQueueStats{}));
  poller->refresh_stats();
  auto refreshed_at = clock_.now();
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  poller->poll_once();  // empty, and the figures already said so
  clock_.advance(milliseconds(29999));
  EXPECT_FALSE(poller->stats_due(refreshed_at));
  clock_.advance(milliseconds(1));
  EXPECT_TRUE(poller->stats_due(refreshed_at));

  // At its limit no poll shows the queue: every five seconds.
  census_.value.unfinished = {"run-a"};
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);
  refreshed_at = clock_.now();
  clock_.advance(milliseconds(5000));
  EXPECT_TRUE(poller->stats_due(refreshed_at));
}

TEST_F(SessionPollerTest, AQueueWithItemsIsAskedForItsFiguresEveryFiveSeconds) {
  auto poller = make_poller(environment());
  agentapi::WorkQueueStats pending;
  pending.pending = 1;  // polled by someone, not yet acknowledged
  EXPECT_CALL(api_, stats()).WillOnce(Return(pending));
  poller->refresh_stats();
  const auto refreshed_at = clock_.now();
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  poller->poll_once();
  clock_.advance(milliseconds(4999));
  EXPECT_FALSE(poller->stats_due(refreshed_at));
  clock_.advance(milliseconds(1));
  EXPECT_TRUE(poller->stats_due(refreshed_at));
}

// Issue 15, item 7: the reconciler hands the poller its settings on every pass; the API client
// (and its TLS connections) is kept until the key, URL or environment id really change.
TEST_F(SessionPollerTest, TheApiClientIsKeptAcrossUpdatesThatChangeNoCredential) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillRepeatedly(Return(std::nullopt));
  poller->poll_once();
  for (int pass = 0; pass < 3; ++pass) {
    poller->update(PollerSettings{environment(), "envkey", "worker-1"});
    poller->poll_once();
  }
  EXPECT_EQ(factory_.credentials.size(), 1u);
  poller->update(PollerSettings{environment(), "rotated-key", "worker-1"});
  poller->poll_once();
  EXPECT_EQ(factory_.credentials, (std::vector<std::string>{"envkey", "rotated-key"}));
}

// The API's CAs of spec.apiCAConfigMapRef changed (a rotated corporate CA): a new client trusts
// them; the same ones keep the client.
TEST_F(SessionPollerTest, NewTrustedCasRebuildTheApiClientWithThem) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillRepeatedly(Return(std::nullopt));
  poller->poll_once();
  for (int pass = 0; pass < 2; ++pass) {
    poller->update(PollerSettings{environment(), "envkey", "worker-1", "CA PEM"});
    poller->poll_once();
  }
  EXPECT_EQ(factory_.extra_ca_pems, (std::vector<std::string>{"", "CA PEM"}));
}

TEST_F(SessionPollerTest, ARetriedClaimWhosePodExistsMakesNoSecondPod) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(false));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(counter(metrics_.sessions_started_total, {{"environment", "agents/payments"}}), 0);
  EXPECT_EQ(counter(metrics_.sessions_claimed_total, {{"environment", "agents/payments"}}), 1);
}

// The item is acknowledged when its pod fails: the pod is made at the next pass, before any poll,
// and counts against the limit.
TEST_F(SessionPollerTest, APodThatFailsAfterTheAckIsMadeAtTheNextPass) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  nlohmann::json first, retried;
  EXPECT_CALL(writer_, ensure_pod(_))
      .WillOnce([&](const nlohmann::json& pod) -> bool {
        first = pod;
        throw std::runtime_error("pods is forbidden: exceeded quota");
      })
      .WillOnce([&](const nlohmann::json& pod) {
        retried = pod;
        return true;
      });
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_NE(events_[0].find("Warning ClaimFailed"), std::string::npos);
  EXPECT_NE(events_[0].find("exceeded quota"), std::string::npos);
  EXPECT_EQ(
      counter(metrics_.claim_errors_total,
              {{"environment", "agents/payments"}, {"step", "pod"}, {"reason", "kubernetes"}}),
      1);
  // The next pass makes the pod first; with it the limit of 1 is reached, so no poll.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);
  EXPECT_EQ(retried, first);
  EXPECT_EQ(counter(metrics_.sessions_started_total, {{"environment", "agents/payments"}}), 1);
  // Made once: later passes do not make it again.
  census_.in_cache = census_.value.unfinished = {runner_object_name("work_A")};
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);
}

// The claim with a warm pod (docs/warm-pool.md): the Secret as a cold claim writes it, then the
// ack, then the assignment of the oldest ready warm pod under its resourceVersion; no pod is made
// and no dry run asked. The assignment comes after the ack because it is what hands the item to
// the runner: the pod informer's event wakes the runner's held request at once, and a runner that
// heartbeats an item not yet acknowledged gets 412 and ends, its session failed.
TEST_F(SessionPollerTest, AReadyWarmPodIsAssignedTheItemOnlyOnceItIsAcknowledged) {
  auto env = environment();
  env.runner.active_deadline_seconds = 5400;
  auto poller = make_poller(env);
  census_.value.ready_warm = {{"warm-old", "uid-old", "7"}, {"warm-new", "uid-new", "9"}};
  census_.value.unfinished = census_.in_cache = {"warm-old", "warm-new"};
  nlohmann::json secret;
  WarmPodRef assigned;
  ClaimedSession session;
  std::string secret_name;
  std::int64_t session_deadline = 0;
  {
    InSequence order;
    EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
    EXPECT_CALL(writer_, ensure_secret(_)).WillOnce([&](const nlohmann::json& s) {
      secret = s;
      return std::optional<ObjectVersion>(kSecretWritten);
    });
    EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
    EXPECT_CALL(writer_, assign_warm_pod("agents", _, _, _, _))
        .WillOnce([&](const std::string&, const WarmPodRef& pod, const ClaimedSession& claimed,
                      const std::string& name, std::int64_t deadline) {
          assigned = pod;
          session = claimed;
          secret_name = name;
          session_deadline = deadline;
          return true;
        });
  }
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);  // StrictMock: no check_pod, no pod
  EXPECT_EQ(assigned.name, "warm-old");
  // The session's deadline is the environment's, as a cold pod's would be.
  EXPECT_EQ(session_deadline, 5400);
  EXPECT_EQ(assigned.resource_version, "7");
  EXPECT_EQ(secret_name, runner_object_name("work_A"));
  EXPECT_EQ(secret["metadata"]["name"], secret_name);
  EXPECT_EQ(session.work_id, "work_A");
  EXPECT_EQ(session.session_id, "sesn_work_A");
  EXPECT_EQ(session.claimed_at, secret["metadata"]["annotations"]["perimeter.dev/claimed-at"]);
  EXPECT_EQ(session.secret.uid, "uid-secret");
  EXPECT_EQ(session.secret.resource_version, "42");
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "warm"}}),
            1);
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "cold"}}),
            0);
  EXPECT_EQ(counter(metrics_.sessions_started_total, {{"environment", "agents/payments"}}), 0);
}

// The long-poll is held for seconds: a pass that began before the pool's pods were ready must
// still give its item to one that became ready while it waited, not start a cold pod (the
// real-node test's first session went cold this way).
TEST_F(SessionPollerTest, AWarmPodReadyWhileThePollWasHeldTakesTheItem) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce([&](const agentapi::PollOptions&) {
    census_.value.ready_warm = {{"warm-1", "uid-1", "3"}};
    census_.value.unfinished = census_.in_cache = {"warm-1"};
    return std::optional<agentapi::WorkItem>(session_item("work_A"));
  });
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_,
              assign_warm_pod("agents", ::testing::Field(&WarmPodRef::name, "warm-1"), _, _, _))
      .WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);  // StrictMock: no dry run, no pod
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "warm"}}),
            1);
}

// Each poll thread reserves before its long-poll: with two warm pods ready, two threads hold
// them and a third polls with a slot under the limit. The queue may hand the item to that third
// one: it takes a ready pod all the same (the real-node test saw a session go cold this way), and
// the thread still waiting for an item holds the slot it gave up, so the limit holds.
TEST_F(SessionPollerTest, AnItemPolledWithASlotTakesAWarmPodThatAWaitingPollHeld) {
  auto poller = make_poller(environment(3));
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}, {"warm-2", "uid-2", "4"}};
  census_.value.unfinished = census_.in_cache = {"warm-1", "warm-2"};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> waiting{0};
  const auto held_until_released = [&](const agentapi::PollOptions&) {
    ++waiting;
    released.wait();
    return std::optional<agentapi::WorkItem>();
  };
  std::string assigned;
  {
    InSequence order;
    EXPECT_CALL(api_, poll(_)).WillOnce(held_until_released).WillOnce(held_until_released);
    EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  }
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _)).WillOnce(assigns_and_records(&assigned));
  // Two passes hold the two warm pods while their long-polls wait.
  std::thread first([&] { EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty); });
  ASSERT_TRUE(eventually([&] { return waiting == 1; }));
  std::thread second([&] { EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty); });
  ASSERT_TRUE(eventually([&] { return waiting == 2; }));
  // The third reserves a slot under the limit (2 warm pods + 1 < 3) and gets the item.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);  // StrictMock: no dry run, no pod
  EXPECT_EQ(assigned, "warm-1");
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "warm"}}),
            1);
  release.set_value();
  first.join();
  second.join();

  // Every reservation went back as it was counted: the next item takes the other warm pod.
  census_.value.ready_warm = {{"warm-2", "uid-2", "4"}};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_B")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_B")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, assign_warm_pod(_, ::testing::Field(&WarmPodRef::name, "warm-2"), _, _, _))
      .WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
}

// The claim hands what it assigned to the assignment service as its patch is answered, so the
// pod's held request is answered without waiting for the pod informer; a lost patch hands over
// nothing.
TEST_F(SessionPollerTest, AWonAssignmentIsHandedOverAndALostOneIsNot) {
  auto poller = make_poller(environment());
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}, {"warm-2", "uid-2", "4"}};
  census_.value.unfinished = census_.in_cache = {"warm-1", "warm-2"};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _))
      .WillOnce([&](const std::string&, const WarmPodRef&, const ClaimedSession&,
                    const std::string&, std::int64_t) {
        EXPECT_TRUE(handed_over_.empty());  // not before the patch is answered
        return false;
      })
      .WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  ASSERT_EQ(handed_over_.size(), 1u);
  EXPECT_EQ(handed_over_[0].pod_uid, "uid-2");
  EXPECT_EQ(handed_over_[0].assignment.work_id, "work_A");
  EXPECT_EQ(handed_over_[0].assignment.session_id, "sesn_work_A");
  EXPECT_EQ(handed_over_[0].assignment.secret_name, runner_object_name("work_A"));
  EXPECT_EQ(handed_over_[0].work_secret, kSecret);
}

// A pod whose runner is waiting right now is assigned before one the census lists first (a runner
// that died looks ready until the kubelet reports it), and its assignment records the delivery to
// that runner's nonce, which the hand-over carries so the held request is answered without a
// write of its own.
TEST_F(SessionPollerTest, AClaimTakesAPodWhoseRunnerWaitsAndRecordsTheDeliveryToIt) {
  auto poller = make_poller(environment());
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}, {"warm-2", "uid-2", "4"}};
  census_.value.unfinished = census_.in_cache = {"warm-1", "warm-2"};
  waiting_nonces_["uid-2"] = "nonce-sha-2";
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _))
      .WillOnce([&](const std::string&, const WarmPodRef& pod, const ClaimedSession&,
                    const std::string&, std::int64_t) {
        EXPECT_EQ(pod.name, "warm-2");
        EXPECT_EQ(pod.waiting_nonce_sha256, "nonce-sha-2");
        return false;  // another claim won it
      })
      .WillOnce([&](const std::string&, const WarmPodRef& pod, const ClaimedSession&,
                    const std::string&, std::int64_t) {
        // Nobody is known to wait on it: assigned without a delivery.
        EXPECT_EQ(pod.name, "warm-1");
        EXPECT_TRUE(pod.waiting_nonce_sha256.empty());
        return true;
      });
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  ASSERT_EQ(handed_over_.size(), 1u);
  EXPECT_EQ(handed_over_[0].pod_uid, "uid-1");
  EXPECT_TRUE(handed_over_[0].delivered_to.empty());

  census_.value.ready_warm = {{"warm-3", "uid-3", "5"}};
  census_.value.unfinished = census_.in_cache = {"warm-1", "warm-3"};
  waiting_nonces_["uid-3"] = "nonce-sha-3";
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_B")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_B")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_,
              assign_warm_pod(_, ::testing::Field(&WarmPodRef::waiting_nonce_sha256, "nonce-sha-3"),
                              _, _, _))
      .WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  ASSERT_EQ(handed_over_.size(), 2u);
  EXPECT_EQ(handed_over_[1].pod_uid, "uid-3");
  EXPECT_EQ(handed_over_[1].delivered_to, "nonce-sha-3");
}

// Warm pods count against maxConcurrentSessions, and a warm claim turns one of them into the
// session's pod: at the limit it still polls while a ready warm pod is free, and only then.
TEST_F(SessionPollerTest, AtTheLimitAReadyWarmPodStillTakesAnItemAndAColdClaimDoesNot) {
  auto poller = make_poller(environment(2));
  census_.value.unfinished = census_.in_cache = {"run-a", "warm-1"};
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _)).WillOnce(Return(true));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  // The cache still shows warm-1 ready: it is not counted on twice.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);  // StrictMock: no poll
  // The cache shows it assigned: no ready warm pod, at the limit.
  census_.value.ready_warm.clear();
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);
}

// A ready warm pod made from an earlier runner template (the spec changed since) is not the
// spec's runner: a claim passes it by, for a pod of the current template or a cold one.
TEST_F(SessionPollerTest, AWarmPodOfAnEarlierTemplateIsNeverAssigned) {
  auto poller = make_poller(environment(5));
  poller->update(PollerSettings{environment(5), "envkey", "worker-1", "", "template-2"});
  WarmPodRef outdated{"warm-old", "uid-old", "3"};
  outdated.template_hash = "template-1";
  census_.value.ready_warm = {outdated};
  census_.value.unfinished = census_.in_cache = {"warm-old"};
  {
    InSequence order;
    EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
    EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
    EXPECT_CALL(writer_, check_pod(_)).WillOnce(Return());
    EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
    EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(true));
  }
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);  // StrictMock: no assign_warm_pod
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "cold"}}),
            1);

  // A pod of the current template, older or not, is the one taken.
  WarmPodRef current{"warm-new", "uid-new", "4"};
  current.template_hash = "template-2";
  census_.value.ready_warm = {outdated, current};
  census_.value.unfinished =
      census_.in_cache = {"warm-old", "warm-new", runner_object_name("work_A")};
  std::string assigned;
  {
    InSequence order;
    EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_B")));
    EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
    EXPECT_CALL(api_, ack("work_B")).WillOnce(Return(agentapi::WorkItem{}));
    EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _)).WillOnce(assigns_and_records(&assigned));
  }
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(assigned, "warm-new");
}

// Two claims of one warm pod: the patch carries the resourceVersion, the loser gets 409 (false)
// and tries the next ready pod, then a cold pod.
TEST_F(SessionPollerTest, AWarmPodLostToAnotherClaimSendsTheClaimToTheNextThenToACold) {
  auto poller = make_poller(environment(5));
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}, {"warm-2", "uid-2", "4"}};
  census_.value.unfinished = census_.in_cache = {"warm-1", "warm-2"};
  std::vector<std::string> tried;
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _))
      .Times(2)
      .WillRepeatedly([&](const std::string&, const WarmPodRef& pod, const ClaimedSession&,
                          const std::string&, std::int64_t) {
        tried.push_back(pod.name);
        return false;
      });
  // Acknowledged before the assignments: the item is owed a pod, made cold with no dry run.
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(tried, (std::vector<std::string>{"warm-1", "warm-2"}));
  EXPECT_EQ(counter(metrics_.warm_assignment_conflicts_total, {{"environment", "agents/payments"}}),
            2);
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "cold"}}),
            1);
}

// At the limit, a claim that loses its only warm pod (the pool removed it, or it ended) has
// acknowledged the item, which is owed a pod: a cold one, in the slot the lost pod held.
TEST_F(SessionPollerTest, AtTheLimitAClaimThatLosesItsWarmPodStartsAColdPodInItsSlot) {
  auto poller = make_poller(environment(1));
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}};
  census_.value.unfinished = census_.in_cache = {"warm-1"};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  {
    InSequence order;
    EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
    EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _)).WillOnce(Return(false));
    EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(true));
  }
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "cold"}}),
            1);
}

// A failed assignment request (not a 409) after the ack makes no cold pod, which could double
// the item if the patch landed after all: the claims sweep asks the apiserver for the item's warm
// pod before it makes one.
TEST_F(SessionPollerTest, AnAssignmentThatFailsMakesNoColdPod) {
  auto poller = make_poller(environment());
  census_.value.ready_warm = {{"warm-1", "uid-1", "3"}};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, assign_warm_pod(_, _, _, _, _))
      .WillOnce(Throw(std::runtime_error("connection reset")));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);  // StrictMock: no pod
  EXPECT_EQ(
      counter(metrics_.claim_errors_total,
              {{"environment", "agents/payments"}, {"step", "assign"}, {"reason", "kubernetes"}}),
      1);
}

// A retried claim of an item an earlier claim assigned to a warm pod still running (the earlier
// one ended before its ack): the ack only. No second warm pod, no cold pod.
TEST_F(SessionPollerTest, ARetriedClaimOfAnItemAWarmPodHoldsOnlyAcknowledgesIt) {
  auto poller = make_poller(environment());
  census_.value.ready_warm = {{"warm-2", "uid-2", "4"}};
  census_.value.assigned["work_A"] = {"warm-1", false};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);  // StrictMock: no assignment, no pod
}

// The warm pod that held the item has finished (it died, and the item came back after its lease
// lapsed): a new attempt, on another warm pod.
TEST_F(SessionPollerTest, AnItemWhoseWarmPodFinishedIsClaimedAnew) {
  auto poller = make_poller(environment());
  census_.value.ready_warm = {{"warm-2", "uid-2", "4"}};
  census_.value.assigned["work_A"] = {"warm-1", true};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, assign_warm_pod(_, ::testing::Field(&WarmPodRef::name, "warm-2"), _, _, _))
      .WillOnce(Return(true));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
}

// The claims sweep, for a Secret without a pod of its name: a warm pod holding the item is found
// in the cache before the queue is asked, or, once the queue says acknowledged, in the apiserver
// (the cache may lag; the assignment was written before the ack). No cold pod either way.
TEST_F(SessionPollerTest, TheClaimsSweepFindsTheWarmPodOfAnAcknowledgedClaim) {
  auto poller = make_poller(environment());
  const std::string claimed_at = "2026-11-30T08:00:00.123456Z";
  census_.value.assigned["work_A"] = {"warm-1", false};
  EXPECT_EQ(poller->start_if_acknowledged("work_A", claimed_at), PodlessClaim::kStarted);

  agentapi::WorkItem acknowledged = session_item("work_B");
  acknowledged.state = "active";
  EXPECT_CALL(api_, retrieve_work("work_B")).WillOnce(Return(acknowledged));
  EXPECT_CALL(writer_, find_assigned_pod("agents", "payments", "work_B"))
      .WillOnce(Return(std::optional<std::string>("warm-2")));
  EXPECT_EQ(poller->start_if_acknowledged("work_B", claimed_at), PodlessClaim::kStarted);

  // The apiserver cannot say: undecided, no pod.
  acknowledged.id = "work_C";
  EXPECT_CALL(api_, retrieve_work("work_C")).WillOnce(Return(acknowledged));
  EXPECT_CALL(writer_, find_assigned_pod("agents", "payments", "work_C"))
      .WillOnce(Throw(std::runtime_error("etcd timeout")));
  EXPECT_EQ(poller->start_if_acknowledged("work_C", claimed_at), PodlessClaim::kUnknown);
  // StrictMock: no ensure_pod.
}

TEST_F(SessionPollerTest, ASecretThatCannotBeWrittenMeansNoPodAndNoAck) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Throw(std::runtime_error("etcd timeout")));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
}

TEST_F(SessionPollerTest, AtTheLimitItDoesNotPoll) {
  auto poller = make_poller(environment(2));
  census_.value.unfinished = {"run-a", "run-b"};
  census_.in_cache = census_.value.unfinished;
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);  // StrictMock: no poll call
  census_.value.unfinished.erase("run-b");
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
}

TEST_F(SessionPollerTest, PodsNotYetInTheCacheCountAgainstTheLimit) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  // The informer has not delivered the new pod yet: still at the limit.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);
  // Now the cache has it, finished: the slot is free again.
  census_.in_cache = {runner_object_name("work_A")};
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
}

// A pod the informer delivers between the census and the check of the pods just made must still
// count once: before the fix it counted in neither (not in the census taken before it arrived, and
// dropped from the recent pods because the cache showed it), so the limit was exceeded by one
// (seen in operator_e2e: 6 unfinished pods at a limit of 5).
TEST_F(SessionPollerTest, APodArrivingInTheCacheDuringTheCountStillCountsAgainstTheLimit) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(true));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  census_.arrives_after_census = {runner_object_name("work_A")};
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);  // StrictMock: no second poll
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);  // now counted by the census
}

// Two poll threads of one environment count at once. Thread B takes its census just before the
// informer delivers a pod the poller made; thread A then counts, sees the pod in the cache and
// drops it from the pods just made. B must not count with its older census against the shorter
// list: the pod would count in neither, and B would claim one session over the limit (the rest of
// operator_e2e's 6 unfinished pods at a limit of 5).
TEST_F(SessionPollerTest, TwoThreadsCountingAtOnceNeverLoseAPodTheCacheJustDelivered) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_)).WillOnce(Return(true));
  ASSERT_EQ(poller->poll_once(), PollOutcome::kClaimed);

  census_.arrives_after_census = {runner_object_name("work_A")};
  std::optional<PollOutcome> thread_a;
  std::thread counter_a;
  census_.after_next_census = [&] {
    counter_a = std::thread([&] { thread_a = poller->poll_once(); });
    // Thread A runs its whole count here if nothing orders the two; once they are ordered it
    // waits for B, and this bounded wait lets B go on.
    std::this_thread::sleep_for(milliseconds(300));
  };
  const PollOutcome thread_b = poller->poll_once();  // StrictMock: neither may poll
  counter_a.join();
  EXPECT_EQ(thread_b, PollOutcome::kAtCapacity);
  ASSERT_TRUE(thread_a.has_value());
  EXPECT_EQ(*thread_a, PollOutcome::kAtCapacity);
}

// A create whose answer was lost may have made the pod all the same, and an acknowledged item is
// owed its pod in any case: until the informer shows it, it counts against the limit.
TEST_F(SessionPollerTest, APodCreateWithoutAnAnswerStillCountsAgainstTheLimit) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_))
      .Times(2)
      .WillRepeatedly(Throw(std::runtime_error("context deadline exceeded")));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
  // The retry fails too; no second session is polled for (StrictMock: no poll).
  EXPECT_EQ(poller->poll_once(), PollOutcome::kAtCapacity);
}

TEST_F(SessionPollerTest, AFailedAckMakesNoPodAndFreesTheSlot) {
  auto poller = make_poller(environment(1));
  EXPECT_CALL(api_, poll(_))
      .WillOnce(Return(session_item("work_A")))
      .WillOnce(Return(std::nullopt));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_));
  EXPECT_CALL(api_, ack("work_A"))
      .WillOnce(Throw(agentapi::TransportError("connection reset by peer")));
  // No pod (StrictMock): the queue hands the item out again and the retry meets its Secret.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
  EXPECT_EQ(counter(metrics_.claim_errors_total,
                    {{"environment", "agents/payments"}, {"step", "ack"}, {"reason", "api"}}),
            1);
}

// The dry run is one request per generation of the spec, not per claim.
TEST_F(SessionPollerTest, ThePodIsCheckedOncePerGenerationOfTheSpec) {
  auto env = environment(10);
  env.generation = 3;
  auto poller = make_poller(env);
  EXPECT_CALL(api_, poll(_))
      .WillOnce(Return(session_item("work_A")))
      .WillOnce(Return(session_item("work_B")))
      .WillOnce(Return(session_item("work_C")));
  EXPECT_CALL(writer_, ensure_secret(_)).Times(3).WillRepeatedly(Return(kSecretWritten));
  EXPECT_CALL(api_, ack(_)).Times(3).WillRepeatedly(Return(agentapi::WorkItem{}));
  EXPECT_CALL(writer_, ensure_pod(_)).Times(3).WillRepeatedly(Return(true));
  // An apiserver that cannot answer the dry run (a webhook with side effects) does not stop
  // claims, and is not asked again for the same spec.
  EXPECT_CALL(writer_, check_pod(_))
      .WillOnce(Throw(std::runtime_error("admission webhook does not support dry run")))
      .WillOnce(Return());
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  env.generation = 4;
  poller->update({env, "envkey", "worker-1"});
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
}

TEST_F(SessionPollerTest, APodTheDryRunRefusesIsNeverAcknowledged) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_A")));
  EXPECT_CALL(writer_, ensure_secret(_)).WillOnce(Return(kSecretWritten));
  EXPECT_CALL(writer_, check_pod(_))
      .WillOnce(Throw(ObjectRefused("pods \"run-a\" is forbidden: violates PodSecurity")));
  // No ack, no pod (StrictMock): the item goes back to the queue, and claiming stops.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kRejected);
  EXPECT_EQ(poller->state().health, PollerHealth::kSpecRefused);
  EXPECT_EQ(poller->state().reason, "RunnerPodRejected");
  EXPECT_EQ(poller->poll_once(), PollOutcome::kRejected);
}

// A Secret without its pod (the operator died between the ack and the pod): the queue says
// whether the item was acknowledged, and only then is the pod made, from the Secret's claim.
TEST_F(SessionPollerTest, AClaimWithoutItsPodGetsItOnlyWhenItsItemWasAcknowledged) {
  auto poller = make_poller(environment());
  auto item = [](const std::string& id, const std::string& state) {
    agentapi::WorkItem work = session_item(id);
    work.state = state;
    return work;
  };
  const std::string claimed_at = "2026-11-30T08:00:00.123456Z";
  nlohmann::json pod;
  EXPECT_CALL(api_, retrieve_work("work_A")).WillOnce(Return(item("work_A", "starting")));
  // No warm pod holds it (the apiserver says so, after the queue).
  EXPECT_CALL(writer_, find_assigned_pod("agents", "payments", "work_A"))
      .WillOnce(Return(std::nullopt));
  EXPECT_CALL(writer_, ensure_pod(_)).WillOnce([&](const nlohmann::json& p) {
    pod = p;
    return true;
  });
  EXPECT_EQ(poller->start_if_acknowledged("work_A", claimed_at), PodlessClaim::kStarted);
  EXPECT_EQ(pod["metadata"]["name"], runner_object_name("work_A"));
  EXPECT_EQ(pod["metadata"]["labels"]["perimeter.dev/session-id"], "sesn_work_A");
  EXPECT_EQ(pod["metadata"]["annotations"]["perimeter.dev/claimed-at"], claimed_at);
  EXPECT_EQ(counter(metrics_.sessions_started_total, {{"environment", "agents/payments"}}), 1);
  // A claim the sweep finished is a cold claim like any other (its latency is unknown here).
  EXPECT_EQ(counter(metrics_.claims_total, {{"environment", "agents/payments"}, {"kind", "cold"}}),
            1);

  // Queued: mid-claim or left to the reclaim. Stopped or unknown: over. No answer: undecided.
  EXPECT_CALL(api_, retrieve_work("work_B")).WillOnce(Return(item("work_B", "queued")));
  EXPECT_EQ(poller->start_if_acknowledged("work_B", claimed_at), PodlessClaim::kQueued);
  EXPECT_CALL(api_, retrieve_work("work_C")).WillOnce(Return(item("work_C", "stopped")));
  EXPECT_EQ(poller->start_if_acknowledged("work_C", claimed_at), PodlessClaim::kOver);
  EXPECT_CALL(api_, retrieve_work("work_D"))
      .WillOnce(Throw(agentapi::ApiError("retrieve work", 404, R"({"type":"error"})", "req_1")));
  EXPECT_EQ(poller->start_if_acknowledged("work_D", claimed_at), PodlessClaim::kOver);
  EXPECT_CALL(api_, retrieve_work("work_E"))
      .WillOnce(Throw(agentapi::TransportError("connection refused")));
  EXPECT_EQ(poller->start_if_acknowledged("work_E", claimed_at), PodlessClaim::kUnknown);
}

// Pods an earlier version of the operator made gated before the ack are still released when their
// item was acknowledged (an upgrade in the middle of a claim).
TEST_F(SessionPollerTest, ThePeriodicPassReleasesPodsAnEarlierVersionLeftGated) {
  auto poller = make_poller(environment());
  const std::string pod = runner_object_name("work_A");
  census_.value.gated = {{pod, "work_A"}};
  agentapi::WorkItem acknowledged = session_item("work_A");
  acknowledged.state = "starting";
  EXPECT_CALL(api_, retrieve_work("work_A")).Times(2).WillRepeatedly(Return(acknowledged));
  EXPECT_CALL(writer_, release_pod("agents", pod))
      .WillOnce(Throw(std::runtime_error("the apiserver is shutting down")))
      .WillOnce(Return());
  EXPECT_EQ(poller->release_acknowledged_pods(), 0);
  EXPECT_EQ(
      counter(metrics_.claim_errors_total,
              {{"environment", "agents/payments"}, {"step", "release"}, {"reason", "kubernetes"}}),
      1);
  EXPECT_EQ(counter(metrics_.pods_released_total,
                    {{"environment", "agents/payments"}, {"result", "error"}}),
            1);
  EXPECT_EQ(poller->release_acknowledged_pods(), 1);
  EXPECT_EQ(counter(metrics_.pods_released_total,
                    {{"environment", "agents/payments"}, {"result", "released"}}),
            1);
}

TEST_F(SessionPollerTest, ThePeriodicPassLeavesPodsOfQueuedItemsGated) {
  auto poller = make_poller(environment());
  // Left to the reclaim: a retry acknowledges it, meets this pod, and the next pass releases it.
  census_.value.gated = {{runner_object_name("work_A"), "work_A"}};
  EXPECT_CALL(api_, retrieve_work("work_A")).WillOnce(Return(session_item("work_A")));
  EXPECT_EQ(poller->release_acknowledged_pods(), 0);  // StrictMock: no release_pod
}

TEST_F(SessionPollerTest, ThePeriodicPassReleasesPodsOfItemsTheQueueNoLongerKnows) {
  auto poller = make_poller(environment());
  census_.value.gated = {{runner_object_name("work_A"), "work_A"},
                         {runner_object_name("work_B"), "work_B"}};
  EXPECT_CALL(api_, retrieve_work("work_A"))
      .WillOnce(Throw(agentapi::ApiError("retrieve work", 404,
                                         R"({"type":"error","error":{"type":"not_found_error",)"
                                         R"("message":"no such work"}})",
                                         "req_1")));
  // A transient failure decides nothing: that pod waits for the next pass.
  EXPECT_CALL(api_, retrieve_work("work_B"))
      .WillOnce(Throw(agentapi::TransportError("connection refused")));
  EXPECT_CALL(writer_, release_pod("agents", runner_object_name("work_A")));
  EXPECT_EQ(poller->release_acknowledged_pods(), 1);
}

// Issue 15, many tenants: an idle environment holds one long-poll and one thread, not one per
// poll thread; the others join in while the queue has work and leave once it is empty.
TEST_F(SessionPollerTest, PollThreadsFollowTheWork) {
  auto poller = make_poller(environment(1000), 4);
  std::atomic<int> polls{0}, in_flight{0}, most{0}, claimed{0};
  std::atomic<bool> work{false};
  EXPECT_CALL(api_, poll(_)).WillRepeatedly([&](const agentapi::PollOptions&) {
    const int now = ++in_flight;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    ++polls;
    std::this_thread::sleep_for(milliseconds(20));  // the server holds the long-poll
    --in_flight;
    return work ? std::optional(session_item("work_" + std::to_string(++claimed))) : std::nullopt;
  });
  every_claim_succeeds();
  random_.push(0.0);  // the wait after the first empty poll: 1 s

  poller->start();
  ASSERT_TRUE(eventually([&] { return polls >= 1; }));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(most.load(), 1) << "an idle environment polled on several threads at once";
  EXPECT_EQ(poller->running_threads(), 1);

  work = true;
  EXPECT_TRUE(eventually([&] { return most >= 4 && poller->running_threads() == 4; }))
      << "at most " << most << " polls at once, " << poller->running_threads() << " threads";
  work = false;
  EXPECT_TRUE(eventually([&] { return poller->running_threads() == 1; }))
      << poller->running_threads() << " threads still run on an empty queue";
  poller->stop();
  EXPECT_EQ(poller->running_threads(), 0);
}

// Issue 15, many tenants: a burst over many environments runs at most the operator's budget of
// extra threads, however many each environment may have.
TEST_F(SessionPollerTest, ExtraPollThreadsComeFromTheOperatorsBudget) {
  const auto budget = std::make_shared<PollThreadBudget>(2);
  auto poller = make_poller(environment(1000), 4, budget);
  std::atomic<bool> work{true};
  std::atomic<int> claimed{0}, most_threads{0};
  EXPECT_CALL(api_, poll(_)).WillRepeatedly([&](const agentapi::PollOptions&) {
    const int threads = poller->running_threads();
    for (int seen = most_threads.load();
         threads > seen && !most_threads.compare_exchange_weak(seen, threads);) {
    }
    std::this_thread::sleep_for(milliseconds(10));
    return work ? std::optional(session_item("work_" + std::to_string(++claimed))) : std::nullopt;
  });
  every_claim_succeeds();

  poller->start();
  EXPECT_TRUE(eventually([&] { return claimed >= 50 && poller->running_threads() == 3; }));
  EXPECT_EQ(budget->available(), 0);
  work = false;
  EXPECT_TRUE(eventually([&] { return poller->running_threads() == 1; }));
  EXPECT_EQ(budget->available(), 2) << "a helper that ended kept its place";
  poller->stop();
  EXPECT_EQ(most_threads.load(), 3) << "more threads ran than the budget allows";
}

TEST_F(SessionPollerTest, AnItemPolledAfterSuspensionIsLeftToTheQueue) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce([&](const agentapi::PollOptions&) {
    // The resource is suspended while the long-poll waits on the server.
    auto suspended = environment();
    suspended.suspend = true;
    poller->update({suspended, "envkey", "worker-1"});
    return session_item("work_A");
  });
  // No Secret, no Pod, no ack (StrictMocks): the queue reclaims the item.
  EXPECT_EQ(poller->poll_once(), PollOutcome::kSuspended);
}

TEST_F(SessionPollerTest, SuspendedNeverPolls) {
  auto env = environment();
  env.suspend = true;
  auto poller = make_poller(env);
  EXPECT_EQ(poller->poll_once(), PollOutcome::kSuspended);
}

TEST_F(SessionPollerTest, WaitsOneToThreeSecondsAfterAnEmptyPoll) {
  auto poller = make_poller(environment());
  random_.push(0.0);
  random_.push(0.75);
  EXPECT_EQ(poller->delay_after(PollOutcome::kEmpty), milliseconds(1000));
  EXPECT_EQ(poller->delay_after(PollOutcome::kEmpty), milliseconds(2500));
  EXPECT_EQ(poller->delay_after(PollOutcome::kClaimed), milliseconds(0));
}

// An environment with a warm pool holds the long-poll all the time: an item that arrives between
// two polls would otherwise wait the 1-3 s, most of what the pool saves.
TEST_F(SessionPollerTest, WithAWarmPoolPollsAgainAtOnceAfterAnEmptyPoll) {
  auto env = environment();
  env.warm_pool = WarmPoolSpec{1, 3};
  auto poller = make_poller(env);
  EXPECT_EQ(poller->delay_after(PollOutcome::kEmpty), milliseconds(0));
  // Only empty polls: an error still backs off.
  EXPECT_GE(poller->delay_after(PollOutcome::kFailed), milliseconds(500));
  env.warm_pool = WarmPoolSpec{0, 0};
  auto without = make_poller(env);
  random_.push(0.0);
  EXPECT_EQ(without->delay_after(PollOutcome::kEmpty), milliseconds(1000));
}

TEST_F(SessionPollerTest, BacksOffExponentiallyOnServerErrorsAndResetsOnSuccess) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_))
      .WillOnce(Throw(agentapi::ApiError("work.poll", 503, R"({"type":"error"})", "")))
      .WillOnce(Throw(agentapi::ApiError("work.poll", 500, "not json", "")))
      .WillOnce(Throw(agentapi::TransportError("connection refused")))
      .WillOnce(Return(std::nullopt));
  std::vector<milliseconds> delays;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
    delays.push_back(poller->delay_after(PollOutcome::kFailed));
  }
  // FakeRandom's 0.5 is the middle of the jitter band: the exact exponential delays.
  EXPECT_EQ(delays, (std::vector<milliseconds>{milliseconds(1000), milliseconds(2000),
                                               milliseconds(4000)}));
  EXPECT_EQ(poller->state().health, PollerHealth::kFailing);
  EXPECT_EQ(poller->state().reason, "Unreachable");
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
  EXPECT_EQ(poller->delay_after(PollOutcome::kFailed), milliseconds(1000));
  EXPECT_EQ(counter(metrics_.poll_errors_total,
                    {{"environment", "agents/payments"}, {"reason", "server_error"}}),
            2);
  EXPECT_EQ(counter(metrics_.poll_retries_total, {{"environment", "agents/payments"}}), 4);
}

TEST_F(SessionPollerTest, ARejectedKeyStopsPollingUntilTheKeyChanges) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_))
      .WillOnce(Throw(agentapi::ApiError(
          "work.poll", 401,
          R"({"type":"error","error":{"type":"authentication_error","message":"invalid key"}})",
          "")));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kRejected);
  EXPECT_EQ(poller->state().reason, "KeyRejected");
  EXPECT_NE(poller->state().message.find("invalid key"), std::string::npos);
  EXPECT_GE(state_changes_, 1);
  // No poll while rejected (StrictMock would fail on one).
  EXPECT_EQ(poller->poll_once(), PollOutcome::kRejected);

  auto fixed = PollerSettings{environment(), "envkey-2", "worker-1"};
  poller->update(fixed);
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(std::nullopt));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
  EXPECT_EQ(factory_.credentials.back(), "envkey-2");
}

TEST_F(SessionPollerTest, ARejectedKeyIsTriedAgainAfterFiveMinutes) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_))
      .WillOnce(Throw(agentapi::ApiError("work.poll", 404, "{}", "")))
      .WillOnce(Return(std::nullopt));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kRejected);
  EXPECT_EQ(poller->state().reason, "EnvironmentNotFound");
  clock_.advance(std::chrono::minutes(4));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kRejected);
  clock_.advance(std::chrono::minutes(1));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kEmpty);
}

TEST_F(SessionPollerTest, AnswersAHealthCheckLikeTheOfficialWorkerWithoutAPod) {
  auto poller = make_poller(environment());
  auto item = session_item("work_H");
  item.data_type = "healthcheck";
  {
    InSequence order;
    EXPECT_CALL(api_, poll(_)).WillOnce(Return(item));
    EXPECT_CALL(api_, ack("work_H")).WillOnce(Return(agentapi::WorkItem{}));
    EXPECT_CALL(api_, heartbeat("work_H", "NO_HEARTBEAT", std::optional<std::int64_t>(), _))
        .WillOnce(Return(agentapi::HeartbeatResponse{"hb1", true, "active", 60}));
    EXPECT_CALL(api_, stop("work_H", true))
        .WillOnce(Throw(agentapi::ApiError("work.stop", 409, "{}", "")));
  }
  EXPECT_EQ(poller->poll_once(), PollOutcome::kClaimed);
  // The per-item calls ride the item's sessions token, as the official worker's do.
  EXPECT_EQ(factory_.credentials.back(), "sess_tok");
  EXPECT_EQ(
      counter(metrics_.healthchecks_total, {{"environment", "agents/payments"}, {"result", "ok"}}),
      1);
}

TEST_F(SessionPollerTest, AnUndecodableSecretIsStoppedAndReportedNotRunInAPod) {
  auto poller = make_poller(environment());
  EXPECT_CALL(api_, poll(_)).WillOnce(Return(session_item("work_B", "%%%not-base64%%%")));
  EXPECT_CALL(api_, ack("work_B")).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_CALL(api_, stop("work_B", true)).WillOnce(Return(agentapi::WorkItem{}));
  EXPECT_EQ(poller->poll_once(), PollOutcome::kFailed);
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_NE(events_[0].find("decode"), std::string::npos);
  for (const auto& line : sink_->lines()) {
    EXPECT_EQ(line.find("%%%not-base64%%%"), std::string::npos) << "a secret reached the log";
  }
}

TEST_F(SessionPollerTest, RunsAndStopsItsThreadsCleanly) {
  auto poller = make_poller(environment());
  std::atomic<int> polls{0};
  EXPECT_CALL(api_, stats()).WillRepeatedly(Return(agentapi::WorkQueueStats{3, 1, {}, 1}));
  EXPECT_CALL(api_, poll(_)).WillRepeatedly([&](const agentapi::PollOptions&) {
    ++polls;
    return std::nullopt;
  });
  poller->start();
  while (polls.load() == 0) std::this_thread::sleep_for(milliseconds(5));
  poller->stop();
  EXPECT_EQ(poller->state().stats->depth, 3);
}

// A stopped poller's gauges go with it (the environment was deleted, refused, or leadership
// lost): left at their last values they would keep PerimeterClaimsStalled firing for an
// environment no one polls, and the dashboard would list it. Another environment's stay.
TEST_F(SessionPollerTest, AStoppedPollerTakesItsGaugesAndLeavesOthers) {
  using perimeter::testing::metric_value;
  AgentEnvironment other = environment();
  other.name = "search";
  auto payments = make_poller(environment());
  auto search = make_poller(other);
  EXPECT_CALL(api_, stats()).WillRepeatedly(Return(agentapi::WorkQueueStats{3, 1, {}, 1}));
  EXPECT_CALL(api_, poll(_)).WillRepeatedly(Return(std::nullopt));
  for (auto* poller : {payments.get(), search.get()}) {
    poller->poll_once();
    poller->refresh_stats();
  }
  const char* gauges[] = {"perimeter_queue_depth", "perimeter_queue_pending",
                          "perimeter_active_sessions",
                          "perimeter_last_successful_poll_timestamp_seconds"};
  for (const char* gauge : gauges) {
    ASSERT_GE(metric_value(registry_, gauge, {{"environment", "agents/payments"}}), 0) << gauge;
    ASSERT_GE(metric_value(registry_, gauge, {{"environment", "agents/search"}}), 0) << gauge;
  }
  payments->stop();
  for (const char* gauge : gauges) {
    EXPECT_EQ(metric_value(registry_, gauge, {{"environment", "agents/payments"}}), -1) << gauge;
    EXPECT_GE(metric_value(registry_, gauge, {{"environment", "agents/search"}}), 0) << gauge;
  }
  EXPECT_EQ(metric_value(registry_, "perimeter_queue_depth", {{"environment", "agents/search"}}),
            3);
}

}  // namespace
}  // namespace perimeter::agentenvironment
