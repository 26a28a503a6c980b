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

TEST(SkillArchiveMembers, SpecialMembersAreSetAsideAndNamesThatCannotBeExcludedRefuseAll) {
  const ArchiveMembers tar = classify_archive_members(
      false, {"s/", "s/SKILL.md", "s/big", "s/link", "s/hard"},
      {"drwxr-xr-x a/a 0 2026-01-01 00:00 s/", "-rw-r--r-- a/a 1 2026-01-01 00:00 s/SKILL.md",
       "C-rw-r--r-- a/a 1 2026-01-01 00:00 s/big",
       "lrwxrwxrwx a/a 0 2026-01-01 00:00 s/link -> /etc/passwd",
       "hrw-r--r-- a/a 0 2026-01-01 00:00 s/hard link to s/SKILL.md"});
  EXPECT_THAT(tar.plain, ::testing::ElementsAre("s/", "s/SKILL.md", "s/big"));
  EXPECT_THAT(tar.special, ::testing::ElementsAre("s/link", "s/hard"));

  const ArchiveMembers zip =
      classify_archive_members(true, {"s/SKILL.md", "s/raw", "s/link"},
                               {"-rw-r--r--  3.0 unx 1 tx stor 26-Jan-01 00:00 s/SKILL.md",
                                "?rw-------  2.0 fat 1 b- stor 26-Jan-01 00:00 s/raw",
                                "lrwxrwxrwx  3.0 unx 8 bx stor 26-Jan-01 00:00 s/link"});
  EXPECT_THAT(zip.plain, ::testing::ElementsAre("s/SKILL.md", "s/raw"));
  EXPECT_THAT(zip.special, ::testing::ElementsAre("s/link"));

  // tar and unzip print these escaped, so the name handed back would not match the member.
  for (const std::string name : {"s/l#1", "s/l\\303", "s/l^A", "s/l\xc3\xa9"}) {
    EXPECT_THROW(classify_archive_members(false, {name}, {"lrwxrwxrwx a/a 0 x " + name}),
                 SkillError)
        << name;
  }
  EXPECT_THROW(classify_archive_members(true, {"-x"}, {"lrwxrwxrwx -x"}), SkillError)
      << "a leading - would be an unzip option";
  EXPECT_NO_THROW(classify_archive_members(false, {"-x"}, {"lrwxrwxrwx -x"}))
      << "tar reads -X patterns from a file";
  EXPECT_THROW(classify_archive_members(false, {"a", "b"}, {"-rw a"}), SkillError)
      << "listings that disagree in length";
}

// Symlinks that stay inside the skill and symlinks that escape it are both left out (the SDK
// keeps none), a hard link too; the skill's regular files are still installed.
TEST_F(SkillsTest, LinkMembersInsideOrEscapingAreLeftOutAndTheRestIsInstalled) {
  const fs::path outside = fs::path(scratch.path()) / "outside";
  fs::create_directories(outside);
  std::ofstream(outside / "secret") << "not for the agent";
  const std::string archive = make_tar(
      scratch.path(), {{"s/SKILL.md", "# S\n"}, {"s/docs/guide.md", "guide"}},
      "ln -s SKILL.md s/alias && ln -s docs s/docs-alias && ln -s ../../outside s/escape && "
      "ln -s '" +
          (outside / "secret").string() + "' s/absolute && ln s/docs/guide.md s/hard && ");
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "s", {}}));
  EXPECT_CALL(api, download_skill_content(_, _)).WillOnce(Return(archive));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));

  const fs::path dest = fs::path(workdir) / "skills/s";
  EXPECT_EQ(read_file(dest / "SKILL.md"), "# S\n");
  for (const char* link : {"alias", "docs-alias", "escape", "absolute"}) {
    EXPECT_FALSE(fs::exists(fs::symlink_status(dest / link))) << link << " was extracted";
  }
  // tar stores the first name of a hard-linked file it meets as the file, the second as a link
  // member: that one is left out, so exactly one of the two names is installed.
  const bool guide_kept = fs::is_regular_file(fs::symlink_status(dest / "docs/guide.md"));
  const bool hard_kept = fs::is_regular_file(fs::symlink_status(dest / "hard"));
  EXPECT_NE(guide_kept, hard_kept);
  EXPECT_EQ(read_file(dest / (guide_kept ? "docs/guide.md" : "hard")), "guide");
  EXPECT_TRUE(testing::logged(*logs, "not regular files or directories left out"));
  EXPECT_FALSE(testing::logged(*logs, "failed to download skill"));
  EXPECT_EQ(read_file(outside / "secret"), "not for the agent");
  EXPECT_EQ(std::distance(fs::directory_iterator(outside), fs::directory_iterator{}), 1);
}

