// perimeter-mcp-guard against the real MCP peers from npm (pinned in tests/mcp-peers, installed
// by hack/setup/mcp-peers.sh): @modelcontextprotocol/server-everything in Streamable HTTP mode,
// the official TypeScript SDK client (driver.mjs) and the official conformance suite, each run
// directly against the server and through the guard, and compared. Nothing here skips: missing
// peers or a missing guard binary fail the test.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mcpguard/guard_process.h"
#include "mcpguard/mcp_peers.h"
#include "monitoring/prometheus_server.h"
#include "process/process.h"
#include "proxy/guard_metrics.h"

namespace perimeter {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A scratch directory removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "perimeter-mcp-peers-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using testing::BoundedRun;
using testing::describe_differences;
using testing::find_mcp_peers;
using testing::McpPeers;
using testing::run_bounded;
using testing::run_sdk_driver;

// server-everything in Streamable HTTP mode on a free port of 127.0.0.1 (serve-everything.mjs
// pins it to loopback and reports the port). Terminated with its process group on destruction.
class EverythingServer {
 public:
  explicit EverythingServer(const McpPeers& peers) {
    log_path_ = scratch_.path() + "/server-everything.log";
    process::ProcessSpec spec;
    spec.argv = {peers.node, testing::mcp_peers_scripts_dir() + "/serve-everything.mjs", peers.dir};
    spec.env = {"PORT=0"};
    spec.log_path = log_path_;
    process_ = process::Process::spawn(spec);
    const std::regex listening(R"(everything listening (127\.0\.0\.1:[0-9]+))");
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch match;
      const std::string log = read_file(log_path_);
      if (std::regex_search(log, match, listening)) {
        address_ = match[1];
        return;
      }
      if (!process_->running()) {
        throw std::runtime_error("server-everything exited before listening: " + log);
      }
      std::this_thread::sleep_for(50ms);
    }
    throw std::runtime_error("server-everything did not listen within 30 s: " + log());
  }
  ~EverythingServer() {
    if (process_) process_->terminate(5s);
  }
  EverythingServer(const EverythingServer&) = delete;
  EverythingServer& operator=(const EverythingServer&) = delete;

  std::string address() const { return address_; }
  std::string url() const { return "http://" + address_ + "/mcp"; }
  std::string log() const { return read_file(log_path_); }

 private:
  ScratchDir scratch_;
  std::string log_path_;
  std::string address_;
  std::unique_ptr<process::Process> process_;
};

std::string guard_config(const EverythingServer& server, const std::string& deny_yaml,
                         const std::string& metrics_listen = "") {
  return "metrics_listen: \"" + metrics_listen +
         "\"\n"
         "routes:\n"
         "  - name: everything\n"
         "    listen: 127.0.0.1:0\n"
         "    upstream: http://" +
         server.address() +
         "\n"
         "    allowed_cidrs: [\"127.0.0.0/8\"]\n"
         "    tools:\n"
         "      allow: [\"*\"]\n"
         "      deny: " +
         deny_yaml + "\n";
}

std::string guard_url(const testing::GuardProcess& guard) {
  return guard.route_url("everything") + "/mcp";
}

bool same_id(const json& audit_id, const json& sent_id) {
  if (sent_id.is_null()) return audit_id.is_null();
  return audit_id == sent_id;
}

