#include "runner/skills.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace perimeter::runner {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kArchiveOutputLimit = std::size_t{1024} * 1024;
constexpr fs::perms kDirMode = fs::perms::owner_all;

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

bool inside(const std::string& path, const std::string& root) {
  return path == root || path.rfind(root + "/", 0) == 0;
}

// Only regular files and directories may be promoted; a second hard link would let chmod reach
// an inode the archive did not create.
void check_and_normalize(const fs::path& dir) {
  fs::permissions(dir, kDirMode);
  for (const auto& entry : fs::directory_iterator(dir)) {
    struct stat info {};
    if (lstat(entry.path().c_str(), &info) != 0)
      throw SkillError("cannot stat an extracted member");
    if (S_ISDIR(info.st_mode)) {
      check_and_normalize(entry.path());
    } else if (S_ISREG(info.st_mode)) {
      if (info.st_nlink > 1) {
        throw SkillError("skill archive listing is inconsistent; refusing to extract");
      }
      chmod(entry.path().c_str(), (info.st_mode & 0111) ? 0755 : 0644);
    } else {
      throw SkillError("skill archive listing is inconsistent; refusing to extract");
    }
  }
}

// Both CLIs read exclusions as glob patterns.
std::string escape_exclude_pattern(const std::string& name) {
  std::string pattern;
  for (const char c : name) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') pattern.push_back('\\');
    pattern.push_back(c);
  }
  return pattern;
}

// tar's `-X` list, created owner-only and exclusively in the item's private staging dir.
void write_exclude_file(const std::string& path, const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += escape_exclude_pattern(name) + "\n";
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw SkillError("cannot write the archive's exclusion list");
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  if (!written) throw SkillError("cannot write the archive's exclusion list");
}

}  // namespace

bool can_exclude_verbatim(bool is_zip, const std::string& name) {
  if (name.empty() || (is_zip && name.front() == '-')) return false;
  for (const char c : name) {
    if (c < 0x20 || c > 0x7e || c == '\\' || c == '^' || c == '#') return false;
  }
  return true;
}

ArchiveMembers classify_archive_members(bool is_zip, const std::vector<std::string>& names,
                                        const std::vector<std::string>& typed) {
  if (typed.size() != names.size()) {
    throw SkillError("skill archive listing is inconsistent; refusing to extract");
  }
  // `?`: a zip entry with no Unix type bits, extracted as a regular file; `C`: GNU tar's
  // contiguous file.
  const std::string plain_types = is_zip ? "-d?" : "-dC";
  ArchiveMembers members;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!typed[i].empty() && plain_types.find(typed[i].front()) != std::string::npos) {
      members.plain.push_back(names[i]);
    } else if (can_exclude_verbatim(is_zip, names[i])) {
      members.special.push_back(names[i]);
    } else {
      // tar and unzip print such names escaped: handed back as a pattern, it would not match.
      throw SkillError("refusing to extract archive: cannot safely exclude member " +
                       nlohmann::json(names[i]).dump());
    }
  }
  return members;
}

bool is_unsafe_member_name(const std::string& name) {
  if (name.empty()) return false;
  if (name.front() == '/' || name.front() == '\\') return true;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t end = name.find_first_of("/\\", start);
    const std::string part = name.substr(start, end == std::string::npos ? end : end - start);
    if (part == "..") return true;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return false;
}

std::string archive_top_dir(const std::vector<std::string>& names) {
  std::string top;
  bool nested = false;
  for (const std::string& raw : names) {
    std::vector<std::string> parts;
    std::stringstream in(raw);
    for (std::string part; std::getline(in, part, '/');) {
      if (!part.empty() && part != ".") parts.push_back(part);
    }
    if (parts.empty()) continue;
    if (top.empty()) {
      top = parts[0];
    } else if (parts[0] != top) {
      return "";
    }
    if (parts.size() > 1) nested = true;
  }
  return nested ? top : "";
}

