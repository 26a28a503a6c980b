#pragma once

#include <sys/types.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kube/transport.h"

namespace perimeter::bench {

// The environment variable `name`, or `fallback`. Read on the main thread before any other
// thread starts.
std::string env_or(const char* name, const std::string& fallback);

// The whole file ("" when it cannot be read).
std::string read_file(const std::string& path);

// A process's memory and CPU from /proc: VmHWM (peak RSS) and VmRSS in KiB, utime+stime in
// seconds.
struct ProcessUsage {
  long hwm_kib = 0;
  long rss_kib = 0;
  double cpu_seconds = 0;
};
ProcessUsage process_usage(pid_t pid);

// One live thread's CPU (utime+stime, seconds) and its role: its name as the process set it
// (core/thread_name.h) without a trailing "/N", so that the poll threads of an environment add
// up. Threads nobody named show the process's name.
struct ThreadCpu {
  std::string role;
  double cpu_seconds = 0;
};
// By thread id.
std::map<long, ThreadCpu> thread_cpu(pid_t pid);
// CPU seconds by role spent between two snapshots. Threads that ended in between are not counted:
// the process's own figure less the sum is theirs.
std::map<std::string, double> cpu_by_role_between(const std::map<long, ThreadCpu>& before,
                                                  const std::map<long, ThreadCpu>& after);

// The value at fraction p (0..1) of the sorted values; 0 for none.
double percentile(std::vector<double> values, double p);

// The samples of counter family `name` in a Prometheus text exposition whose label set contains
// `filter` (e.g. `controller="mcptunnel"`; empty: all), summed by the values of `labels` joined
// by " " (a label a sample lacks is left out; "subresource" is appended as "/value").
std::map<std::string, double> sums_by_labels(const std::string& exposition, const std::string& name,
                                             const std::vector<std::string>& labels,
                                             const std::string& filter = "");
// after - before, leaving out what did not change.
nlohmann::json difference(const std::map<std::string, double>& before,
                          const std::map<std::string, double>& after);
// Whether a Kubernetes verb (client's or apiserver's spelling) writes.
bool is_write(const std::string& verb);
// The sum of counts keyed "verb ...", of every verb or of the writes only.
double total(const nlohmann::json& counts, bool writes_only);
// The apiserver's own request counters, by "VERB resource[/subresource]" (every client).
std::map<std::string, double> apiserver_requests(kube::Transport& transport);

// The apiserver's own time on requests (apiserver_request_duration_seconds), summed and counted by
// "VERB resource[/subresource]" over every client: two snapshots give the mean of what came
// between them, as the server saw it.
struct ApiserverLatency {
  std::map<std::string, double> seconds;
  std::map<std::string, double> count;
};
ApiserverLatency apiserver_latency(kube::Transport& transport);
// Milliseconds per `key` request between two snapshots; 0 when none came.
double mean_ms_between(const ApiserverLatency& before, const ApiserverLatency& after,
                       const std::string& key);

}  // namespace perimeter::bench
