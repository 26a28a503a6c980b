// perimeter-mcp-guard against nginx, side by side in one run (docs/mcp-guard.md): a fast MCP
// upstream in this process, reached directly, through nginx (a plain reverse proxy) and through
// the guard (a route with a policy, the default audit level) by the same closed-loop client. For
// a `tools/call` answered in JSON and in SSE, at each concurrency: p50, p99, requests/s, the
// latency each proxy adds over direct, each proxy's CPU per request, and the ratios
// guard_overhead_p50 / nginx_overhead_p50 (goal <= 1.1) and guard_rps / nginx_rps (goal >= 0.9).
// Then memory per open stream: K quiet SSE GET streams through each proxy, VmRSS before and with
// them. Targets are measured in a rotating order, in several rounds; medians and the min..max
// spread over rounds are printed. One JSON line per figure, then tables. Never asserts timings.
//
// usage: mcpguard_bench --help
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "load_generator.h"
#include "mcp_upstream.h"
#include "process/process.h"
#include "proxy_processes.h"

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using nlohmann::json;
namespace pb = perimeter::bench;

constexpr double kGoalOverheadRatio = 1.1;
constexpr double kGoalRpsRatio = 0.9;

struct Options {
  std::vector<int> concurrency = {1, 16};
  int requests = 10000;
  int warmup = 1000;
  int rounds = 5;
  int streams = 1000;
  std::vector<std::string> targets = {"direct", "nginx", "guard", "nginx-nolog", "guard-devnull"};
  std::vector<std::string> replies = {"json", "sse"};
  std::string guard;
  std::string nginx = "/usr/sbin/nginx";
  int guard_threads = 1;
  std::string perf;
  int settle_seconds = 0;
  pb::RequestLog request_log = pb::RequestLog::kFile;
};

const char* kUsage = R"(usage: mcpguard_bench [flags]

Drives a fast in-process MCP upstream directly, through nginx and through perimeter-mcp-guard
with one closed-loop client (tools/call, JSON and SSE replies), then opens idle SSE streams
through each proxy to measure memory per stream. Prints JSON lines and tables; never asserts.

  --concurrency LIST   connections in the closed loop, comma-separated (default 1,16)
  --requests N         measured requests per target, reply kind, concurrency and round (10000)
  --warmup N           requests before each measurement, not counted (1000)
  --rounds N           rounds; targets are measured in a rotating order each round (5)
  --streams K          idle SSE GET streams opened through each proxy for memory (1000; 0: skip)
  --replies LIST       of json, sse (default both)
  --targets LIST       of direct, nginx, guard, nginx-nolog, guard-devnull
                       (default: all; nginx logs access and the guard its audit as --request-log
                       says; nginx-nolog has access_log off and guard-devnull audits to /dev/null)
  --request-log KIND   where nginx and guard write their per-request log: file (default, in
                       their directory) or fifo (a FIFO this process drains, as a container
                       runtime drains a pod's stdout)
  --guard PATH         perimeter-mcp-guard (default $PERIMETER_BIN_DIR/perimeter-mcp-guard, else
                       the build's bin/)
  --guard-threads N    the guard's --threads (default 1, as nginx runs one worker)
  --nginx PATH         nginx (default /usr/sbin/nginx)
  --perf FILE          perf record --call-graph dwarf the guard (audit to a file) over its load phases
  --settle S           wait S seconds after the proxies start, before the load (to attach strace
                       or perf by hand; their pids are printed on stderr)
  --quick              a smoke run: 300 requests, 50 warm-up, 1 round, concurrency 1,4, 50 streams
  --help               this text
)";

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

int positive(const std::string& flag, const std::string& value, int minimum) {
  char* end = nullptr;
  const long parsed = std::strtol(value.c_str(), &end, 10);
  if (end == value.c_str() || *end != '\0' || parsed < minimum || parsed > 1000000) {
    throw std::invalid_argument(flag + ": not a number >= " + std::to_string(minimum) + ": " +
                                value);
  }
  return static_cast<int>(parsed);
}

Options parse(int argc, char** argv) {
  Options options;
  const char* bin_dir = std::getenv("PERIMETER_BIN_DIR");  // NOLINT(concurrency-mt-unsafe)
  options.guard = std::string(bin_dir != nullptr ? bin_dir : PERIMETER_DEFAULT_BIN_DIR) +
                  "/perimeter-mcp-guard";
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);  // NOLINT(concurrency-mt-unsafe)
    }
    if (flag == "--quick") {
      options.requests = 300;
      options.warmup = 50;
      options.rounds = 1;
      options.concurrency = {1, 4};
      options.streams = 50;
      continue;
    }
    static const std::vector<std::string> kValued = {
        "--concurrency", "--requests",      "--warmup",     "--rounds", "--streams",
        "--targets",     "--replies",       "--guard",      "--nginx",  "--perf",
        "--settle",      "--guard-threads", "--request-log"};
    if (std::find(kValued.begin(), kValued.end(), flag) == kValued.end()) {
      throw std::invalid_argument("unknown flag " + flag + " (see --help)");
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": needs a value (see --help)");
    const std::string value = argv[++i];
    if (flag == "--concurrency") {
      options.concurrency.clear();
      for (const auto& part : split(value)) options.concurrency.push_back(positive(flag, part, 1));
    } else if (flag == "--requests") {
      options.requests = positive(flag, value, 1);
    } else if (flag == "--warmup") {
      options.warmup = positive(flag, value, 0);
    } else if (flag == "--rounds") {
      options.rounds = positive(flag, value, 1);
    } else if (flag == "--streams") {
      options.streams = positive(flag, value, 0);
    } else if (flag == "--targets") {
      options.targets = split(value);
    } else if (flag == "--request-log") {
      if (value != "file" && value != "fifo") {
        throw std::invalid_argument("--request-log: file or fifo, not " + value);
      }
      options.request_log = value == "fifo" ? pb::RequestLog::kFifo : pb::RequestLog::kFile;
    } else if (flag == "--replies") {
      options.replies = split(value);
    } else if (flag == "--guard") {
      options.guard = value;
    } else if (flag == "--guard-threads") {
      options.guard_threads = positive(flag, value, 1);
    } else if (flag == "--nginx") {
      options.nginx = value;
    } else if (flag == "--settle") {
      options.settle_seconds = positive(flag, value, 0);
    } else if (flag == "--perf") {
      options.perf = value;
    } else {
      throw std::invalid_argument("unknown flag " + flag + " (see --help)");
    }
  }
  for (const auto& target : options.targets) {
    if (target != "direct" && target != "nginx" && target != "guard" && target != "nginx-nolog" &&
        target != "guard-devnull") {
      throw std::invalid_argument("--targets: unknown target " + target);
    }
  }
  for (const auto& reply : options.replies) {
    if (reply != "json" && reply != "sse") {
      throw std::invalid_argument("--replies: unknown reply " + reply);
    }
  }
  if (std::find(options.targets.begin(), options.targets.end(), "direct") ==
      options.targets.end()) {
    options.targets.insert(options.targets.begin(), "direct");  // overheads are over direct
  }
  return options;
}