// Waits (bounded) until every sent request has its audit line; returns the lines.
std::vector<json> settled_audit(const testing::GuardProcess& guard, std::size_t at_least) {
  std::vector<json> lines;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  do {
    lines = guard.audit_lines();
    if (lines.size() >= at_least) {
      // One more beat for the lines written as the exchanges ended.
      std::this_thread::sleep_for(500ms);
      return guard.audit_lines();
    }
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return lines;
}

TEST(McpGuardPeers, TheSdkClientSeesTheSameServerThroughTheGuardAndEveryRequestIsAudited) {
  McpPeers peers;
  ASSERT_NO_FATAL_FAILURE(find_mcp_peers(&peers));
  EverythingServer server(peers);
  ScratchDir scratch;
  const std::string marker =
      "perimeter-argument-marker-" + std::to_string(getpid()) + "-" +
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());

  json direct;
  ASSERT_NO_FATAL_FAILURE(
      run_sdk_driver(peers, server.url(), {"full", marker}, scratch.path(), &direct));
  ASSERT_TRUE(direct["results"]["tools_not_called"].empty())
      << "server-everything offers tools the driver does not call: "
      << direct["results"]["tools_not_called"].dump();

  testing::GuardProcess guard(guard_config(server, "[]"));
  json guarded;
  ASSERT_NO_FATAL_FAILURE(
      run_sdk_driver(peers, guard_url(guard), {"full", marker}, scratch.path(), &guarded));

  // (1) The same results, field by field.
  EXPECT_EQ(guarded["results"], direct["results"])
      << "through the guard differs from direct:"
      << describe_differences(direct["results"], guarded["results"]) << "\nguard log:\n"
      << guard.log().substr(0, 20000);
  EXPECT_EQ(guarded["sent"].size(), direct["sent"].size());

  // (3) Every JSON-RPC request and notification the client sent left exactly one audit line.
  const json& sent = guarded["sent"];
  ASSERT_FALSE(sent.empty());
  const std::vector<json> audit = settled_audit(guard, sent.size());
  std::map<std::pair<std::string, std::string>, int> sent_count;
  for (const json& message : sent) {
    sent_count[{message["method"].get<std::string>(), message["id"].dump()}] += 1;
  }
  for (const auto& [key, count] : sent_count) {
    int seen = 0;
    for (const json& line : audit) {
      if (line.value("direction", "") != "client") continue;
      if (line.value("method", "") != key.first) continue;
      if (!same_id(line.contains("id") ? line["id"] : json(), json::parse(key.second))) continue;
      ++seen;
    }
    EXPECT_EQ(seen, count) << "audit lines for " << key.first << " id " << key.second;
  }
  std::size_t client_lines = 0;
  for (const json& line : audit) {
    EXPECT_EQ(line.value("type", ""), "perimeter.mcp-audit.v1") << line.dump();
    EXPECT_EQ(line.value("level", ""), "metadata") << line.dump();
    EXPECT_EQ(line.value("route", ""), "everything") << line.dump();
    EXPECT_FALSE(line.contains("arguments")) << "metadata level carries arguments: " << line.dump();
    EXPECT_FALSE(line.contains("result")) << "metadata level carries results: " << line.dump();
    // No argument text at the default level.
    EXPECT_EQ(line.dump().find(marker), std::string::npos)
        << "the echo argument leaked: " << line.dump();
    if (line.value("direction", "") == "client") ++client_lines;
    if (line.value("method", "") == "tools/call" && line.value("direction", "") == "client") {
      EXPECT_TRUE(line["name"].is_string()) << "a tools/call line names its tool: " << line.dump();
      EXPECT_EQ(line.value("decision", ""), "allowed") << line.dump();
    }
  }
  EXPECT_EQ(client_lines, sent.size()) << "client audit lines beyond the requests sent";
  // The server's own requests (sampling, elicitation, roots) are audited with direction server.
  for (const std::string method : {"sampling/createMessage", "elicitation/create", "roots/list"}) {
    bool seen = false;
    for (const json& line : audit) {
      seen =
          seen || (line.value("direction", "") == "server" && line.value("method", "") == method);
    }
    EXPECT_TRUE(seen) << "no direction=server audit line for " << method;
  }
  EXPECT_TRUE(guard.running()) << guard.log();
}

