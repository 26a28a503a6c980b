#include "runtime/controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "kube/metric_value.h"
#include "kube/mock_transport.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;
using perimeter::testing::metric_value;
using std::chrono::milliseconds;
using ::testing::_;
using ::testing::Return;
using ::testing::StrictMock;
using ::testing::Throw;

class MockReconciler : public Reconciler {
 public:
  MOCK_METHOD(ReconcileResult, reconcile, (const kube::ObjectKey& key), (override));
};

class ControllerTest : public ::testing::Test {
 protected:
  testing::FakeClock clock;
  prometheus::Registry registry;
  RuntimeMetrics metrics{registry};
  std::shared_ptr<perimeter::testing::CapturingLogSink> sink =
      std::make_shared<perimeter::testing::CapturingLogSink>();
  StrictMock<MockReconciler> reconciler;
};

TEST_F(ControllerTest, SuccessForgetsTheKeyAndCountsIt) {
  Controller controller("envs", reconciler, {}, metrics, Logger("c", sink), clock);
  EXPECT_CALL(reconciler, reconcile(kube::ObjectKey{"a", "env-1"}))
      .WillOnce(Return(ReconcileResult::done()));
  controller.queue().add("a/env-1");
  EXPECT_TRUE(controller.process_next_ready());
  EXPECT_FALSE(controller.process_next_ready());
  EXPECT_EQ(controller.queue().num_waiting(), 0u);
  EXPECT_EQ(metric_value(registry, "perimeter_controller_reconcile_total",
                         {{"controller", "envs"}, {"result", "success"}}),
            1);
  EXPECT_EQ(metric_value(registry, "perimeter_controller_reconcile_time_seconds",
                         {{"controller", "envs"}}),
            1);
}

TEST_F(ControllerTest, ErrorsRetryWithExactPerKeyBackoffThenSuccessResetsIt) {
  Controller controller("envs", reconciler, {}, metrics, Logger("c", sink), clock);
  EXPECT_CALL(reconciler, reconcile(_))
      .WillOnce(Throw(std::runtime_error("apiserver said 500")))
      .WillOnce(Throw(std::runtime_error("apiserver said 500")))
      .WillOnce(Return(ReconcileResult::done()));
  controller.queue().add("a/env-1");
  ASSERT_TRUE(controller.process_next_ready());  // fails: retry in 5 ms
  clock.advance(milliseconds(4));
  EXPECT_FALSE(controller.process_next_ready());
  clock.advance(milliseconds(1));
  ASSERT_TRUE(controller.process_next_ready());  // fails again: retry in 10 ms
  clock.advance(milliseconds(9));
  EXPECT_FALSE(controller.process_next_ready());
  clock.advance(milliseconds(1));
  ASSERT_TRUE(controller.process_next_ready());  // succeeds
  EXPECT_EQ(controller.queue().num_requeues("a/env-1"), 0);
  EXPECT_EQ(metric_value(registry, "perimeter_controller_reconcile_total",
                         {{"controller", "envs"}, {"result", "error"}}),
            2);
  EXPECT_EQ(metric_value(registry, "perimeter_controller_reconcile_errors_total",
                         {{"controller", "envs"}}),
            2);
  EXPECT_EQ(metric_value(registry, "perimeter_workqueue_retries_total", {{"name", "envs"}}), 2);
}

TEST_F(ControllerTest, TerminalErrorsAreCountedButNotRetried) {
  Controller controller("envs", reconciler, {}, metrics, Logger("c", sink), clock);
  EXPECT_CALL(reconciler, reconcile(_)).WillOnce(Throw(TerminalError("spec.image is empty")));
  controller.queue().add("a/env-1");
  ASSERT_TRUE(controller.process_next_ready());
  clock.advance(std::chrono::hours(1));
  EXPECT_FALSE(controller.process_next_ready());
  EXPECT_EQ(metric_value(registry, "perimeter_controller_reconcile_total",
                         {{"controller", "envs"}, {"result", "terminal_error"}}),
            1);
}

