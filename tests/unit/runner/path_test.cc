#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tools/file_io.h"
#include "tools/path_util.h"
#include "tools/tool_error.h"
#include "tools/workspace.h"

namespace perimeter::tools {
namespace {

namespace fs = std::filesystem;

TEST(Paths, NormalizeAndResolveLikeNode) {
  EXPECT_EQ(paths::normalize("/a//b/./c/../d/"), "/a/b/d");
  EXPECT_EQ(paths::normalize("/../.."), "/");
  EXPECT_EQ(paths::normalize("a/../../b"), "../b");
  EXPECT_EQ(paths::normalize(""), ".");
  EXPECT_EQ(paths::resolve("/w", "x/../y"), "/w/y");
  EXPECT_EQ(paths::resolve("/w", "/etc/passwd"), "/etc/passwd");
  EXPECT_EQ(paths::join("/w", ""), "/w");
  EXPECT_EQ(paths::dirname("/a/b/"), "/a");
  EXPECT_EQ(paths::dirname("/a"), "/");
  EXPECT_EQ(paths::dirname("/"), "/");
  EXPECT_EQ(paths::basename("/a/b.txt"), "b.txt");
}

TEST(Paths, WithinComparesWholeComponents) {
  EXPECT_TRUE(paths::is_within("/w", "/w"));
  EXPECT_TRUE(paths::is_within("/w", "/w/x"));
  EXPECT_FALSE(paths::is_within("/w", "/wx"));
  EXPECT_FALSE(paths::is_within("/w", "/"));
}

TEST(FsErrorMessage, UsesTheSdkWordingAndNeverTheHostText) {
  EXPECT_EQ(fs_error_message("ENOENT", "a.txt"), "a.txt: no such file or directory");
  EXPECT_EQ(fs_error_message("EPERM", "a.txt"), "a.txt: permission denied");
  EXPECT_EQ(fs_error_message("EXDEV", "a.txt"), "a.txt: i/o error (EXDEV)");
}

class WorkspaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/perimeter-ws-test-XXXXXX";
    base_ = fs::canonical(::mkdtemp(tmpl));
    fs::create_directories(base_ / "ws/sub");
    fs::create_directories(base_ / "outside");
    std::ofstream(base_ / "ws/a.txt") << "a";
    std::ofstream(base_ / "outside/s.txt") << "s";
  }
  void TearDown() override { fs::remove_all(base_); }
  fs::path base_;
};

TEST_F(WorkspaceTest, CanonicalizeFollowsDanglingLinksAndNewComponents) {
  fs::create_symlink("../outside/new/file", base_ / "ws/dangling");
  EXPECT_EQ(canonicalize((base_ / "ws/dangling").string()), (base_ / "outside/new/file").string());
  EXPECT_EQ(canonicalize((base_ / "ws/not/yet/there").string()),
            (base_ / "ws/not/yet/there").string());
}

TEST_F(WorkspaceTest, CanonicalizeReportsLinkLoops) {
  fs::create_symlink("l2", base_ / "ws/l1");
  fs::create_symlink("l1", base_ / "ws/l2");
  try {
    canonicalize((base_ / "ws/l1").string());
    FAIL() << "a loop must not resolve";
  } catch (const FsError& e) {
    EXPECT_EQ(e.code(), "ELOOP");
  }
}

TEST_F(WorkspaceTest, ConfinesEveryWayOut) {
  fs::create_symlink("../outside", base_ / "ws/out");
  const Workspace ws((base_ / "ws").string());
  EXPECT_EQ(ws.confine("a.txt"), (base_ / "ws/a.txt").string());
  EXPECT_EQ(ws.confine((base_ / "ws/sub/../a.txt").string()), (base_ / "ws/a.txt").string());
  for (const char* escape : {"../outside/s.txt", "/etc/passwd", "out/s.txt", "sub/../../outside"}) {
    try {
      ws.confine(escape);
      ADD_FAILURE() << escape << " was allowed";
    } catch (const ToolError& e) {
      EXPECT_EQ(std::string(e.what()),
                "path \"" + std::string(escape) + "\" is outside the session's working directory");
    }
  }
}

TEST_F(WorkspaceTest, AllowedRootsWidenTheBoundaryAndChangeTheWording) {
  const Workspace ws((base_ / "ws").string(), {(base_ / "outside").string()});
  EXPECT_EQ(ws.confine("../outside/s.txt"), (base_ / "outside/s.txt").string());
  try {
    ws.confine("/etc/passwd");
    FAIL();
  } catch (const ToolError& e) {
    EXPECT_EQ(std::string(e.what()),
              "path \"/etc/passwd\" is outside the session's working directory and its other "
              "permitted directories");
  }
}

TEST_F(WorkspaceTest, NonStringPathIsAnIoErrorAsInTheSdk) {
  const Workspace ws((base_ / "ws").string());
  try {
    ws.confine(nlohmann::json(12));
    FAIL();
  } catch (const ToolError& e) {
    EXPECT_EQ(std::string(e.what()), "path 12: i/o error (ERR_INVALID_ARG_TYPE)");
  }
}

TEST_F(WorkspaceTest, AtomicWriteKeepsModeAndLeavesNoTempFile) {
  const std::string target = (base_ / "ws/run.sh").string();
  std::ofstream(target) << "old";
  fs::permissions(target, fs::perms(0755));
  atomic_write_file(target, "new");
  EXPECT_EQ(read_file(target), "new");
  EXPECT_EQ(fs::status(target).permissions() & fs::perms::mask, fs::perms(0755));
  atomic_write_file((base_ / "ws/fresh").string(), "x");
  EXPECT_EQ(fs::status(base_ / "ws/fresh").permissions() & fs::perms::mask, fs::perms(0600));
  for (const auto& entry : fs::directory_iterator(base_ / "ws")) {
    EXPECT_EQ(entry.path().filename().string().rfind(".tmp-", 0), std::string::npos);
  }
}

}  // namespace
}  // namespace perimeter::tools