// Metrics as a platform team's Prometheus sees them: a real Prometheus scrapes the guard every
// second while the official SDK client runs its full session through it, and its query API must
// report exactly the requests and notifications the client sent, by method and, for tools/call,
// by tool. promtool's linter passes the guard's exposition, and no label Prometheus stored has
// per-request or per-session values.
TEST(McpGuardPeers, APrometheusScrapingTheGuardFindsEveryCallTheClientMade) {
  ASSERT_EQ(testing::missing_prometheus_tools(), "");
  McpPeers peers;
  ASSERT_NO_FATAL_FAILURE(find_mcp_peers(&peers));
  EverythingServer server(peers);
  ScratchDir scratch;
  testing::GuardProcess guard(guard_config(server, "[]", "127.0.0.1:0"));
  ASSERT_NE(guard.metrics_address(), "");
  testing::PrometheusServer prometheus("perimeter-mcp-guard", guard.metrics_address());
  const auto eventually = [](auto done, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return done();
  };
  ASSERT_TRUE(
      eventually([&] { return prometheus.query("up{job=\"perimeter-mcp-guard\"}") == 1.0; }, 30s))
      << "Prometheus did not scrape the guard (up == 1); running: " << prometheus.running() << "\n"
      << prometheus.log();

  json guarded;
  ASSERT_NO_FATAL_FAILURE(run_sdk_driver(peers, guard_url(guard), {"full", "prometheus-marker"},
                                         scratch.path(), &guarded));
  // What the client sent, labelled as the guard labels it: a method outside MCP is "(other)", a
  // tool the server never listed "(unlisted)" (docs/mcp-guard.md, "Metrics"); a series without a
  // tool has no tool label in a query's result.
  std::set<std::string> listed;
  for (const json& tool : guarded["results"]["tools_list"]) listed.insert(tool["name"]);
  ASSERT_FALSE(listed.empty()) << "the driver recorded no tools/list";
  std::map<std::map<std::string, std::string>, double> expected;
  std::size_t tool_calls = 0;
  for (const json& message : guarded["sent"]) {
    std::map<std::string, std::string> labels = {
        {"method", std::string(mcpguard::metric_method(message["method"].get<std::string>()))}};
    if (message["method"] == "tools/call") {
      const std::string tool = message["tool"].get<std::string>();
      labels["tool"] = listed.contains(tool) ? tool : "(unlisted)";
      ++tool_calls;
    }
    expected[labels] += 1;
  }
  ASSERT_GT(tool_calls, 3u) << "the driver's full session calls every tool";
  const std::string by_call =
      "sum by (method, tool) (perimeter_mcp_guard_requests_total{job=\"perimeter-mcp-guard\","
      "route=\"everything\",decision=\"allowed\"})";
  eventually([&] { return prometheus.query_vector(by_call) == expected; }, 20s);
  const auto seen = prometheus.query_vector(by_call);
  ASSERT_TRUE(seen.has_value()) << "Prometheus' query API did not answer " << by_call;
  const auto describe = [](const std::map<std::map<std::string, std::string>, double>& counts) {
    std::string text;
    for (const auto& [labels, count] : counts) {
      text += "  ";
      for (const auto& [name, value] : labels) text += name + "=" + value + " ";
      text += std::to_string(count) + "\n";
    }
    return text;
  };
  EXPECT_EQ(*seen, expected) << "Prometheus has:\n"
                             << describe(*seen) << "the client sent:\n"
                             << describe(expected);
  EXPECT_EQ(prometheus.query("sum(perimeter_mcp_guard_requests_total{decision=\"denied\"}) or "
                             "vector(0)"),
            0.0);
  std::cout << "Prometheus' count of the guard's requests: " << guarded["sent"].size() << " sent, "
            << expected.size() << " (method, tool) series, " << tool_calls << " tool calls\n";

  // promtool's linter on the exposition as scraped.
  const std::string exposition = testing::http_get_body(guard.metrics_address(), "/metrics");
  ASSERT_NE(exposition.find("perimeter_mcp_guard_requests_total"), std::string::npos) << exposition;
  const auto lint = testing::promtool_check_metrics(exposition);
  EXPECT_EQ(lint.exit_code, 0) << "promtool check metrics found problems:\n" << lint.output;
  std::cout << "promtool check metrics: exit " << lint.exit_code << ", "
            << (lint.output.empty() ? "no problems" : lint.output) << "\n";
  const auto stored = prometheus.api("/api/v1/labels?match%5B%5D=" +
                                     testing::percent_encode("{job=\"perimeter-mcp-guard\"}"));
  ASSERT_TRUE(stored.has_value()) << "Prometheus' labels API did not answer";
  const std::set<std::string> unbounded = {
      "id", "request_id", "session", "session_id", "mcp_session_id", "client", "peer", "arguments"};
  for (const auto& label : *stored)
    EXPECT_EQ(unbounded.count(label.get<std::string>()), 0u)
        << "Prometheus stored label " << label << " from the guard";
  EXPECT_EQ(exposition.find("prometheus-marker"), std::string::npos)
      << "an argument's text appears in a metric";
  EXPECT_TRUE(guard.running()) << guard.log();
}