TEST_F(ControllerTest, RequeueAfterComesBackAtExactlyThatTime) {
  Controller controller("envs", reconciler, {}, metrics, Logger("c", sink), clock);
  EXPECT_CALL(reconciler, reconcile(_))
      .WillOnce(Return(ReconcileResult::after(std::chrono::seconds(30))))
      .WillOnce(Return(ReconcileResult::done()));
  controller.queue().add("cluster-scoped");
  ASSERT_TRUE(controller.process_next_ready());
  clock.advance(std::chrono::seconds(30) - milliseconds(1));
  EXPECT_FALSE(controller.process_next_ready());
  clock.advance(milliseconds(1));
  EXPECT_TRUE(controller.process_next_ready());
}

std::string list_body(const std::vector<json>& items) {
  return json{{"kind", "List"}, {"metadata", {{"resourceVersion", "5"}}}, {"items", items}}.dump();
}

TEST_F(ControllerTest, WorkersStartAfterSyncAndOwnedChildrenWakeTheirOwner) {
  prometheus::Registry client_registry;
  kube::ClientMetrics client_metrics{client_registry};
  StrictMock<perimeter::testing::MockTransport> transport;
  kube::ResourceClient envs(
      transport, {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true},
      client_metrics);
  kube::ResourceClient pods(transport, kube::resources::pods(), client_metrics);
  const json env = {
      {"metadata", {{"namespace", "a"}, {"name", "env-1"}, {"resourceVersion", "1"}}}};
  const json owned_pod = {
      {"metadata",
       {{"namespace", "a"},
        {"name", "runner-x"},
        {"resourceVersion", "2"},
        {"ownerReferences",
         json::array({{{"kind", "AgentEnvironment"}, {"name", "env-2"}, {"controller", true}},
                      {{"kind", "Other"}, {"name", "ignored"}, {"controller", true}}})}}}};
  EXPECT_CALL(transport, send(::testing::Field(&kube::HttpRequest::path_and_query,
                                               ::testing::HasSubstr("agentenvironments"))))
      .WillOnce(Return(perimeter::testing::json_response(200, list_body({env}))));
  EXPECT_CALL(transport, send(::testing::Field(&kube::HttpRequest::path_and_query,
                                               ::testing::HasSubstr("pods"))))
      .WillOnce(Return(perimeter::testing::json_response(200, list_body({owned_pod}))));
  EXPECT_CALL(transport, open_stream(_)).Times(2).WillRepeatedly([](const kube::HttpRequest&) {
    return std::make_unique<perimeter::testing::FakeResponseStream>(
        perimeter::testing::stream_script({}, false));
  });

  std::mutex mutex;
  std::condition_variable seen_cv;
  std::set<std::string> seen;
  EXPECT_CALL(reconciler, reconcile(_)).Times(2).WillRepeatedly([&](const kube::ObjectKey& key) {
    std::lock_guard lock(mutex);
    seen.insert(key.str());
    seen_cv.notify_all();
    return ReconcileResult::done();
  });
  perimeter::testing::FakeRandom random;
  Informer env_informer(envs, {}, metrics, Logger("i", sink), random);
  Informer pod_informer(pods, {}, metrics, Logger("i", sink), random);
  ControllerOptions options;
  options.workers = 2;
  Controller controller("envs", reconciler, std::move(options), metrics, Logger("c", sink));
  controller.watch(env_informer);
  controller.watch_owned(pod_informer, "AgentEnvironment");
  env_informer.start();
  pod_informer.start();
  controller.start();
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(seen_cv.wait_for(lock, std::chrono::seconds(10), [&] { return seen.size() == 2; }));
  }
  controller.stop();
  env_informer.stop();
  pod_informer.stop();
  EXPECT_EQ(seen, (std::set<std::string>{"a/env-1", "a/env-2"}));
}

}  // namespace
}  // namespace perimeter::runtime
