#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "process/process.h"

// The real MCP peers from npm (tests/mcp-peers, installed by hack/setup/mcp-peers.sh) as the
// guard's tests drive them: the install, a bounded child run, and the official SDK client
// (tests/integration/mcpguard/peers/driver.mjs). Shared by the peers test (processes on this
// machine) and the real-node test (the guard and server-everything in pods).
namespace perimeter::testing {

// The install of tests/mcp-peers: node and the packages.
struct McpPeers {
  std::string dir;
  std::string node;
  std::string conformance;
};

// Finds the install (hack/setup/mcp-peers.sh --check). A missing install fails the calling test,
// never skips it, telling the user to run `make setup`.
void find_mcp_peers(McpPeers* out);

// PERIMETER_SOURCE_DIR/tests/integration/mcpguard/peers: driver.mjs and serve-everything.mjs.
std::string mcp_peers_scripts_dir();

// A child run to completion within a limit: its stdout (captured), its stderr (in a file), and
// how it ended.
struct BoundedRun {
  std::string out;
  std::string err;
  std::optional<process::ExitStatus> status;
  bool timed_out = false;
  std::string describe() const;
};

// Runs `argv` with `env` added; a child over `limit` is terminated with its process group.
BoundedRun run_bounded(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                       std::chrono::milliseconds limit, const std::string& stderr_path);

// Runs driver.mjs (the SDK client) against `url` with `args` (`full MARKER`, or `deny DENIED
// ALLOWED`) and parses its one JSON document into `out`; fails the calling test otherwise.
// `wrapper` is put before the node command line (nsenter, to run the client in a pod's network
// namespace); `scratch` holds the driver's stderr.
void run_sdk_driver(const McpPeers& peers, const std::string& url,
                    const std::vector<std::string>& args, const std::string& scratch,
                    nlohmann::json* out, const std::vector<std::string>& wrapper = {});

// Names every top-level (recursively, for objects) result that differs, with both values.
std::string describe_differences(const nlohmann::json& direct, const nlohmann::json& guarded);

}  // namespace perimeter::testing