// The audit fields docs/mcp-guard.md promises, on the lines of a full SDK session: a notification
// answered 202 is `no_response`; a request's outcome and error code are those of its response;
// a server-initiated request the client answered has the client's answer as its outcome.
TEST(McpGuardPeers, AuditLinesOfARealSessionCarryTheDocumentedOutcomes) {
  McpPeers peers;
  ASSERT_NO_FATAL_FAILURE(find_mcp_peers(&peers));
  EverythingServer server(peers);
  ScratchDir scratch;
  testing::GuardProcess guard(guard_config(server, "[]"));
  json guarded;
  ASSERT_NO_FATAL_FAILURE(run_sdk_driver(peers, guard_url(guard), {"full", "outcome-marker"},
                                         scratch.path(), &guarded));
  const std::vector<json> audit = settled_audit(guard, guarded["sent"].size());

  std::set<std::string> sessions;
  for (const json& line : audit) {
    SCOPED_TRACE(line.dump());
    const std::string method = line.value("method", "");
    EXPECT_GE(line.value("duration_ms", -1), 0);
    if (line.value("direction", "") == "server") {
      // sampling/createMessage, elicitation/create, roots/list: the driver answers every one.
      EXPECT_EQ(line.value("outcome", ""), "result")
          << "the client's POSTed answer to a server request is its response";
      continue;
    }
    if (method != "initialize" && line["session"].is_string()) sessions.insert(line["session"]);
    if (method.rfind("notifications/", 0) == 0) {
      EXPECT_EQ(line.value("upstream_status", json()), 202);
      EXPECT_EQ(line.value("outcome", ""), "no_response") << "a notification answered 202";
      EXPECT_TRUE(line["rpc_error_code"].is_null());
    } else if (method == "perimeter/no-such-method") {
      EXPECT_EQ(line.value("outcome", ""), "error");
      EXPECT_EQ(line.value("rpc_error_code", json()), -32601);
    } else if (method == "initialize") {
      EXPECT_EQ(line.value("outcome", ""), "result");
      EXPECT_TRUE(line["session"].is_null()) << "no session before initialize's answer";
    } else if (line.value("id", json()) != "after-delete") {
      EXPECT_TRUE(line.value("outcome", "") == "result" || line.value("outcome", "") == "error");
      EXPECT_EQ(line.value("protocol_version", json()), "2025-11-25");
      EXPECT_GT(line.value("bytes_in", 0), 0);
      EXPECT_GT(line.value("bytes_out", 0), 0);
    }
  }
  EXPECT_EQ(sessions.size(), 1u) << "one SDK session, one Mcp-Session-Id in the audit";
}

