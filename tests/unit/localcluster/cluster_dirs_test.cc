#include "localcluster/cluster_dirs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "localcluster/tools.h"
#include "process/process.h"

namespace perimeter::localcluster {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ClusterDirsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/clusters-" + std::to_string(::getpid());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A pid that certainly belongs to no process any more.
  pid_t dead_pid() {
    pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int ignored;
    ::waitpid(child, &ignored, 0);
    return child;
  }

  std::string root_;
};

TEST_F(ClusterDirsTest, MakesFreshFoldersUnderTheRoot) {
  std::string a = make_cluster_dir(root_);
  std::string b = make_cluster_dir(root_);
  EXPECT_NE(a, b);
  EXPECT_TRUE(fs::is_directory(a));
  EXPECT_EQ(fs::path(a).parent_path(), fs::path(root_));
  EXPECT_THAT(fs::path(a).filename().string(), ::testing::StartsWith("cluster-"));
}

TEST_F(ClusterDirsTest, PidFilesRoundTripAndRejectGarbage) {
  fs::create_directories(root_);
  write_pid_file(root_ + "/x.pid", 4242);
  EXPECT_EQ(read_pid_file(root_ + "/x.pid"), 4242);
  std::ofstream(root_ + "/bad.pid") << "not a pid";
  EXPECT_EQ(read_pid_file(root_ + "/bad.pid"), std::nullopt);
  EXPECT_EQ(read_pid_file(root_ + "/absent.pid"), std::nullopt);
}

TEST_F(ClusterDirsTest, SweepRemovesFoldersOfDeadSupervisorsAndKillsTheirLeftovers) {
  std::string stale = make_cluster_dir(root_);
  write_pid_file(stale + "/" + kSupervisorPidFile, dead_pid());
  fs::create_directories(stale + "/" + kComponentPidDir);
  // A component that survived its supervisor: its command line points into the folder.
  process::ProcessSpec spec;
  spec.argv = {"sh", "-c", "sleep 1000", stale};
  auto survivor = process::Process::spawn(spec);
  write_pid_file(stale + "/" + kComponentPidDir + "/etcd.pid", survivor->pid());
  // A recycled pid that now belongs to something unrelated must not be killed.
  write_pid_file(stale + "/" + kComponentPidDir + "/kwok.pid", ::getpid());

  SweepReport report = sweep_stale_clusters(root_);
  EXPECT_THAT(report.removed_dirs, ElementsAre(stale));
  EXPECT_THAT(report.killed_pids, ElementsAre(survivor->pid()));
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_EQ(survivor->wait().signal, SIGKILL);
}

TEST_F(ClusterDirsTest, SweepKeepsLiveAndYoungFolders) {
  // A folder whose supervisor pid is alive but is not a supervisor counts as stale...
  std::string recycled = make_cluster_dir(root_);
  write_pid_file(recycled + "/" + kSupervisorPidFile, ::getpid());
  // ...one still being set up (no pid yet) is left alone while young...
  std::string starting = make_cluster_dir(root_);
  // ...and folders that are not clusters are never touched.
  fs::create_directories(root_ + "/last-failure");

  SweepReport report = sweep_stale_clusters(root_, std::chrono::seconds(3600));
  EXPECT_THAT(report.removed_dirs, ElementsAre(recycled));
  EXPECT_TRUE(fs::exists(starting));
  EXPECT_TRUE(fs::exists(root_ + "/last-failure"));

  report = sweep_stale_clusters(root_, std::chrono::seconds(0));
  EXPECT_THAT(report.removed_dirs, ElementsAre(starting));
}

TEST_F(ClusterDirsTest, SweepOfAMissingRootDoesNothing) {
  EXPECT_TRUE(sweep_stale_clusters(root_ + "/absent").removed_dirs.empty());
}

TEST_F(ClusterDirsTest, TailKeepsTheLastLines) {
  fs::create_directories(root_);
  std::ofstream out(root_ + "/log");
  for (int i = 1; i <= 100; ++i) out << "line " << i << "\n";
  out.close();
  EXPECT_EQ(tail_of_file(root_ + "/log", 2), "line 99\nline 100\n");
  EXPECT_EQ(tail_of_file(root_ + "/absent", 2), "");
}

TEST(ToolsTest, MissingToolNamesItselfAndTheFix) {
  EXPECT_THAT([] { require_tool("/nonexistent-tools", "kube-apiserver"); },
              ::testing::ThrowsMessage<std::runtime_error>(::testing::AllOf(
                  HasSubstr("kube-apiserver not found at /nonexistent-tools/kube-apiserver"),
                  HasSubstr("make tools"))));
  EXPECT_EQ(require_tool("/bin", "sh"), "/bin/sh");
}

TEST(ToolsTest, EnvironmentOverridesTheCache) {
  ::setenv("PERIMETER_TOOLS_BIN", "/opt/perimeter-tools", 1);
  EXPECT_EQ(tools_bin_dir(), "/opt/perimeter-tools");
  ::unsetenv("PERIMETER_TOOLS_BIN");
  ::setenv("XDG_CACHE_HOME", "/var/cache/me", 1);
  EXPECT_EQ(tools_bin_dir(), "/var/cache/me/perimeter/tools/bin");
  ::unsetenv("XDG_CACHE_HOME");
}

}  // namespace
}  // namespace perimeter::localcluster