struct Target {
  std::string name;
  tcp::endpoint endpoint;
  std::unique_ptr<pb::ProxyProcess> proxy;  // null for direct
};

// One (reply, concurrency, target) cell: a value per round.
struct Cell {
  std::vector<double> p50_us, p99_us, rps, cpu_us_per_request;
  long errors = 0;
  long reconnects = 0;
};

// A proxy's latency over the direct connection, round by round (each round measures both).
struct AddedLatency {
  std::vector<double> p50_us, p99_us;
};
AddedLatency added_over(const Cell& cell, const Cell& direct) {
  AddedLatency added;
  for (std::size_t r = 0; r < cell.p50_us.size(); ++r) {
    added.p50_us.push_back(cell.p50_us[r] - direct.p50_us[r]);
    added.p99_us.push_back(cell.p99_us[r] - direct.p99_us[r]);
  }
  return added;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index =
      std::min(values.size() - 1, static_cast<std::size_t>(p * static_cast<double>(values.size())));
  return values[index];
}
double median(const std::vector<double>& values) {
  return percentile(values, 0.5);
}
double lowest(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
double highest(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

// "median [min..max]" when there is more than one round.
std::string spread(const std::vector<double>& values, int precision) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << median(values);
  if (values.size() > 1) {
    out << " [" << lowest(values) << ".." << highest(values) << "]";
  }
  return out.str();
}

json summary(const std::vector<double>& values) {
  return {{"median", median(values)}, {"min", lowest(values)}, {"max", highest(values)}};
}

std::string key(const std::string& reply, int concurrency, const std::string& target) {
  return reply + "/" + std::to_string(concurrency) + "/" + target;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "mcpguard_bench: " << e.what() << "\n";
    return 2;
  }
  // Each idle stream holds two sockets here (client and upstream): lift the soft limit.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  int exit_code = 0;
  try {
    pb::McpUpstream upstream;
    const auto loopback = asio::ip::make_address("127.0.0.1");
    std::vector<Target> targets;
    for (const auto& name : options.targets) {
      Target target{name, {}, nullptr};
      if (name == "nginx" || name == "nginx-nolog") {
        target.proxy = pb::start_nginx(
            options.nginx, upstream.port(),
            name == "nginx" ? options.request_log : pb::RequestLog::kNone, options.streams);
      } else if (name == "guard" || name == "guard-devnull") {
        if (::access(options.guard.c_str(), X_OK) != 0) {
          std::cerr << "mcpguard_bench: " << name << ": no perimeter-mcp-guard at " << options.guard
                    << " (build it, or pass --guard, or leave it out of "
                    << "--targets); measuring without it\n";
          exit_code = 1;
          continue;
        }
        target.proxy = pb::start_guard(
            options.guard, upstream.port(),
            name == "guard" ? options.request_log : pb::RequestLog::kNone, options.guard_threads);
      }
      target.endpoint =
          tcp::endpoint(loopback, target.proxy ? target.proxy->port() : upstream.port());
      targets.push_back(std::move(target));
    }
    auto find = [&](const std::string& name) -> Target* {
      for (auto& target : targets) {
        if (target.name == name) return &target;
      }
      return nullptr;
    };

    if (options.settle_seconds > 0) {
      for (const auto& target : targets) {
        if (target.proxy) std::cerr << target.name << " pid " << target.proxy->pid() << "\n";
      }
      std::this_thread::sleep_for(std::chrono::seconds(options.settle_seconds));
    }
    std::unique_ptr<perimeter::process::Process> perf;
    if (!options.perf.empty() && find("guard") != nullptr) {
      perimeter::process::ProcessSpec spec;
      spec.argv = {
          "perf",  "record", "-F",         "499", "--call-graph",
          "dwarf", "-o",     options.perf, "-p",  std::to_string(find("guard")->proxy->pid())};
      spec.log_path = options.perf + ".log";
      perf = perimeter::process::Process::spawn(spec);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }

    // The load: every round measures every (reply, concurrency, target), targets rotating.
    std::vector<std::pair<std::string, std::string>> replies;
    for (const auto& reply : options.replies) {
      replies.emplace_back(reply, reply == "json" ? "/mcp" : "/mcp/sse");
    }
    std::map<std::string, Cell> cells;
    const auto load_started = std::chrono::steady_clock::now();
    for (int round = 0; round < options.rounds; ++round) {
      for (const auto& [reply, path] : replies) {
        for (int concurrency : options.concurrency) {
          for (std::size_t i = 0; i < targets.size(); ++i) {
            auto& target = targets[(i + static_cast<std::size_t>(round)) % targets.size()];
            const pid_t pid = target.proxy ? target.proxy->pid() : 0;
            double cpu_before = 0, cpu_after = 0;
            pb::LoadPhase phase;
            try {
              pb::LoadGenerator load(target.endpoint, path, concurrency);
              if (options.warmup > 0) load.run(options.warmup);
              cpu_before = pid != 0 ? pb::cpu_seconds(pid) : 0;
              phase = load.run(options.requests);
              cpu_after = pid != 0 ? pb::cpu_seconds(pid) : 0;
            } catch (const std::exception& e) {
              throw std::runtime_error(target.name + ", " + reply + " reply, concurrency " +
                                       std::to_string(concurrency) + ": " + e.what());
            }
            auto& cell = cells[key(reply, concurrency, target.name)];
            cell.p50_us.push_back(percentile(phase.latencies_us, 0.50));
            cell.p99_us.push_back(percentile(phase.latencies_us, 0.99));
            cell.rps.push_back(static_cast<double>(phase.latencies_us.size()) / phase.seconds);
            cell.cpu_us_per_request.push_back((cpu_after - cpu_before) * 1e6 /
                                              static_cast<double>(options.requests));
            cell.errors += phase.errors;
            cell.reconnects += phase.reconnects;
          }
        }
      }
    }
    const double load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_started).count();
    if (perf) {
      perf->signal(SIGINT);
      if (!perf->wait_for(std::chrono::seconds(60))) perf->terminate();
    }

    // Memory per open stream, through each proxy in turn.
    struct Memory {
      std::string target;
      int open = 0, failed = 0;
      long before_kib = 0, with_kib = 0, after_kib = 0;
      int upstream_streams = 0;
    };
    std::vector<Memory> memory;
    if (options.streams > 0) {
      for (auto& target : targets) {
        if (!target.proxy) continue;
        const pid_t pid = target.proxy->pid();
        Memory m{target.name};
        m.before_kib = pb::rss_kib(pid);
        {
          pb::IdleStreams streams(target.endpoint, "/mcp", options.streams);
          std::this_thread::sleep_for(std::chrono::seconds(1));
          m.open = streams.open();
          m.failed = streams.failed();
          m.upstream_streams = upstream.open_streams();
          m.with_kib = pb::rss_kib(pid);
        }
        std::this_thread::sleep_for(std::chrono::seconds(1));
        m.after_kib = pb::rss_kib(pid);
        memory.push_back(m);
      }
    }

    // JSON lines.
    const Target* direct = find("direct");
    for (const auto& [reply, path] : replies) {
      for (int concurrency : options.concurrency) {
        const auto& base = cells[key(reply, concurrency, "direct")];
        for (const auto& target : targets) {
          const auto& cell = cells[key(reply, concurrency, target.name)];
          const auto [added_p50, added_p99] = added_over(cell, base);
          json line = {{"bench", "mcpguard"},
                       {"measure", "tools_call"},
                       {"reply", reply},
                       {"concurrency", concurrency},
                       {"target", target.name},
                       {"rounds", options.rounds},
                       {"requests", options.requests},
                       {"errors", cell.errors},
                       {"reconnects", cell.reconnects},
                       {"p50_us", summary(cell.p50_us)},
                       {"p99_us", summary(cell.p99_us)},
                       {"requests_per_second", summary(cell.rps)}};
          if (target.proxy) {
            line["added_p50_us"] = summary(added_p50);
            line["added_p99_us"] = summary(added_p99);
            line["cpu_us_per_request"] = summary(cell.cpu_us_per_request);
          }
          std::cout << line.dump() << "\n";
        }
      }
    }
    struct Pair {
      std::string guard, nginx;
    };
    const std::vector<Pair> pairs = {{"guard", "nginx"}, {"guard-devnull", "nginx-nolog"}};
    struct Ratios {
      std::vector<double> overhead_p50, overhead_p99, rps, cpu;
    };
    std::map<std::string, Ratios> ratios;  // by key(reply, concurrency, pair)
    for (const auto& pair : pairs) {
      if (find(pair.guard) == nullptr || find(pair.nginx) == nullptr || direct == nullptr) continue;
      for (const auto& [reply, path] : replies) {
        for (int concurrency : options.concurrency) {
          const auto& base = cells[key(reply, concurrency, "direct")];
          const auto& guard = cells[key(reply, concurrency, pair.guard)];
          const auto& nginx = cells[key(reply, concurrency, pair.nginx)];
          auto& r = ratios[key(reply, concurrency, pair.guard + "/" + pair.nginx)];
          for (std::size_t i = 0; i < base.p50_us.size(); ++i) {
            r.overhead_p50.push_back((guard.p50_us[i] - base.p50_us[i]) /
                                     (nginx.p50_us[i] - base.p50_us[i]));
            r.overhead_p99.push_back((guard.p99_us[i] - base.p99_us[i]) /
                                     (nginx.p99_us[i] - base.p99_us[i]));
            r.rps.push_back(guard.rps[i] / nginx.rps[i]);
            r.cpu.push_back(guard.cpu_us_per_request[i] / nginx.cpu_us_per_request[i]);
          }
          std::cout << json({{"bench", "mcpguard"},
                             {"measure", "ratios"},
                             {"reply", reply},
                             {"concurrency", concurrency},
                             {"guard", pair.guard},
                             {"nginx", pair.nginx},
                             {"overhead_p50_ratio", summary(r.overhead_p50)},
                             {"overhead_p99_ratio", summary(r.overhead_p99)},
                             {"rps_ratio", summary(r.rps)},
                             {"cpu_per_request_ratio", summary(r.cpu)},
                             {"goal_overhead_p50_ratio_at_most", kGoalOverheadRatio},
                             {"goal_rps_ratio_at_least", kGoalRpsRatio}})
                           .dump()
                    << "\n";
        }
      }
    }
    for (const auto& m : memory) {
      const double per_stream =
          m.open > 0 ? static_cast<double>(m.with_kib - m.before_kib) * 1024.0 / m.open : 0;
      std::cout << json({{"bench", "mcpguard"},
                         {"measure", "memory_per_stream"},
                         {"target", m.target},
                         {"streams", options.streams},
                         {"open", m.open},
                         {"failed", m.failed},
                         {"upstream_open_streams", m.upstream_streams},
                         {"rss_before_kib", m.before_kib},
                         {"rss_with_streams_kib", m.with_kib},
                         {"rss_after_close_kib", m.after_kib},
                         {"bytes_per_stream", per_stream}})
                       .dump()
                << "\n";
    }
    std::cout << std::flush;

    // Tables.
    std::cout << "\nperimeter-mcp-guard vs nginx, " << std::thread::hardware_concurrency()
              << " cores (shared), " << options.rounds << " round(s) of " << options.requests
              << " requests after " << options.warmup << " warm-up, per cell; load phases "
              << std::fixed << std::setprecision(1) << load_seconds
              << " s. Median [min..max] over rounds; added = target - direct in the same round.\n"
              << "guard: --threads " << options.guard_threads
              << "; nginx: one process. nginx logs access, the guard its audit, to "
              << (options.request_log == pb::RequestLog::kFifo ? "a FIFO this process drains"
                                                               : "a file")
              << "; nginx-nolog: access_log off; guard-devnull: audit to /dev/null.\n\n";
    std::cout << "| reply | C | target | p50 us | p99 us | req/s | added p50 us | added p99 us "
                 "| proxy CPU us/req | errors |\n"
              << "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (const auto& [reply, path] : replies) {
      for (int concurrency : options.concurrency) {
        const auto& base = cells[key(reply, concurrency, "direct")];
        for (const auto& target : targets) {
          const auto& cell = cells[key(reply, concurrency, target.name)];
          const auto [added_p50, added_p99] = added_over(cell, base);
          std::cout << "| " << reply << " | " << concurrency << " | " << target.name << " | "
                    << spread(cell.p50_us, 0) << " | " << spread(cell.p99_us, 0) << " | "
                    << spread(cell.rps, 0) << " | " << (target.proxy ? spread(added_p50, 0) : "")
                    << " | " << (target.proxy ? spread(added_p99, 0) : "") << " | "
                    << (target.proxy ? spread(cell.cpu_us_per_request, 1) : "") << " | "
                    << cell.errors << " |\n";
          if (cell.errors > 0) exit_code = 1;
        }
      }
    }
    if (!ratios.empty()) {
      std::cout << "\n| reply | C | pair | overhead p50 ratio (goal <= " << kGoalOverheadRatio
                << ") | overhead p99 ratio | req/s ratio (goal >= " << kGoalRpsRatio
                << ") | CPU/req ratio |\n| --- | --- | --- | --- | --- | --- | --- |\n";
      for (const auto& pair : pairs) {
        for (const auto& [reply, path] : replies) {
          for (int concurrency : options.concurrency) {
            const auto found = ratios.find(key(reply, concurrency, pair.guard + "/" + pair.nginx));
            if (found == ratios.end()) continue;
            const auto& r = found->second;
            std::cout << "| " << reply << " | " << concurrency << " | " << pair.guard << " / "
                      << pair.nginx << " | " << spread(r.overhead_p50, 2) << " | "
                      << spread(r.overhead_p99, 2) << " | " << spread(r.rps, 2) << " | "
                      << spread(r.cpu, 2) << " |\n";
          }
        }
      }
    }
    if (!memory.empty()) {
      std::cout << "\n| " << options.streams
                << " idle SSE GET streams | open | RSS before | RSS with streams | per stream | "
                   "RSS after close |\n| --- | --- | --- | --- | --- | --- |\n";
      for (const auto& m : memory) {
        const double per_stream =
            m.open > 0 ? static_cast<double>(m.with_kib - m.before_kib) * 1024.0 / m.open : 0;
        std::cout << "| " << m.target << " | " << m.open << " | " << m.before_kib << " KiB | "
                  << m.with_kib << " KiB | " << std::setprecision(0) << per_stream << " B | "
                  << m.after_kib << " KiB |\n";
        if (m.open != options.streams) exit_code = 1;
      }
    }
    std::cout << "\nConfigurations (ports picked at start) and the lines of each per-request "
                 "log:\n";
    for (const auto& target : targets) {
      if (!target.proxy) continue;
      const long lines = target.proxy->request_log_lines();
      std::cout << "--- " << target.name << " ("
                << (lines < 0 ? std::string("no request log")
                              : std::to_string(lines) + " request log lines")
                << ") ---\n"
                << target.proxy->config();
    }
    if (perf) std::cout << "\nperf data of the guard's load phases: " << options.perf << "\n";
  } catch (const std::exception& e) {
    std::cerr << "mcpguard_bench: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}