TEST(McpGuardPeers, ADeniedToolIsHiddenAndRefusedWhileOthersStillWork) {
  McpPeers peers;
  ASSERT_NO_FATAL_FAILURE(find_mcp_peers(&peers));
  EverythingServer server(peers);
  ScratchDir scratch;

  // Directly, get-sum is listed and works: the denial below is the guard's doing.
  json direct;
  ASSERT_NO_FATAL_FAILURE(
      run_sdk_driver(peers, server.url(), {"deny", "get-sum", "echo"}, scratch.path(), &direct));
  const json& plain = direct["results"];
  ASSERT_NE(std::find(plain["tools"].begin(), plain["tools"].end(), "get-sum"),
            plain["tools"].end());
  ASSERT_EQ(plain["denied"]["content"][0]["text"], "The sum of 1 and 2 is 3.") << plain.dump();

  // "get-su?" matches get-sum and no other server-everything tool.
  testing::GuardProcess guard(guard_config(server, "[\"get-su?\"]"));
  json guarded;
  ASSERT_NO_FATAL_FAILURE(run_sdk_driver(peers, guard_url(guard), {"deny", "get-sum", "echo"},
                                         scratch.path(), &guarded));
  const json& results = guarded["results"];

  json expected_tools = json::array();
  for (const json& name : plain["tools"]) {
    if (name != "get-sum") expected_tools.push_back(name);
  }
  EXPECT_EQ(results["tools"], expected_tools) << "tools/list through the guard";

  ASSERT_TRUE(results["denied"].contains("error"))
      << "the denied call succeeded: " << results.dump();
  EXPECT_EQ(results["denied"]["error"]["code"], -32001) << results.dump();
  const std::string message = results["denied"]["error"]["message"].get<std::string>();
  EXPECT_NE(message.find("tool \"get-sum\" is denied by the policy of route \"everything\""),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("deny \"get-su?\""), std::string::npos) << message;
  EXPECT_EQ(results["allowed"], plain["allowed"]) << "the allowed tool through the guard";
  EXPECT_EQ(results["allowed"]["content"][0]["text"], "Echo: still allowed");

  const std::vector<json> audit = settled_audit(guard, guarded["sent"].size());
  int denied_lines = 0;
  for (const json& line : audit) {
    if (line.value("method", "") != "tools/call" || line.value("name", json()) != "get-sum")
      continue;
    ++denied_lines;
    EXPECT_EQ(line.value("decision", ""), "denied") << line.dump();
    EXPECT_EQ(line.value("reason", json()), "policy: deny \"get-su?\"") << line.dump();
    EXPECT_TRUE(line["upstream_status"].is_null()) << "the upstream was asked: " << line.dump();
  }
  EXPECT_EQ(denied_lines, 1) << "audit lines for the denied call";
}

// The conformance suite's spec versions, from its own answer to a version it does not know.
std::vector<std::string> conformance_spec_versions(const McpPeers& peers,
                                                   const std::string& scratch) {
  const BoundedRun run =
      run_bounded({peers.node, peers.conformance, "list", "--server", "--spec-version", "none"}, {},
                  60s, scratch + "/versions.log");
  std::smatch match;
  const std::string text = run.err + run.out;
  std::vector<std::string> versions;
  if (std::regex_search(text, match, std::regex(R"(Valid versions: ([^\n]+))"))) {
    std::stringstream list(match[1].str());
    for (std::string version; std::getline(list, version, ',');) {
      version.erase(0, version.find_first_not_of(' '));
      if (!version.empty()) versions.push_back(version);
    }
  }
  return versions;
}

std::size_t conformance_scenario_count(const McpPeers& peers, const std::string& version,
                                       const std::string& scratch) {
  const BoundedRun run =
      run_bounded({peers.node, peers.conformance, "list", "--server", "--spec-version", version},
                  {}, 60s, scratch + "/list-" + version + ".log");
  std::size_t count = 0;
  std::stringstream lines(run.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  - ", 0) == 0) ++count;
  }
  return count;
}

// scenario/check id -> the statuses (sorted) of every check with that id.
using CheckStatuses = std::map<std::string, std::multiset<std::string>>;
// scenario/check id -> the checks themselves, to show what differs.
using CheckDetails = std::map<std::string, std::string>;

