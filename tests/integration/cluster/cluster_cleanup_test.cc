// Nothing outlives the harness: not on a normal stop, not when the test process is SIGKILLed,
// not when the supervisor itself is SIGKILLed. And failures to start say what went wrong.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cluster/local_cluster.h"
#include "kube_api.h"
#include "localcluster/cluster_dirs.h"
#include "process/process.h"

namespace perimeter::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

bool all_gone(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    if (process::process_alive(pid)) return false;
  }
  return true;
}

TEST(ClusterCleanupTest, DestroyingTheClusterStopsEveryProcessAndRemovesItsFolder) {
  LocalClusterOptions options;
  options.kwok_nodes = 1;
  auto cluster = LocalCluster::start(options);
  std::vector<pid_t> pids = cluster->component_pids();
  ASSERT_EQ(pids.size(), 3u);  // etcd, kube-apiserver, kwok
  pids.push_back(cluster->supervisor_pid());
  ASSERT_FALSE(all_gone(pids));
  const std::string dir = cluster->dir();
  ASSERT_TRUE(fs::exists(dir + "/kubeconfig"));

  cluster.reset();
  // The destructor waits for the supervisor, which waits for its children.
  EXPECT_TRUE(all_gone(pids));
  EXPECT_FALSE(fs::exists(dir));
}

TEST(ClusterCleanupTest, SigkillOfTheProcessThatStartedTheClusterLeavesNothingBehind) {
  process::ProcessSpec spec;
  // Built next to the supervisor binary (both land in the build's bin folder).
  spec.argv = {(fs::path(local_cluster_binary()).parent_path() / "local_cluster_holder").string(),
               "1"};
  spec.capture_stdout = true;
  auto holder = process::Process::spawn(spec);
  auto line = holder->read_stdout_line(std::chrono::seconds(300));
  ASSERT_EQ(line.result, process::LineRead::Result::kLine);
  auto started = nlohmann::json::parse(line.line);
  ASSERT_FALSE(started.contains("error")) << started["error"];
  std::vector<pid_t> pids = started["component_pids"].get<std::vector<pid_t>>();
  pids.push_back(started["supervisor_pid"].get<pid_t>());
  const std::string dir = started["dir"];
  ASSERT_FALSE(all_gone(pids));

  holder->signal(SIGKILL);
  EXPECT_EQ(holder->wait().signal, SIGKILL);
  EXPECT_TRUE(
      eventually([&] { return all_gone(pids) && !fs::exists(dir); }, std::chrono::seconds(90)))
      << "left behind: folder " << (fs::exists(dir) ? "exists" : "gone") << ", processes "
      << (all_gone(pids) ? "gone" : "alive");
}

TEST(ClusterCleanupTest, SigkilledSupervisorTakesItsComponentsAndTheNextStartSweepsItsFolder) {
  auto first = LocalCluster::start({});
  const std::string stale_dir = first->dir();
  const std::vector<pid_t> components = first->component_pids();
  ASSERT_EQ(::kill(first->supervisor_pid(), SIGKILL), 0);
  // Components die with their supervisor (their parent-death signal is SIGKILL).
  EXPECT_TRUE(eventually([&] { return all_gone(components); }, std::chrono::seconds(30)));
  EXPECT_TRUE(fs::exists(stale_dir)) << "nobody was left to remove it";

  auto second = LocalCluster::start({});
  EXPECT_FALSE(fs::exists(stale_dir)) << "the next start should sweep the dead cluster's folder";
  EXPECT_TRUE(fs::exists(second->kubeconfig_path()));
  first.reset();  // its supervisor is already gone; this must not throw or hang
}

TEST(ClusterCleanupTest, MissingBinaryIsNamedWithTheCommandThatBuildsIt) {
  const std::string empty_tools = ::testing::TempDir() + "/no-tools";
  fs::create_directories(empty_tools);
  const char* previous = std::getenv("PERIMETER_TOOLS_BIN");
  const std::string saved = previous ? previous : "";
  ::setenv("PERIMETER_TOOLS_BIN", empty_tools.c_str(), 1);
  EXPECT_THAT([] { LocalCluster::start({}); },
              ::testing::ThrowsMessage<std::runtime_error>(
                  ::testing::AllOf(HasSubstr("etcd not found"), HasSubstr("make tools"))));
  if (previous) {
    ::setenv("PERIMETER_TOOLS_BIN", saved.c_str(), 1);
  } else {
    ::unsetenv("PERIMETER_TOOLS_BIN");
  }
}

TEST(ClusterCleanupTest, ComponentThatFailsToStartIsReportedWithItsLogTail) {
  LocalClusterOptions options;
  options.extra_apiserver_flags = {"--no-such-flag-for-perimeter=1"};
  EXPECT_THAT([&] { LocalCluster::start(options); },
              ::testing::ThrowsMessage<std::runtime_error>(
                  ::testing::AllOf(HasSubstr("kube-apiserver exited before it was ready"),
                                   HasSubstr("unknown flag: --no-such-flag-for-perimeter"))));
}

}  // namespace
}  // namespace perimeter::testing
