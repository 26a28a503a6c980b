// Benchmark: Perimeter's runner tools against the official SDK's agent toolset, in one run, on the
// same generated workspace. For each operation: the median time inside each implementation (the
// SDK's measured inside Node, without the pipe), the ratio, and whether the outputs are equal.
//
//   runner_tools_bench [--files N] [--runs N] [--bash-runs N] [--perimeter-only 1]
//
// Needs `make setup` (hack/setup/runner-differential.sh) for the SDK side.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "node_driver.h"
#include "tools/agent_toolset.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using perimeter::tools::AgentToolset;
using perimeter::tools::AgentToolsetOptions;

struct Options {
  int files = 50'000;
  int runs = 3;
  int bash_runs = 50;
  // Skips the SDK side: quick figures while working on the tools, no comparison.
  bool perimeter_only = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A source-tree-like workspace: 250 directories of .txt/.c files, a few lines each; one line in
// 500 files holds the grep needle, so the output stays under the SDK's cap.
void generate_workspace(const fs::path& root, int files) {
  const int per_dir = 200;
  for (int i = 0; i < files; ++i) {
    const fs::path dir =
        root / ("pkg" + std::to_string(i / per_dir / 10)) / ("dir" + std::to_string(i / per_dir));
    if (i % per_dir == 0) fs::create_directories(dir);
    std::ofstream out(dir / ("file" + std::to_string(i) + (i % 4 == 0 ? ".c" : ".txt")));
    out << "// generated file " << i << "\n"
        << "int value_" << i << " = " << i * 7 << ";\n"
        << "const char* name = \"item-" << i << "\";\n";
    if (i % 100 == 0) out << "// needle: look here " << i << "\n";
    out << "return value_" << i << ";\n";
  }
}

long peak_rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

struct Operation {
  std::string name;
  std::string tool;
  json input;
  int runs;
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const char* usage =
      "usage: runner_tools_bench [--files N] [--runs N] [--bash-runs N] [--perimeter-only 0|1]\n";
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::cerr << (flag == "--help" ? "" : "missing value after " + flag + "\n") << usage;
      return flag == "--help" ? 0 : 2;
    }
    const int value = std::atoi(argv[i + 1]);
    if (flag == "--files") {
      options.files = value;
    } else if (flag == "--runs") {
      options.runs = value;
    } else if (flag == "--bash-runs") {
      options.bash_runs = value;
    } else if (flag == "--perimeter-only") {
      options.perimeter_only = value != 0;
    } else {
      std::cerr << "unknown flag " << flag << "\n" << usage;
      return 2;
    }
  }
  const char* env_source = std::getenv("PERIMETER_SOURCE_DIR");  // NOLINT(concurrency-mt-unsafe)
  const std::string source_dir = env_source ? env_source : PERIMETER_DEFAULT_SOURCE_DIR;

  std::unique_ptr<perimeter::testing::NodeDriver> sdk;
  if (!options.perimeter_only) {
    try {
      sdk = std::make_unique<perimeter::testing::NodeDriver>(
          source_dir, perimeter::testing::NodeDriver::find_install(source_dir));
    } catch (const std::exception& e) {
      std::cerr << "runner_tools_bench: " << e.what() << "\n";
      return 1;
    }
  }

  char tmpl[] = "/tmp/perimeter-tools-bench-XXXXXX";
  const fs::path root = fs::canonical(::mkdtemp(tmpl));
  const fs::path ws = root / "ws";
  const auto gen_start = std::chrono::steady_clock::now();
  generate_workspace(ws, options.files);
  const double gen_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - gen_start)
          .count();
  std::cerr << "generated " << options.files << " files in " << static_cast<long>(gen_ms)
            << " ms under " << ws << "\n";

  perimeter::SystemClock clock;
  AgentToolsetOptions toolset_options;
  toolset_options.workdir = ws.string();
  AgentToolset ours(
      toolset_options, clock,
      perimeter::Logger("bench", perimeter::StderrSink::instance(), perimeter::LogLevel::kWarn));

  const std::vector<Operation> operations = {
      {"grep_50k_files", "grep", {{"pattern", "needle: look"}}, options.runs},
      {"grep_50k_files_regex", "grep", {{"pattern", "value_[0-9]+7 = "}}, options.runs},
      {"glob_50k_files_all", "glob", {{"pattern", "**/*.txt"}}, options.runs},
      {"glob_50k_files_narrow", "glob", {{"pattern", "**/dir42/*.c"}}, options.runs},
      {"bash_round_trip", "bash", {{"command", "echo hi"}}, options.bash_runs},
  };

  struct Row {
    std::string name;
    double sdk_ms;
    double ours_ms;
    bool same;
  };
  std::vector<Row> rows;
  for (const auto& op : operations) {
    std::vector<double> sdk_ms;
    std::vector<double> ours_ms;
    bool same = true;
    // One untimed warm-up each: the first bash call starts the shell, the first walk warms caches.
    if (sdk) sdk->timed_call(ws.string(), op.tool, op.input);
    ours.execute(op.tool, op.input);
    for (int r = 0; r < op.runs; ++r) {
      json sdk_result;
      if (sdk) {
        sdk_result = sdk->timed_call(ws.string(), op.tool, op.input);
        sdk_ms.push_back(sdk_result["elapsed_ms"].get<double>());
        sdk_result.erase("elapsed_ms");
      }
      const auto start = std::chrono::steady_clock::now();
      const json our_result = ours.execute(op.tool, op.input).to_json();
      ours_ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
      same = same && (!sdk || sdk_result == our_result);
    }
    Row row{op.name, sdk ? median(sdk_ms) : 0.0, median(ours_ms), same};
    rows.push_back(row);
    // Without the SDK side there is nothing to compare: its figures are null, not zero.
    const json not_measured = nullptr;
    std::cout << json{{"bench", "runner_tools"},
                      {"operation", row.name},
                      {"files", options.files},
                      {"runs", op.runs},
                      {"sdk_median_ms", sdk ? json(row.sdk_ms) : not_measured},
                      {"perimeter_median_ms", row.ours_ms},
                      {"speedup", sdk ? json(row.sdk_ms / row.ours_ms) : not_measured},
                      {"same_output", sdk ? json(row.same) : not_measured}}
                     .dump()
              << std::endl;
  }
  const long sdk_rss = sdk ? peak_rss_kib(sdk->pid()) : -1;
  const long our_rss = peak_rss_kib(::getpid());
  const bool rss_compared = sdk_rss > 0 && our_rss > 0;
  const double rss_ratio =
      rss_compared ? static_cast<double>(sdk_rss) / static_cast<double>(our_rss) : 0.0;
  std::cout << json{{"bench", "runner_tools"},
                    {"operation", "peak_rss"},
                    {"sdk_node_kib", sdk_rss > 0 ? json(sdk_rss) : json(nullptr)},
                    {"perimeter_kib", our_rss},
                    {"ratio", rss_compared ? json(rss_ratio) : json(nullptr)}}
                   .dump()
            << std::endl;

  std::cout << "\nrunner tools vs official SDK 1.12.0 (" << options.files << " files, medians)\n";
  std::printf("%-24s %12s %14s %9s %6s\n", "operation", "sdk ms", "perimeter ms", "speedup",
              "same");
  for (const auto& row : rows) {
    if (sdk) {
      std::printf("%-24s %12.2f %14.2f %8.1fx %6s\n", row.name.c_str(), row.sdk_ms, row.ours_ms,
                  row.sdk_ms / row.ours_ms, row.same ? "yes" : "NO");
    } else {
      std::printf("%-24s %12s %14.2f %9s %6s\n", row.name.c_str(), "-", row.ours_ms, "-", "-");
    }
  }
  if (rss_compared) {
    std::printf("%-24s %12ld %14ld %8.1fx\n", "peak RSS KiB (process)", sdk_rss, our_rss,
                rss_ratio);
  } else {
    std::printf("%-24s %12s %14ld %9s\n", "peak RSS KiB (process)", "-", our_rss, "-");
  }
  std::printf(
      "(the peak RSS of this benchmark process includes its own 50,000-path bookkeeping)\n");

  ours.close();
  sdk.reset();
  std::error_code ignored;
  fs::remove_all(root, ignored);
  bool all_same = true;
  for (const auto& row : rows) all_same = all_same && row.same;
  return all_same ? 0 : 3;
}
