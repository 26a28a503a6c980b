#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentapi/agent_api.h"
#include "core/log.h"

namespace perimeter::runner {

// Runs an archive program (tar, unzip) and returns its stdout: the boundary skills extraction
// crosses, so the installer's checks are unit-tested without real archives.
class ArchiveCommand {
 public:
  virtual ~ArchiveCommand() = default;
  // Throws SkillError with the program's stderr when it fails or prints more than 1 MiB.
  virtual std::string run(const std::vector<std::string>& argv) = 0;
};

class SkillError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// posix_spawn of the program found on PATH outside the workdir (a file the agent wrote must never
// be run as `tar`), with a scrubbed environment.
class SpawnArchiveCommand final : public ArchiveCommand {
 public:
  // `search_path`: the process's PATH, read once by the caller.
  SpawnArchiveCommand(std::string workdir, std::string search_path)
      : workdir_(std::move(workdir)), search_path_(std::move(search_path)) {}
  std::string run(const std::vector<std::string>& argv) override;

 private:
  std::string workdir_;
  std::string search_path_;
};

// The official worker's setupSkills: each of the session agent's skills is downloaded into
// <workdir>/skills/<name>/, its archive (zip or tar.*) listed and checked before extraction (no
// absolute or `..` members), members that are not regular files or directories (symlinks, hard
// links, devices) left out, the staged tree checked to hold only regular files and directories,
// the bundle's single wrapper directory stripped, modes normalised (0700 dirs; 0755 files with
// any exec bit, else 0644). A failing skill is logged and skipped. `cleanup()` removes what was
// created.
class SkillInstaller {
 public:
  SkillInstaller(agentapi::AgentApi& api, ArchiveCommand& command, std::string workdir,
                 Logger logger);
  void install(const agentapi::Session& session);
  void cleanup();
  const std::vector<std::string>& created() const { return created_; }

 private:
  void install_one(const std::string& skill_id, const std::string& version);
  void extract(const std::string& archive_bytes, const std::string& dest);

  agentapi::AgentApi& api_;
  ArchiveCommand& command_;
  std::string workdir_;
  Logger logger_;
  std::vector<std::string> created_;
};

// An archive's members split by the type its typed listing (`tar -tvf`, `unzip -Z`) shows.
struct ArchiveMembers {
  std::vector<std::string> plain;    // regular files and directories: extracted
  std::vector<std::string> special;  // symlinks, hard links, devices, fifos: excluded
};
// Throws SkillError when the two listings disagree in length, or a special member's name cannot
// be handed back to the CLI verbatim as an exclusion (the SDK's classifyArchiveListing).
ArchiveMembers classify_archive_members(bool is_zip, const std::vector<std::string>& names,
                                        const std::vector<std::string>& typed);
// A name tar/unzip print exactly as stored: printable ASCII without `\`, `^` or `#` (their
// escapes), and for unzip no leading `-` (an option).
bool can_exclude_verbatim(bool is_zip, const std::string& name);
// A member name that is absolute or has a `..` component would land outside the stage.
bool is_unsafe_member_name(const std::string& name);
// The one top-level directory every member sits under, or "" (the SDK's archiveTopDir).
std::string archive_top_dir(const std::vector<std::string>& names);

}  // namespace perimeter::runner
