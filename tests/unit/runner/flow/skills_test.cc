#include "runner/skills.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "agentapi/sim_process.h"
#include "flow_fakes.h"

namespace perimeter::runner {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::_;
using ::testing::Return;
using ::testing::StrictMock;

agentapi::Session session_with_skill(const std::string& skill_id) {
  agentapi::Session session;
  session.id = "sess_1";
  session.status = "running";
  session.raw = {
      {"agent", {{"skills", json::array({{{"skill_id", skill_id}, {"version", "latest"}}})}}}};
  return session;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A tar archive made by the system tar from `files` under `root` (a wrapper dir when not empty).
std::string make_tar(const fs::path& scratch,
                     const std::vector<std::pair<std::string, std::string>>& files,
                     const std::string& extra_command = "") {
  const fs::path tree = scratch / "tree";
  fs::remove_all(tree);
  for (const auto& [name, content] : files) {
    fs::create_directories((tree / name).parent_path());
    std::ofstream(tree / name, std::ios::binary) << content;
    if (name.ends_with(".sh")) fs::permissions(tree / name, fs::perms::owner_all);
  }
  fs::create_directories(tree);
  const fs::path archive = scratch / "skill.tar";
  const std::string command = "cd '" + tree.string() + "' && " + extra_command + "tar -cf '" +
                              archive.string() + "' * 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return read_file(archive);
}

class SkillsTest : public ::testing::Test {
 protected:
  SkillsTest() : workdir(dir.path() + "/workspace") { fs::create_directories(workdir); }

  perimeter::testing::TempDir dir;
  perimeter::testing::TempDir scratch;
  std::string workdir;
  StrictMock<perimeter::testing::MockAgentApi> api;
  std::shared_ptr<perimeter::testing::CapturingLogSink> logs =
      std::make_shared<perimeter::testing::CapturingLogSink>();
};

TEST(SkillMemberNames, AbsoluteAndParentComponentsAreUnsafe) {
  EXPECT_TRUE(is_unsafe_member_name("/etc/passwd"));
  EXPECT_TRUE(is_unsafe_member_name("../x"));
  EXPECT_TRUE(is_unsafe_member_name("a/../../x"));
  EXPECT_TRUE(is_unsafe_member_name("a\\..\\x"));
  EXPECT_FALSE(is_unsafe_member_name("a/..b/x"));
  EXPECT_FALSE(is_unsafe_member_name("./a/b"));
}

TEST(SkillMemberNames, OneWrapperDirectoryIsStripped) {
  EXPECT_EQ(archive_top_dir({"pdf/", "pdf/SKILL.md", "pdf/scripts/a.sh"}), "pdf");
  EXPECT_EQ(archive_top_dir({"./pdf/SKILL.md"}), "pdf");
  EXPECT_EQ(archive_top_dir({"SKILL.md"}), "");
  EXPECT_EQ(archive_top_dir({"a/x", "b/y"}), "");
}

TEST_F(SkillsTest, ExtractsIntoSkillsNameStripsTheWrapperKeepsExecBitsAndCleansUp) {
  const std::string archive =
      make_tar(scratch.path(), {{"release-notes/SKILL.md", "# Release notes\n"},
                                {"release-notes/scripts/hello.sh", "#!/bin/sh\necho hi\n"}});
  EXPECT_CALL(api, retrieve_skill_version("skill_1", "latest"))
      .WillOnce(Return(agentapi::SkillVersion{"ver_7", "release-notes", {}}));
  EXPECT_CALL(api, download_skill_content("skill_1", "ver_7")).WillOnce(Return(archive));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));
  const fs::path dest = fs::path(workdir) / "skills/release-notes";
  EXPECT_EQ(read_file(dest / "SKILL.md"), "# Release notes\n");
  struct stat info {};
  ASSERT_EQ(stat((dest / "scripts/hello.sh").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0755u);
  ASSERT_EQ(stat((dest / "SKILL.md").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0644u);
  installer.cleanup();
  EXPECT_FALSE(fs::exists(dest));
}

TEST_F(SkillsTest, AnArchiveWithATraversalMemberIsRefusedBeforeExtraction) {
  StrictMock<testing::MockArchiveCommand> command;
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "evil", {}}));
  EXPECT_CALL(api, download_skill_content(_, "ver_1")).WillOnce(Return("not a zip"));
  // Listing only: no extraction call is expected.
  EXPECT_CALL(command, run(::testing::ElementsAre("tar", "-tf", _)))
      .WillOnce(Return("ok/SKILL.md\n../../outside\n"));
  EXPECT_CALL(command, run(::testing::ElementsAre("tar", "-tvf", _)))
      .WillOnce(Return("-rw-r--r-- a/a 1 2026-01-01 00:00 ok/SKILL.md\n"
                       "-rw-r--r-- a/a 1 2026-01-01 00:00 ../../outside\n"));
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));
  EXPECT_TRUE(testing::logged(*logs, "refusing to extract unsafe archive member: ../../outside"));
  EXPECT_FALSE(fs::exists(fs::path(workdir) / "skills/evil/SKILL.md"));
}

TEST_F(SkillsTest, ASymlinkMemberIsRefused) {
  const std::string archive =
      make_tar(scratch.path(), {{"s/SKILL.md", "x"}}, "ln -s /etc/passwd s/link && ");
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "s", {}}));
  EXPECT_CALL(api, download_skill_content(_, _)).WillOnce(Return(archive));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));
  EXPECT_TRUE(testing::logged(*logs, "is not a regular file or directory"));
  EXPECT_FALSE(fs::exists(fs::path(workdir) / "skills/s/link"));
}

TEST_F(SkillsTest, AHostileNameStaysInsideTheSkillsDirAndAFailureIsOnlyLogged) {
  EXPECT_CALL(api, retrieve_skill_version("skill_9", _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "..", {}}));
  EXPECT_CALL(api, download_skill_content("skill_9", "ver_1"))
      .WillOnce(::testing::Throw(agentapi::TransportError("connection reset")));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_9"));
  EXPECT_TRUE(testing::logged(*logs, "failed to download skill"));
  EXPECT_TRUE(installer.created().empty()) << "the download failed before anything was created";
}

}  // namespace
}  // namespace perimeter::runner
