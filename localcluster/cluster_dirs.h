#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace perimeter::localcluster {

// Every local cluster lives in its own folder `cluster-*` under one root:
// $PERIMETER_LOCAL_CLUSTER_ROOT, else $XDG_RUNTIME_DIR, $TMPDIR or /tmp, +
// /perimeter-local-cluster. A cluster folder holds `supervisor.pid` (the process that owns it) and
// `pids/<component>.pid`.
std::string default_clusters_root();

// Creates a fresh, empty cluster folder under `root` (creating root too). Returns its path.
std::string make_cluster_dir(const std::string& root);

inline constexpr const char* kSupervisorPidFile = "supervisor.pid";
inline constexpr const char* kComponentPidDir = "pids";
inline constexpr const char* kSupervisorProgram = "perimeter-local-cluster";

void write_pid_file(const std::string& path, pid_t pid);
std::optional<pid_t> read_pid_file(const std::string& path);

// True when `pid` is alive and its command line mentions `needle` (so a recycled pid of some
// unrelated process does not count).
bool process_matches(pid_t pid, const std::string& needle);

struct SweepReport {
  std::vector<std::string> removed_dirs;
  std::vector<pid_t> killed_pids;
};

// Removes cluster folders whose supervisor is gone (SIGKILLed, say), first SIGKILLing any of their
// components that are still alive. A folder without a supervisor pid is left alone while younger
// than `pidless_grace` (its supervisor may be starting right now).
SweepReport sweep_stale_clusters(const std::string& root,
                                 std::chrono::seconds pidless_grace = std::chrono::seconds(120));

// The last `lines` lines of a text file ("" when it cannot be read).
std::string tail_of_file(const std::string& path, size_t lines);

}  // namespace perimeter::localcluster