void run_conformance(const McpPeers& peers, const std::string& url, const std::string& version,
                     const std::string& output_dir, CheckStatuses* out, CheckDetails* details) {
  const BoundedRun run = run_bounded({peers.node, peers.conformance, "server", "--url", url,
                                      "--spec-version", version, "-o", output_dir},
                                     {}, 240s, output_dir + ".stderr.log");
  ASSERT_FALSE(run.timed_out) << "conformance " << version << " against " << url << ": "
                              << run.describe();
  // 0: every check passed; 1: some failed (compared below). Anything else is a crash.
  ASSERT_TRUE(run.status && run.status->signal == 0 &&
              (run.status->code == 0 || run.status->code == 1))
      << run.describe() << "\n"
      << run.out.substr(0, 20000);
  const std::regex stamp(R"(-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d+Z$)");
  for (const auto& entry : std::filesystem::directory_iterator(output_dir)) {
    const std::string checks_path = entry.path().string() + "/checks.json";
    if (!std::filesystem::exists(checks_path)) continue;
    const std::string scenario =
        std::regex_replace(entry.path().filename().string(), stamp, std::string());
    const json checks = json::parse(read_file(checks_path), nullptr, false);
    ASSERT_TRUE(checks.is_array()) << checks_path;
    for (const json& check : checks) {
      const std::string id = scenario + "/" + check.value("id", "?");
      (*out)[id].insert(check.value("status", "?"));
      (*details)[id] += check.dump().substr(0, 4000) + "\n";
    }
  }
}

std::string count_statuses(const CheckStatuses& checks) {
  std::map<std::string, int> counts;
  for (const auto& [id, statuses] : checks) {
    for (const auto& status : statuses) counts[status] += 1;
  }
  std::string text;
  for (const auto& [status, count] : counts) text += status + "=" + std::to_string(count) + " ";
  return text;
}

TEST(McpGuardPeers, TheConformanceSuiteGivesTheSameChecksDirectlyAndThroughTheGuard) {
  McpPeers peers;
  ASSERT_NO_FATAL_FAILURE(find_mcp_peers(&peers));
  EverythingServer server(peers);
  testing::GuardProcess guard(guard_config(server, "[]"));
  ScratchDir scratch;

  const std::vector<std::string> versions = conformance_spec_versions(peers, scratch.path());
  ASSERT_FALSE(versions.empty()) << "the conformance suite listed no spec versions";
  std::size_t versions_run = 0;
  for (const std::string& version : versions) {
    SCOPED_TRACE("spec version " + version);
    if (conformance_scenario_count(peers, version, scratch.path()) == 0) {
      std::printf("conformance %s: no server scenarios\n", version.c_str());
      continue;
    }
    ++versions_run;
    CheckStatuses direct;
    CheckStatuses guarded;
    CheckDetails direct_details;
    CheckDetails guarded_details;
    ASSERT_NO_FATAL_FAILURE(run_conformance(peers, server.url(), version,
                                            scratch.path() + "/direct-" + version, &direct,
                                            &direct_details));
    ASSERT_NO_FATAL_FAILURE(run_conformance(peers, guard_url(guard), version,
                                            scratch.path() + "/guard-" + version, &guarded,
                                            &guarded_details));
    ASSERT_FALSE(direct.empty()) << "no checks ran directly";
    std::printf("conformance %s: direct %s| through the guard %s\n", version.c_str(),
                count_statuses(direct).c_str(), count_statuses(guarded).c_str());
    for (const auto& [id, statuses] : direct) {
      const auto found = guarded.find(id);
      if (found == guarded.end()) {
        ADD_FAILURE() << id << " ran directly but not through the guard";
      } else {
        EXPECT_EQ(found->second, statuses) << id << " differs through the guard\ndirect:\n"
                                           << direct_details[id] << "through the guard:\n"
                                           << guarded_details[id] << "guard log:\n"
                                           << guard.log().substr(0, 8000);
      }
    }
    for (const auto& [id, statuses] : guarded) {
      if (!direct.count(id)) ADD_FAILURE() << id << " ran only through the guard";
    }
  }
  EXPECT_GT(versions_run, 0u) << "no spec version had server scenarios";
  EXPECT_TRUE(guard.running()) << guard.log();
}

}  // namespace
}  // namespace perimeter
