#include "localcluster/readiness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

#include "core/fake_clock.h"
#include "core/fake_random.h"

namespace perimeter::localcluster {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MockFunction;
using ::testing::Return;
using ::testing::StrictMock;

// Sleeping moves the fake clock, so a wait of minutes runs in microseconds and exactly.
class ClockSleeper final : public Sleeper {
 public:
  explicit ClockSleeper(testing::FakeClock& clock) : clock_(clock) {}
  void sleep_for(milliseconds duration) override {
    slept.push_back(duration.count());
    clock_.advance(duration);
  }
  std::vector<long long> slept;

 private:
  testing::FakeClock& clock_;
};

class ReadinessTest : public ::testing::Test {
 protected:
  ReadinessTest() : sleeper_(clock_), random_(0.5) {
    check_.component = "kube-apiserver";
    check_.what = "/readyz";
    check_.timeout = milliseconds(2000);
    check_.log_path = "/tmp/c/logs/kube-apiserver.log";
    check_.exit_description = [] { return std::nullopt; };
    check_.log_tail = [] { return std::string("E1123 something went wrong\n"); };
  }

  ReadinessResult wait() { return wait_until_ready(check_, clock_, sleeper_, random_); }

  testing::FakeClock clock_;
  ClockSleeper sleeper_;
  testing::FakeRandom random_;
  ReadinessCheck check_;
};

TEST_F(ReadinessTest, ReturnsOnceTheProbeSaysReadyBackingOffBetweenProbes) {
  int calls = 0;
  check_.probe = [&](std::string* complaint) {
    *complaint = "/readyz answered 500";
    return ++calls == 4;
  };
  ReadinessResult result = wait();
  EXPECT_EQ(result.probes, 4);
  // 20 ms growing by 1.5, jitter factor 1.0 at the fake's midpoint draw.
  EXPECT_THAT(sleeper_.slept, ElementsAre(20, 30, 45));
}

TEST_F(ReadinessTest, JitterSpreadsTheDelays) {
  random_.push(0.0);  // factor 0.8
  random_.push(1.0);  // factor 1.2
  int calls = 0;
  check_.probe = [&](std::string*) { return ++calls == 3; };
  wait();
  EXPECT_THAT(sleeper_.slept, ElementsAre(16, 36));
}

TEST_F(ReadinessTest, DelaysAreCappedAtHalfASecond) {
  check_.timeout = milliseconds(10000);
  int calls = 0;
  check_.probe = [&](std::string*) { return ++calls == 20; };
  wait();
  EXPECT_EQ(sleeper_.slept.back(), 500);
}

TEST_F(ReadinessTest, ProbeExceptionsAreComplaintsNotFailures) {
  int calls = 0;
  check_.probe = [&](std::string*) -> bool {
    if (++calls < 3)
      throw std::runtime_error("connecting to https://127.0.0.1:1: Connection refused");
    return true;
  };
  EXPECT_EQ(wait().probes, 3);
}

TEST_F(ReadinessTest, TimeoutNamesTheComponentTheLastComplaintAndTheLogTail) {
  check_.probe = [](std::string* complaint) {
    *complaint = "/readyz answered 500: [-]poststarthook/rbac failed";
    return false;
  };
  EXPECT_THAT([&] { wait(); }, ::testing::ThrowsMessage<StartFailure>(::testing::AllOf(
                                   HasSubstr("kube-apiserver not ready (/readyz) after 2s"),
                                   HasSubstr("poststarthook/rbac failed"),
                                   HasSubstr("last lines of /tmp/c/logs/kube-apiserver.log"),
                                   HasSubstr("E1123 something went wrong"))));
  // It waited the whole timeout on the fake clock, not less.
  long long total = 0;
  for (long long ms : sleeper_.slept) total += ms;
  EXPECT_GE(total, 2000);
}

TEST_F(ReadinessTest, ComponentThatExitsFailsAtOnceWithoutProbing) {
  StrictMock<MockFunction<bool(std::string*)>> probe;  // never called
  check_.probe = probe.AsStdFunction();
  check_.exit_description = [] { return std::optional<std::string>("exited with code 1"); };
  try {
    wait();
    FAIL() << "expected StartFailure";
  } catch (const StartFailure& failure) {
    EXPECT_THAT(failure.what(),
                HasSubstr("kube-apiserver exited before it was ready (exited with code 1)"));
    EXPECT_FALSE(failure.port_in_use());
  }
  EXPECT_TRUE(sleeper_.slept.empty());
}

TEST_F(ReadinessTest, TakenPortIsRecognisedSoTheCallerCanRetry) {
  check_.probe = [](std::string*) { return false; };
  check_.exit_description = [] { return std::optional<std::string>("exited with code 1"); };
  check_.log_tail = [] {
    return std::string("listen tcp 127.0.0.1:6443: bind: address already in use\n");
  };
  try {
    wait();
    FAIL() << "expected StartFailure";
  } catch (const StartFailure& failure) {
    EXPECT_TRUE(failure.port_in_use());
  }
}

TEST_F(ReadinessTest, AbortRequestStopsTheWaitAndSaysWhatItWasWaitingFor) {
  check_.probe = [](std::string* complaint) {
    *complaint = "0 of 3 fake Nodes Ready";
    return false;
  };
  int asked = 0;
  check_.abort_requested = [&] { return ++asked == 2; };
  EXPECT_THAT([&] { wait(); },
              ::testing::ThrowsMessage<StartFailure>(::testing::AllOf(
                  HasSubstr("start of kube-apiserver abandoned: shutdown requested"),
                  HasSubstr("0 of 3 fake Nodes Ready"))));
  EXPECT_EQ(sleeper_.slept.size(), 1u);
}

TEST_F(ReadinessTest, EmptyLogSaysSo) {
  check_.probe = [](std::string*) { return false; };
  check_.exit_description = [] {
    return std::optional<std::string>("killed by signal 9 (Killed)");
  };
  check_.log_tail = [] { return std::string(); };
  EXPECT_THAT([&] { wait(); }, ::testing::ThrowsMessage<StartFailure>(HasSubstr("(empty)")));
}

}  // namespace
}  // namespace perimeter::localcluster
