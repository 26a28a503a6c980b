#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

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

// The value at fraction p (0..1) of the sorted values; 0 for none.
double percentile(std::vector<double> values, double p);

}  // namespace perimeter::bench
