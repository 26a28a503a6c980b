#include "controllers/agentenvironment/runner_start_latency.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "controllers/agentenvironment/runner_naming.h"
#include "core/time_format.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using std::chrono::seconds;

const auto kTermStart = std::chrono::system_clock::time_point{} + std::chrono::hours(500000);

// A runner pod as the cache holds it: claimed at `claimed`, its runner started at `started`.
json runner_pod(const std::string& uid, std::chrono::system_clock::time_point claimed,
                std::chrono::system_clock::time_point started, bool warm = false) {
  json pod = {
      {"metadata",
       {{"uid", uid},
        {"labels", json::object()},
        {"annotations", {{std::string(kAnnotationClaimedAt), format_rfc3339_micros(claimed)}}}}},
      {"status",
       {{"containerStatuses",
         {{{"name", "runner"},
           {"state", {{"running", {{"startedAt", format_rfc3339(started)}}}}}}}}}}};
  if (warm) pod["metadata"]["labels"][std::string(kLabelWarm)] = "true";
  return pod;
}

std::uint64_t observations(OperatorMetrics& metrics) {
  auto& family = metrics.claim_to_runner_started_seconds;
  if (!family.Has({{"environment", "agents/a"}})) return 0;
  return family.Add({{"environment", "agents/a"}}, prometheus::Histogram::BucketBoundaries{})
      .Collect()
      .histogram.sample_count;
}

TEST(RunnerStartLatency, AColdPodIsObservedOnceFromItsClaimToItsRunnersStart) {
  prometheus::Registry registry;
  OperatorMetrics metrics(registry);
  RunnerStartLatency latency(metrics, kTermStart);
  const json pod = runner_pod("uid-1", kTermStart + seconds(1), kTermStart + seconds(3));
  latency.survey("agents/a", {&pod});
  latency.survey("agents/a", {&pod});
  EXPECT_EQ(observations(metrics), 1u);
}

// A warm pod's runner starts before any claim (it waits for one): its claim-to-start would read
// as 0 and hide slow cold starts from the alert on this histogram. Warm claims have their own
// figure (perimeter_claim_seconds{kind="warm"}).
TEST(RunnerStartLatency, AnAssignedWarmPodIsNotObserved) {
  prometheus::Registry registry;
  OperatorMetrics metrics(registry);
  RunnerStartLatency latency(metrics, kTermStart);
  const json warm =
      runner_pod("uid-warm", kTermStart + seconds(60), kTermStart + seconds(2), /*warm=*/true);
  latency.survey("agents/a", {&warm});
  EXPECT_EQ(observations(metrics), 0u);
}

}  // namespace
}  // namespace perimeter::agentenvironment