std::string SpawnArchiveCommand::run(const std::vector<std::string>& argv) {
  // The first PATH entry outside the workdir that has the program.
  const std::string& search = search_path_;
  std::string program;
  std::stringstream entries(search);
  for (std::string dir; std::getline(entries, dir, ':');) {
    if (dir.empty() || dir.front() != '/' || inside(dir, workdir_)) continue;
    const std::string candidate = dir + "/" + argv[0];
    if (access(candidate.c_str(), X_OK) == 0) {
      program = candidate;
      break;
    }
  }
  if (program.empty()) {
    throw SkillError("skill extraction requires the `" + argv[0] +
                     "` command, but it was not found on PATH outside `workdir`");
  }
  int out[2];
  int err[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw SkillError("pipe failed");
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    throw SkillError("pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  // Nor do the runner's sockets (opened without close-on-exec) reach the archive tools.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  std::vector<std::string> copy = argv;
  for (auto& arg : copy) args.push_back(arg.data());
  args.push_back(nullptr);
  // A scrubbed environment: no credential reaches the archive tools.
  std::string path_var = "PATH=" + search;
  std::array<char*, 2> envp = {path_var.data(), nullptr};
  pid_t pid = -1;
  const int spawned =
      posix_spawn(&pid, program.c_str(), &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  std::string stdout_text;
  std::string stderr_text;
  bool over_limit = false;
  if (spawned == 0) {
    std::array<pollfd, 2> fds = {pollfd{out[0], POLLIN, 0}, pollfd{err[0], POLLIN, 0}};
    int open_fds = 2;
    char buffer[65536];
    while (open_fds > 0) {
      if (poll(fds.data(), fds.size(), -1) < 0) break;
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        const ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
        if (n <= 0) {
          fds[i].fd = -1;
          --open_fds;
          continue;
        }
        std::string& sink = i == 0 ? stdout_text : stderr_text;
        sink.append(buffer, static_cast<std::size_t>(n));
        if (sink.size() > kArchiveOutputLimit && !over_limit) {
          over_limit = true;
          kill(pid, SIGKILL);
        }
      }
    }
  }
  close(out[0]);
  close(err[0]);
  if (spawned != 0) throw SkillError("cannot start `" + argv[0] + "`");
  int status = 0;
  waitpid(pid, &status, 0);
  if (over_limit) {
    throw SkillError("skill archive lists too many members: `" + argv[0] +
                     "` printed more than 1048576 characters");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!stderr_text.empty() && (stderr_text.back() == '\n' || stderr_text.back() == ' ')) {
      stderr_text.pop_back();
    }
    throw SkillError("`" + argv[0] + "` failed (" +
                     (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                        : "signal " + std::to_string(WTERMSIG(status))) +
                     "): " + stderr_text);
  }
  return stdout_text;
}

SkillInstaller::SkillInstaller(agentapi::AgentApi& api, ArchiveCommand& command,
                               std::string workdir, Logger logger)
    : api_(api), command_(command), workdir_(std::move(workdir)), logger_(std::move(logger)) {}

void SkillInstaller::install(const agentapi::Session& session) {
  const nlohmann::json* skills = nullptr;
  if (auto agent = session.raw.find("agent"); agent != session.raw.end() && agent->is_object()) {
    if (auto list = agent->find("skills"); list != agent->end() && list->is_array()) {
      skills = &*list;
    }
  }
  if (skills == nullptr) return;
  for (const nlohmann::json& skill : *skills) {
    const std::string skill_id = skill.value("skill_id", "");
    try {
      if (skill_id.empty()) throw SkillError("skill entry has no skill_id");
      install_one(skill_id, skill.value("version", "latest"));
    } catch (const std::exception& error) {
      logger_.warn("failed to download skill", {{"skill_id", skill_id}, {"error", error.what()}});
    }
  }
}

void SkillInstaller::install_one(const std::string& skill_id, const std::string& version) {
  const agentapi::SkillVersion resolved = api_.retrieve_skill_version(skill_id, version);
  const fs::path skills_root = fs::absolute(fs::path(workdir_) / "skills").lexically_normal();
  // One safe path component named after the skill, so a hostile name cannot escape.
  std::string name = resolved.name;
  name.erase(0, name.find_first_not_of(" \t\n\r"));
  name.erase(name.find_last_not_of(" \t\n\r") + 1);
  std::string dirname = fs::path(name).filename().string();
  if (dirname.empty() || dirname == "." || dirname == "..") dirname = skill_id;
  const fs::path dest = (skills_root / dirname).lexically_normal();
  if (!inside(dest.string(), skills_root.string()) || dest == skills_root) {
    logger_.warn("skill name escapes the skills dir; skipping", {{"name", resolved.name}});
    return;
  }
  // `version` may be the alias "latest": download by the concrete id the retrieve returned.
  const std::string bytes = api_.download_skill_content(skill_id, resolved.id);
  fs::remove_all(dest);
  fs::create_directories(dest);
  fs::permissions(dest, kDirMode);
  created_.push_back(dest.string());
  extract(bytes, dest.string());
  logger_.info("downloaded skill",
               {{"skill_id", skill_id}, {"version", resolved.id}, {"dest", dest.string()}});
}

void SkillInstaller::extract(const std::string& archive_bytes, const std::string& dest) {
  std::string work_template = fs::path(dest).parent_path().string() + "/.skill-stage-XXXXXX";
  if (mkdtemp(work_template.data()) == nullptr) throw SkillError("cannot create a staging dir");
  const fs::path work = work_template;
  struct RemoveWork {
    fs::path path;
    ~RemoveWork() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } remove_work{work};
  const std::string archive = (work / "archive").string();
  {
    std::ofstream out(archive, std::ios::binary);
    out.write(archive_bytes.data(), static_cast<std::streamsize>(archive_bytes.size()));
    if (!out) throw SkillError("cannot write the skill archive");
  }
  const bool is_zip = archive_bytes.size() >= 4 && archive_bytes.compare(0, 4, "PK\x03\x04") == 0;
  // List first and check, then extract: tar and unzip would write a `../` member outside.
  const std::vector<std::string> names =
      split_lines(command_.run(is_zip ? std::vector<std::string>{"unzip", "-Z1", archive}
                                      : std::vector<std::string>{"tar", "-tf", archive}));
  const std::vector<std::string> typed = split_lines(
      command_.run(is_zip ? std::vector<std::string>{"unzip", "-Z", "--h", "--t", archive}
                          : std::vector<std::string>{"tar", "-tvf", archive}));
  const ArchiveMembers members = classify_archive_members(is_zip, names, typed);
  for (const std::vector<std::string>* group : {&members.plain, &members.special}) {
    for (const std::string& name : *group) {
      if (is_unsafe_member_name(name)) {
        throw SkillError("refusing to extract unsafe archive member: " + name);
      }
    }
  }
  if (!members.special.empty()) {
    // As the SDK: symlinks, hard links and devices are left out, wherever they point, so no link
    // is ever followed or kept; the rest of the skill is still installed.
    logger_.info("skill archive members that are not regular files or directories left out",
                 {{"dest", dest}, {"members", members.special}});
  }
  const fs::path stage = work / "stage";
  fs::create_directory(stage);
  fs::permissions(stage, kDirMode);
  // `unzip` fails when every member is excluded: extract only when something is left.
  if (!members.plain.empty()) {
    std::vector<std::string> argv =
        is_zip ? std::vector<std::string>{"unzip", "-oq", archive, "-d", stage.string()}
               : std::vector<std::string>{"tar",
                                          "-xf",
                                          archive,
                                          "-C",
                                          stage.string(),
                                          "--no-same-owner",
                                          "--no-same-permissions"};
    if (!members.special.empty()) {
      if (is_zip) {
        // After `-d`, so no pattern is read as an option.
        argv.emplace_back("-x");
        for (const std::string& name : members.special) {
          argv.push_back(escape_exclude_pattern(name));
        }
      } else {
        const std::string exclude = (work / "exclude").string();
        write_exclude_file(exclude, members.special);
        argv.emplace_back("-X");
        argv.push_back(exclude);
      }
    }
    command_.run(argv);
  }
  check_and_normalize(stage);
  const std::string top = archive_top_dir(members.plain);
  const fs::path source = top.empty() ? stage : stage / top;
  if (!fs::is_directory(source)) {
    throw SkillError("skill archive listing is inconsistent; refusing to extract");
  }
  for (const auto& entry : fs::directory_iterator(source)) {
    fs::rename(entry.path(), fs::path(dest) / entry.path().filename());
  }
}

void SkillInstaller::cleanup() {
  for (const std::string& dest : created_) {
    std::error_code error;
    fs::remove_all(dest, error);
    if (error) {
      logger_.warn("failed to clean up skill", {{"dest", dest}, {"error", error.message()}});
    }
  }
  created_.clear();
}

}  // namespace perimeter::runner
