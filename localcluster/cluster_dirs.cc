#include "localcluster/cluster_dirs.h"

#include <signal.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "process/process.h"

namespace perimeter::localcluster {

namespace fs = std::filesystem;

std::string default_clusters_root() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  if (const char* root = std::getenv("PERIMETER_LOCAL_CLUSTER_ROOT"); root && *root) return root;
  for (const char* variable : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
    if (const char* dir = std::getenv(variable); dir && *dir) {
      return std::string(dir) + "/perimeter-local-cluster";
    }
  }
  return "/tmp/perimeter-local-cluster";
}

std::string make_cluster_dir(const std::string& root) {
  std::error_code error;
  fs::create_directories(root, error);
  if (error) throw std::runtime_error("cannot create " + root + ": " + error.message());
  std::string pattern = root + "/cluster-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("cannot create a cluster folder in " + root + ": " +
                             std::generic_category().message(errno));
  }
  return pattern;
}

void write_pid_file(const std::string& path, pid_t pid) {
  // Written whole then renamed, so a reader never sees half a number.
  std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    out << pid << "\n";
    if (!out) throw std::runtime_error("cannot write " + partial);
  }
  fs::rename(partial, path);
}

std::optional<pid_t> read_pid_file(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

bool process_matches(pid_t pid, const std::string& needle) {
  if (!process::process_alive(pid)) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.find(needle) != std::string::npos;
}

SweepReport sweep_stale_clusters(const std::string& root, std::chrono::seconds pidless_grace) {
  SweepReport report;
  std::error_code error;
  if (!fs::is_directory(root, error)) return report;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("cluster-", 0) != 0) continue;
    const std::string dir = entry.path().string();
    auto supervisor = read_pid_file(dir + "/" + kSupervisorPidFile);
    if (supervisor) {
      if (process_matches(*supervisor, kSupervisorProgram)) continue;
    } else {
      auto modified = fs::last_write_time(entry.path(), error);
      if (error || fs::file_time_type::clock::now() - modified < pidless_grace) continue;
    }
    // The owner is gone. Components normally died with it (parent-death signal); anything that
    // survived and still points into this folder is killed before the folder goes.
    for (const auto& pid_file : fs::directory_iterator(dir + "/" + kComponentPidDir, error)) {
      auto pid = read_pid_file(pid_file.path().string());
      if (pid && process_matches(*pid, dir)) {
        ::kill(*pid, SIGKILL);
        report.killed_pids.push_back(*pid);
      }
    }
    fs::remove_all(dir, error);
    if (!error) report.removed_dirs.push_back(dir);
  }
  return report;
}

std::string tail_of_file(const std::string& path, size_t lines) {
  std::ifstream in(path);
  if (!in) return "";
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(std::move(line));
    if (last.size() > lines) last.pop_front();
  }
  std::ostringstream out;
  for (const auto& l : last) out << l << "\n";
  return out.str();
}

}  // namespace perimeter::localcluster
