#include "bench_support.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace perimeter::bench {

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
  return value != nullptr ? value : fallback;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

namespace {

// utime + stime, in seconds, of a /proc/.../stat text; 0 when it cannot be read.
double cpu_seconds_of_stat(const std::string& stat) {
  const auto command_end = stat.rfind(')');
  if (command_end == std::string::npos) return 0;
  std::istringstream fields(stat.substr(command_end + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stol(field);
  }
  return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

ProcessUsage process_usage(pid_t pid) {
  ProcessUsage usage;
  std::istringstream status(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) usage.hwm_kib = std::stol(line.substr(6));
    if (line.rfind("VmRSS:", 0) == 0) usage.rss_kib = std::stol(line.substr(6));
  }
  usage.cpu_seconds = cpu_seconds_of_stat(read_file("/proc/" + std::to_string(pid) + "/stat"));
  return usage;
}

std::map<long, ThreadCpu> thread_cpu(pid_t pid) {
  std::map<long, ThreadCpu> threads;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
    const std::string tid = task.path().filename().string();
    std::string role = read_file(task.path().string() + "/comm");
    while (!role.empty() && role.back() == '\n') role.pop_back();
    // "poll/3" -> "poll": the threads of one role add up.
    const auto slash = role.rfind('/');
    if (slash != std::string::npos && slash + 1 < role.size() &&
        role.find_first_not_of("0123456789", slash + 1) == std::string::npos) {
      role.resize(slash);
    }
    threads[std::stol(tid)] = {role,
                               cpu_seconds_of_stat(read_file(task.path().string() + "/stat"))};
  }
  return threads;
}

std::map<std::string, double> cpu_by_role_between(const std::map<long, ThreadCpu>& before,
                                                  const std::map<long, ThreadCpu>& after) {
  std::map<std::string, double> by_role;
  for (const auto& [tid, thread] : after) {
    const auto earlier = before.find(tid);
    by_role[thread.role] +=
        thread.cpu_seconds - (earlier == before.end() ? 0.0 : earlier->second.cpu_seconds);
  }
  return by_role;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index =
      std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())));
  return values[index];
}

std::map<std::string, double> sums_by_labels(const std::string& exposition, const std::string& name,
                                             const std::vector<std::string>& labels,
                                             const std::string& filter) {
  std::map<std::string, double> sums;
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    const auto close = line.find('}');
    if (close == std::string::npos) continue;
    const std::string set = "," + line.substr(name.size() + 1, close - name.size() - 1);
    if (!filter.empty() && set.find("," + filter) == std::string::npos) continue;
    std::string key;
    for (const auto& label : labels) {
      const auto at = set.find("," + label + "=\"");
      if (at == std::string::npos) continue;
      const auto start = at + label.size() + 3;
      const std::string value = set.substr(start, set.find('"', start) - start);
      if (label == "subresource") {
        if (!value.empty()) key += "/" + value;
        continue;
      }
      key += (key.empty() ? "" : " ") + value;
    }
    sums[key] += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sums;
}

// after - before, leaving out what did not change.
nlohmann::json difference(const std::map<std::string, double>& before,
                          const std::map<std::string, double>& after) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : after) {
    const auto it = before.find(key);
    const double delta = value - (it == before.end() ? 0 : it->second);
    if (delta > 0) out[key] = delta;
  }
  return out;
}

bool is_write(const std::string& verb) {
  static const std::set<std::string> writes = {
      "create", "update", "patch", "delete",           "apply",           "POST", "PUT",
      "PATCH",  "DELETE", "APPLY", "deletecollection", "DELETECOLLECTION"};
  return writes.count(verb) > 0;
}

double total(const nlohmann::json& counts, bool writes_only) {
  double sum = 0;
  for (const auto& [key, value] : counts.items()) {
    const std::string verb = key.substr(0, key.find(' '));
    if (!writes_only || is_write(verb)) sum += value.get<double>();
  }
  return sum;
}

namespace {

std::string apiserver_metrics(kube::Transport& transport) {
  auto response = transport.send({"GET", "/metrics", {}, "", std::chrono::seconds(10)});
  if (response.status != 200) {
    throw std::runtime_error("GET /metrics answered " + std::to_string(response.status));
  }
  return std::move(response.body);
}

}  // namespace

// The apiserver's own request counters, by "VERB resource[/subresource]" (every client).
std::map<std::string, double> apiserver_requests(kube::Transport& transport) {
  return sums_by_labels(apiserver_metrics(transport), "apiserver_request_total",
                        {"verb", "resource", "subresource"});
}

ApiserverLatency apiserver_latency(kube::Transport& transport) {
  const std::string exposition = apiserver_metrics(transport);
  const std::vector<std::string> by = {"verb", "resource", "subresource"};
  return {sums_by_labels(exposition, "apiserver_request_duration_seconds_sum", by),
          sums_by_labels(exposition, "apiserver_request_duration_seconds_count", by)};
}

double mean_ms_between(const ApiserverLatency& before, const ApiserverLatency& after,
                       const std::string& key) {
  const auto at = [&key](const std::map<std::string, double>& values) {
    const auto found = values.find(key);
    return found == values.end() ? 0.0 : found->second;
  };
  const double count = at(after.count) - at(before.count);
  return count > 0 ? 1000.0 * (at(after.seconds) - at(before.seconds)) / count : 0.0;
}

}  // namespace perimeter::bench