// The classic link-then-write archive: `s/dir` a symlink out of the skill, then `s/dir/payload`.
// The link is left out, and with it what sits under its name (tar's exclusions cover a member's
// path below them, as for the SDK): nothing is written through the link, the rest is installed.
TEST_F(SkillsTest, AFileWrittenThroughAnEscapingSymlinkMemberStaysInsideTheSkill) {
  const fs::path outside = fs::path(scratch.path()) / "outside";
  fs::create_directories(outside);
  const fs::path linked = fs::path(scratch.path()) / "linked";
  const fs::path real = fs::path(scratch.path()) / "real";
  fs::create_directories(linked / "s");
  fs::create_directories(real / "s/dir");
  std::ofstream(linked / "s/SKILL.md") << "x";
  fs::create_symlink(outside, linked / "s/dir");
  std::ofstream(real / "s/dir/payload") << "payload";
  const fs::path archive = fs::path(scratch.path()) / "attack.tar";
  const std::string build = "tar -cf '" + archive.string() + "' -C '" + linked.string() +
                            "' s && tar -rf '" + archive.string() + "' -C '" + real.string() +
                            "' s/dir/payload";
  ASSERT_EQ(std::system(build.c_str()), 0) << build;
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "s", {}}));
  EXPECT_CALL(api, download_skill_content(_, _)).WillOnce(Return(read_file(archive)));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));

  const fs::path dest = fs::path(workdir) / "skills/s";
  EXPECT_TRUE(fs::is_empty(outside)) << "a member was written through the link";
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest / "dir")));
  EXPECT_EQ(read_file(dest / "SKILL.md"), "x");
  EXPECT_FALSE(testing::logged(*logs, "failed to download skill"));
}

// tar reads exclusions as globs: a link named `l[1]` must not take the plain file `l1` with it.
TEST_F(SkillsTest, ExclusionsAreEscapedSoOnlyTheLinkIsLeftOut) {
  const std::string archive =
      make_tar(scratch.path(), {{"s/SKILL.md", "x"}, {"s/l1", "plain"}, {"s/la", "plain"}},
               "ln -s SKILL.md 's/l[1]' && ln -s SKILL.md 's/l?' && ");
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "s", {}}));
  EXPECT_CALL(api, download_skill_content(_, _)).WillOnce(Return(archive));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));

  const fs::path dest = fs::path(workdir) / "skills/s";
  EXPECT_EQ(read_file(dest / "l1"), "plain");
  EXPECT_EQ(read_file(dest / "la"), "plain");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest / "l[1]")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest / "l?")));
}

// A zip with a symlink entry (zip -y): unzip gets the link after `-x`, which follows `-d`.
TEST_F(SkillsTest, AZipSymlinkEntryIsExcludedAfterTheDestinationArgument) {
  const fs::path tree = fs::path(scratch.path()) / "zip";
  fs::create_directories(tree / "s");
  std::ofstream(tree / "s/SKILL.md") << "zipped";
  fs::create_symlink("/etc/passwd", tree / "s/passwd");
  const fs::path archive = fs::path(scratch.path()) / "skill.zip";
  const std::string build = "cd '" + tree.string() + "' && zip -qry '" + archive.string() + "' s";
  ASSERT_EQ(std::system(build.c_str()), 0) << build;
  SpawnArchiveCommand real(workdir, "/usr/bin:/bin");
  StrictMock<testing::MockArchiveCommand> command;
  std::vector<std::string> extract_argv;
  EXPECT_CALL(command, run(_)).Times(3).WillRepeatedly([&](const std::vector<std::string>& argv) {
    if (argv[1] == "-oq") extract_argv = argv;
    return real.run(argv);
  });
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "s", {}}));
  EXPECT_CALL(api, download_skill_content(_, _)).WillOnce(Return(read_file(archive)));
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));

  ASSERT_EQ(extract_argv.size(), 7u);
  EXPECT_EQ(extract_argv[3], "-d");
  EXPECT_EQ(extract_argv[5], "-x");
  EXPECT_EQ(extract_argv[6], "s/passwd");
  const fs::path dest = fs::path(workdir) / "skills/s";
  EXPECT_EQ(read_file(dest / "SKILL.md"), "zipped");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest / "passwd")));
}

// A link whose name tar prints escaped cannot be excluded reliably: the whole archive is refused.
TEST_F(SkillsTest, ALinkWhoseNameCannotBeExcludedRefusesTheArchive) {
  const std::string archive =
      make_tar(scratch.path(), {{"s/SKILL.md", "x"}}, "ln -s /etc/passwd 's/#link' && ");
  EXPECT_CALL(api, retrieve_skill_version(_, _))
      .WillOnce(Return(agentapi::SkillVersion{"ver_1", "s", {}}));
  EXPECT_CALL(api, download_skill_content(_, _)).WillOnce(Return(archive));
  SpawnArchiveCommand command(workdir, "/usr/bin:/bin");
  SkillInstaller installer(api, command, workdir, Logger("skills", logs));
  installer.install(session_with_skill("skill_1"));
  EXPECT_TRUE(testing::logged(*logs, "cannot safely exclude member"));
  EXPECT_FALSE(fs::exists(fs::path(workdir) / "skills/s/SKILL.md"));
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
