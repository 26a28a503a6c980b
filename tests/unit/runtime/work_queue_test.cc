#include "runtime/work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/fake_clock.h"
#include "kube/metric_value.h"

namespace perimeter::runtime {
namespace {

using perimeter::testing::metric_value;
using std::chrono::milliseconds;

class WorkQueueTest : public ::testing::Test {
 protected:
  std::unique_ptr<WorkQueue> make_queue() {
    return std::make_unique<WorkQueue>("test", default_controller_rate_limiter(clock), clock,
                                       &metrics);
  }
  testing::FakeClock clock;
  prometheus::Registry registry;
  RuntimeMetrics metrics{registry};
};

TEST_F(WorkQueueTest, DeduplicatesKeysAndKeepsFifoOrder) {
  auto queue = make_queue();
  queue->add("a");
  queue->add("b");
  queue->add("a");
  EXPECT_EQ(queue->len(), 2u);
  EXPECT_EQ(metric_value(registry, "perimeter_workqueue_depth", {{"name", "test"}}), 2);
  EXPECT_EQ(metric_value(registry, "perimeter_workqueue_adds_total", {{"name", "test"}}), 3);
  EXPECT_EQ(queue->try_get(), "a");
  EXPECT_EQ(queue->try_get(), "b");
  EXPECT_EQ(queue->try_get(), std::nullopt);
}

TEST_F(WorkQueueTest, AKeyBeingProcessedIsNotHandedOutAgainUntilDone) {
  auto queue = make_queue();
  queue->add("a");
  ASSERT_EQ(queue->try_get(), "a");
  queue->add("a");  // changed while a worker has it
  EXPECT_EQ(queue->len(), 0u);
  EXPECT_EQ(queue->try_get(), std::nullopt);
  queue->done("a");
  EXPECT_EQ(queue->len(), 1u);
  EXPECT_EQ(queue->try_get(), "a");
  queue->done("a");
  EXPECT_EQ(queue->len(), 0u);
}

TEST_F(WorkQueueTest, AddAfterWaitsExactlyTheDelayOnTheInjectedClock) {
  auto queue = make_queue();
  queue->add_after("a", milliseconds(250));
  EXPECT_EQ(queue->len(), 0u);
  EXPECT_EQ(queue->num_waiting(), 1u);
  clock.advance(milliseconds(249));
  EXPECT_EQ(queue->len(), 0u);
  clock.advance(milliseconds(1));
  EXPECT_EQ(queue->len(), 1u);
  EXPECT_EQ(queue->num_waiting(), 0u);
}

TEST_F(WorkQueueTest, AWaitingKeyKeepsTheEarlierOfTwoTimes) {
  auto queue = make_queue();
  const auto start = clock.now();
  queue->add_after("a", milliseconds(500));
  queue->add_after("a", milliseconds(100));
  queue->add_after("a", milliseconds(900));
  EXPECT_EQ(queue->next_ready_time(), start + milliseconds(100));
  clock.advance(milliseconds(100));
  EXPECT_EQ(queue->try_get(), "a");
}

TEST_F(WorkQueueTest, RateLimitedRetriesBackOffExponentiallyAndForgetResets) {
  auto queue = make_queue();
  const std::vector<milliseconds> expected = {milliseconds(5), milliseconds(10), milliseconds(20),
                                              milliseconds(40), milliseconds(80)};
  for (const auto delay : expected) {
    const auto start = clock.now();
    queue->add_rate_limited("a");
    EXPECT_EQ(queue->next_ready_time(), start + delay);
    clock.advance(delay - milliseconds(1));
    ASSERT_EQ(queue->try_get(), std::nullopt);
    clock.advance(milliseconds(1));
    ASSERT_EQ(queue->try_get(), "a");
    queue->done("a");
  }
  EXPECT_EQ(queue->num_requeues("a"), 5);
  EXPECT_EQ(metric_value(registry, "perimeter_workqueue_retries_total", {{"name", "test"}}), 5);
  queue->forget("a");
  EXPECT_EQ(queue->num_requeues("a"), 0);
  const auto start = clock.now();
  queue->add_rate_limited("a");
  EXPECT_EQ(queue->next_ready_time(), start + milliseconds(5));
}

TEST_F(WorkQueueTest, ShutDownWakesBlockedWorkersAndRefusesNewKeys) {
  auto queue = make_queue();
  std::atomic<bool> returned{false};
  std::thread worker([&] {
    EXPECT_EQ(queue->get(), std::nullopt);
    returned = true;
  });
  queue->shut_down();
  worker.join();
  EXPECT_TRUE(returned);
  queue->add("late");
  EXPECT_EQ(queue->len(), 0u);
  EXPECT_TRUE(queue->shutting_down());
}

TEST_F(WorkQueueTest, ShutDownWithDrainWaitsForKeysInProcess) {
  auto queue = make_queue();
  queue->add("a");
  ASSERT_EQ(queue->try_get(), "a");
  std::atomic<bool> drained{false};
  std::thread closer([&] {
    queue->shut_down_with_drain();
    drained = true;
  });
  // The closer cannot finish while "a" is in process; done() releases it.
  while (!queue->shutting_down()) std::this_thread::yield();
  EXPECT_FALSE(drained);
  queue->done("a");
  closer.join();
  EXPECT_TRUE(drained);
}

TEST_F(WorkQueueTest, ConcurrentWorkersNeverHoldTheSameKeyAtOnce) {
  WorkQueue queue("concurrent", default_controller_rate_limiter(SystemClock::instance()),
                  SystemClock::instance(), &metrics);
  std::mutex mutex;
  std::set<std::string> held;
  std::atomic<int> violations{0};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      while (auto key = queue.get()) {
        {
          std::lock_guard lock(mutex);
          if (!held.insert(*key).second) ++violations;
        }
        std::this_thread::yield();
        {
          std::lock_guard lock(mutex);
          held.erase(*key);
        }
        ++processed;
        queue.done(*key);
      }
    });
  }
  for (int round = 0; round < 2000; ++round) queue.add("key-" + std::to_string(round % 5));
  queue.shut_down_with_drain();
  for (auto& worker : workers) worker.join();
  EXPECT_EQ(violations, 0);
  EXPECT_GT(processed, 0);
}

}  // namespace
}  // namespace perimeter::runtime
