// perimeter-mcp-guard under faults: the binary (GuardProcess) between a test client and a fake
// MCP upstream, both in this process (docs/mcp-guard.md states what is checked here).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "fake_upstream.h"
#include "mcpguard/guard_process.h"
#include "pki/pki.h"

namespace perimeter::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

using Headers = std::vector<std::pair<std::string, std::string>>;

// ---- the test's HTTP client: Beast, synchronous, with a receive timeout so nothing hangs ----

struct Reply {
  unsigned status = 0;
  http::fields headers;
  std::string body;
  std::string header(const std::string& name) const {
    const auto found = headers.find(name);
    return found == headers.end() ? "" : std::string(found->value());
  }
};

class Client {
 public:
  explicit Client(const std::string& url, std::chrono::seconds receive_timeout = 10s)
      : socket_(io_) {
    const auto colon = url.rfind(':');
    const std::string host = url.substr(7, colon - 7);
    socket_.connect(tcp::endpoint(asio::ip::make_address(host),
                                  static_cast<unsigned short>(std::stoi(url.substr(colon + 1)))));
    timeval timeout{static_cast<time_t>(receive_timeout.count()), 0};
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    socket_.set_option(tcp::no_delay(true));
  }

  void send(http::verb verb, const std::string& target, const std::string& body,
            const Headers& headers = {}) {
    http::request<http::string_body> request{verb, target, 11};
    request.set(http::field::host, "guard.test");
    request.set(http::field::accept, "application/json, text/event-stream");
    if (verb == http::verb::post) request.set(http::field::content_type, "application/json");
    for (const auto& [name, value] : headers) request.set(name, value);
    request.body() = body;
    request.prepare_payload();
    http::write(socket_, request);
  }

  Reply read_head() {
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read_header(socket_, buffer_, *parser_);
    Reply reply;
    reply.status = parser_->get().result_int();
    reply.headers = parser_->get().base();
    return reply;
  }

  // The next decoded body bytes; "" once the reply is complete. Throws on a read error.
  std::string read_some() {
    for (;;) {
      if (parser_->is_done()) return "";
      parser_->get().body().data = chunk_;
      parser_->get().body().size = sizeof chunk_;
      beast::error_code error;
      http::read_some(socket_, buffer_, *parser_, error);
      if (error == http::error::need_buffer) error = {};
      if (error) throw beast::system_error(error);
      const std::size_t received = sizeof chunk_ - parser_->get().body().size;
      if (received > 0) return std::string(chunk_, received);
    }
  }

  Reply request(http::verb verb, const std::string& target, const std::string& body,
                const Headers& headers = {}) {
    send(verb, target, body, headers);
    Reply reply = read_head();
    for (std::string bytes; !(bytes = read_some()).empty();) reply.body += bytes;
    return reply;
  }

  Reply post(const std::string& body, const Headers& headers = {}) {
    return request(http::verb::post, "/mcp", body, headers);
  }

  void stop_reading_and_shrink_buffer() {
    const int small = 4096;
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  char chunk_[64 * 1024];
};

// ---- a plausible MCP server ----

const json kTools = {
    {{"name", "create_ticket"}, {"inputSchema", {{"type", "object"}}}},
    {{"name", "delete_user"}, {"inputSchema", {{"type", "object"}}}},
    {{"name", "get_ticket"}, {"inputSchema", {{"type", "object"}}}},
};

std::string result_for(const json& request) {
  const std::string method = request.value("method", "");
  json result = json::object();
  if (method == "tools/list") result = {{"tools", kTools}};
  if (method == "tools/call") {
    result = {
        {"content",
         {{{"type", "text"}, {"text", "RESULT-TEXT-for-" + request["params"].value("name", "")}}}}};
  }
  return json{{"jsonrpc", "2.0"}, {"id", request["id"]}, {"result", result}}.dump();
}

// JSON replies for requests (and batches), 202 for notifications and responses.
void answer_json(UpstreamExchange& exchange) {
  const auto request = json::parse(exchange.request.body(), nullptr, false);
  if (request.is_array()) {
    json replies = json::array();
    for (const auto& member : request) replies.push_back(json::parse(result_for(member)));
    exchange.write(http_reply(200, "OK", {{"Content-Type", "application/json"}}, replies.dump()));
    return;
  }
  if (!request.is_object() || !request.contains("id") || !request.contains("method")) {
    exchange.write(http_reply(202, "Accepted", {}, ""));
    return;
  }
  exchange.write(
      http_reply(200, "OK", {{"Content-Type", "application/json"}}, result_for(request)));
}

std::string sse_event(const std::string& data) {
  return "event: message\ndata: " + data + "\n\n";
}

// ---- the guard ----

std::string guard_config(const std::string& upstream, const std::string& route_extra = "",
                         const std::string& top = "") {
  return "metrics_listen: 127.0.0.1:0\n" + top +
         "routes:\n"
         "  - name: tickets\n"
         "    listen: 127.0.0.1:0\n"
         "    upstream: " +
         upstream +
         "\n"
         "    allowed_cidrs: [\"127.0.0.0/8\"]\n"
         "    tools:\n"
         "      deny: [\"delete_*\"]\n" +
         route_extra;
}

std::string call(int id, const std::string& tool, const json& arguments = json::object()) {
  return json{{"jsonrpc", "2.0"},
              {"id", id},
              {"method", "tools/call"},
              {"params", {{"name", tool}, {"arguments", arguments}}}}
      .dump();
}

std::string list_tools(int id) {
  return json{{"jsonrpc", "2.0"}, {"id", id}, {"method", "tools/list"}}.dump();
}

std::vector<std::string> tool_names(const json& response) {
  std::vector<std::string> names;
  for (const auto& tool : response["result"]["tools"]) names.push_back(tool["name"]);
  return names;
}

// Polls `condition` for up to `limit`.
template <typename Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

std::string http_get(const std::string& address, const std::string& target) {
  return Client("http://" + address).request(http::verb::get, target, "").body;
}

long rss_kb(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// A one-shot signal between the test and an upstream handler thread, bounded in time.
class Gate {
 public:
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = 10000ms) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
};

// ---- pass-through ----

TEST(McpGuardFaults, JsonRepliesAndHeadersPassByteForByte) {
  const std::string body = "{\"jsonrpc\": \"2.0\", \"id\": 1,  \"result\": {\"x\": [1, 2]}}";
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    const auto target = std::string(exchange.request.target());
    if (exchange.request.method() == http::verb::get) {
      exchange.write(http_reply(405, "Method Not Allowed", {{"Allow", "POST"}}, ""));
    } else if (exchange.request.method() == http::verb::delete_) {
      exchange.write(http_reply(404, "Not Found", {{"Content-Type", "text/plain"}}, "gone"));
    } else if (target == "/unauthorized") {
      exchange.write(http_reply(401, "Unauthorized",
                                {{"WWW-Authenticate",
                                  "Bearer resource_metadata=\"https://x/.well-"
                                  "known/oauth-protected-resource\""}},
                                ""));
    } else if (exchange.request.body().find("\"id\"") == std::string::npos) {
      exchange.write(http_reply(202, "Accepted", {}, ""));
    } else {
      exchange.write(http_reply(200, "OK",
                                {{"Content-Type", "application/json"},
                                 {"Mcp-Session-Id", "session-42"},
                                 {"MCP-Protocol-Version", "2025-11-25"},
                                 {"X-Custom", "kept"}},
                                body));
    }
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));

  const std::string request =
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_ticket"}})";
  const auto reply = client.post(request, {{"Mcp-Session-Id", "session-42"},
                                           {"MCP-Protocol-Version", "2025-11-25"},
                                           {"Mcp-Method", "tools/call"},
                                           {"Mcp-Name", "get_ticket"},
                                           {"Mcp-Param-Region", "eu"},
                                           {"Authorization", "Bearer abc.def"},
                                           {"Connection", "keep-alive, X-Hop"},
                                           {"X-Hop", "hop-by-hop"}});
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body, body);
  EXPECT_EQ(reply.header("Mcp-Session-Id"), "session-42");
  EXPECT_EQ(reply.header("MCP-Protocol-Version"), "2025-11-25");
  EXPECT_EQ(reply.header("X-Custom"), "kept");

  const auto seen = upstream.received().at(0);
  EXPECT_EQ(seen.body(), request);
  EXPECT_EQ(seen["Mcp-Session-Id"], "session-42");
  EXPECT_EQ(seen["MCP-Protocol-Version"], "2025-11-25");
  EXPECT_EQ(seen["Mcp-Method"], "tools/call");
  EXPECT_EQ(seen["Mcp-Name"], "get_ticket");
  EXPECT_EQ(seen["Mcp-Param-Region"], "eu");
  EXPECT_EQ(seen["Authorization"], "Bearer abc.def");
  EXPECT_EQ(seen.count("X-Hop"), 0u);
  EXPECT_EQ(seen[http::field::host], "127.0.0.1:" + std::to_string(upstream.port()));
  EXPECT_EQ(seen["X-Forwarded-Host"], "guard.test");

  const auto unauthorized = client.request(http::verb::post, "/unauthorized", request);
  EXPECT_EQ(unauthorized.status, 401u);
  EXPECT_THAT(unauthorized.header("WWW-Authenticate"), HasSubstr("resource_metadata="));
  const auto notification =
      client.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})");
  EXPECT_EQ(notification.status, 202u);
  EXPECT_EQ(client.request(http::verb::get, "/mcp", "").status, 405u);
  const auto deleted = client.request(http::verb::delete_, "/mcp", "");
  EXPECT_EQ(deleted.status, 404u);
  EXPECT_EQ(deleted.body, "gone");
  // One connection from the guard for the whole keep-alive client connection.
  EXPECT_EQ(upstream.connections(), 1);
}

TEST(McpGuardFaults, SseRepliesPassByteForByteAndEventByEvent) {
  Gate first_seen;
  const std::string first =
      ": keep-alive\n\nid: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\","
      "\"method\":\"notifications/progress\",\"params\":{}}\n\n";
  const std::string second =
      "id: 2\r\ndata: {\"jsonrpc\": \"2.0\", \"id\": 3, \"result\": {}}\r\n\r\n";
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    exchange.write(chunked_head(200, "text/event-stream", {{"Mcp-Session-Id", "s-7"}}));
    exchange.write(chunk(first.substr(0, 20)));
    exchange.write(chunk(first.substr(20)));
    // The next event only once the client has seen the first: buffering would deadlock here.
    if (!first_seen.wait()) return;
    exchange.write(chunk(second));
    exchange.write("0\r\n\r\n");
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  client.send(http::verb::post, "/mcp", call(3, "get_ticket"));
  const auto head = client.read_head();
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.header("Mcp-Session-Id"), "s-7");
  std::string received;
  while (received.size() < first.size()) received += client.read_some();
  EXPECT_EQ(received, first);
  first_seen.open();
  for (std::string bytes; !(bytes = client.read_some()).empty();) received += bytes;
  EXPECT_EQ(received, first + second);
  // The connection stays usable after a stream: the next exchange on it streams again.
  const auto again = client.post(call(4, "get_ticket"));
  EXPECT_EQ(again.status, 200u);
  EXPECT_EQ(again.body, first + second);

  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 2; }));
  const auto line = guard.audit_lines().at(0);
  EXPECT_EQ(line["outcome"], "result");
  EXPECT_EQ(line["id"], 3);
  EXPECT_EQ(line["upstream_status"], 200);
}

// ---- policy ----

TEST(McpGuardFaults, DeniedCallNeverReachesTheUpstream) {
  FakeUpstream upstream(answer_json);
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  const auto reply = client.post(call(9, "delete_user", {{"user", "SECRET-ARG"}}));
  EXPECT_EQ(reply.status, 200u);
  const auto error = json::parse(reply.body);
  EXPECT_EQ(error["id"], 9);
  EXPECT_EQ(error["error"]["code"], -32001);
  EXPECT_EQ(
      error["error"]["message"],
      "tool \"delete_user\" is denied by the policy of route \"tickets\" (deny \"delete_*\")");
  // A batch with one denied call is refused whole.
  const auto batch = client.post("[" + call(10, "get_ticket") + "," + call(11, "delete_x") + "]");
  const auto errors = json::parse(batch.body);
  ASSERT_TRUE(errors.is_array());
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0]["error"]["code"], -32001);
  EXPECT_EQ(errors[1]["error"]["code"], -32001);
  EXPECT_EQ(upstream.requests(), 0);
  EXPECT_EQ(upstream.connections(), 0);

  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 3; }));
  const auto lines = guard.audit_lines();
  EXPECT_EQ(lines[0]["decision"], "denied");
  EXPECT_EQ(lines[0]["reason"], "policy: deny \"delete_*\"");
  EXPECT_EQ(lines[0]["name"], "delete_user");
  EXPECT_TRUE(lines[0]["upstream_status"].is_null());
  EXPECT_EQ(lines[0]["rpc_error_code"], -32001);
}

TEST(McpGuardFaults, DeniedToolsAreRemovedFromToolsListInJsonAndSse) {
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    const auto request = json::parse(exchange.request.body());
    if (std::string(exchange.request.target()) == "/sse") {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(sse_event(
          json{{"jsonrpc", "2.0"}, {"method", "notifications/message"}, {"params", {}}}.dump())));
      exchange.write(chunk("id: e1\n" + sse_event(result_for(request))));
      exchange.write("0\r\n\r\n");
    } else {
      answer_json(exchange);
    }
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  const auto json_reply = client.post(list_tools(1));
  EXPECT_EQ(json_reply.status, 200u);
  EXPECT_EQ(std::stoul(json_reply.header("Content-Length")), json_reply.body.size());
  EXPECT_EQ(tool_names(json::parse(json_reply.body)),
            (std::vector<std::string>{"create_ticket", "get_ticket"}));

  const auto sse_reply = client.request(http::verb::post, "/sse", list_tools(2));
  EXPECT_EQ(sse_reply.status, 200u);
  // The notification passes as it came; the tools/list event is rewritten, its id kept.
  EXPECT_THAT(sse_reply.body, HasSubstr("notifications/message"));
  EXPECT_THAT(sse_reply.body, HasSubstr("id: e1\n"));
  EXPECT_THAT(sse_reply.body, HasSubstr("get_ticket"));
  EXPECT_THAT(sse_reply.body, Not(HasSubstr("delete_user")));
}

// ---- refusals ----

TEST(McpGuardFaults, UnreadableOversizeMismatchedAndRateLimitedRequestsAreRefused) {
  FakeUpstream upstream(answer_json);
  GuardProcess guard(guard_config(
      upstream.url(), "    rate_limit:\n      requests_per_second: 0.5\n      burst: 3\n",
      "limits:\n  max_request_body_bytes: 1024\n"));
  {
    Client client(guard.route_url("tickets"));
    const auto duplicated = client.post(
        R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_ticket","name":"delete_user"}})");
    EXPECT_EQ(duplicated.status, 400u);
    EXPECT_EQ(json::parse(duplicated.body)["error"]["code"], -32600);
    const auto not_json = client.post("{not json");
    EXPECT_EQ(not_json.status, 400u);
    EXPECT_EQ(json::parse(not_json.body)["error"]["code"], -32700);
  }
  {
    Client client(guard.route_url("tickets"));
    const auto oversize = client.post(call(2, "get_ticket", {{"blob", std::string(2000, 'x')}}));
    EXPECT_EQ(oversize.status, 413u);
    EXPECT_EQ(json::parse(oversize.body)["error"]["code"], -32600);
  }
  {
    Client client(guard.route_url("tickets"));
    const auto mismatch =
        client.post(call(3, "get_ticket"), {{"Mcp-Method", "tools/call"}, {"Mcp-Name", "other"}});
    EXPECT_EQ(mismatch.status, 400u);
    EXPECT_EQ(json::parse(mismatch.body)["error"]["code"], -32020);
    EXPECT_EQ(upstream.requests(), 0);

    // Burst 3 (requests refused before the rate limit take no token): three pass, the fourth
    // waits two seconds at half a request a second.
    for (int id = 10; id < 13; ++id) EXPECT_EQ(client.post(call(id, "get_ticket")).status, 200u);
    const auto limited = client.post(call(13, "get_ticket"));
    EXPECT_EQ(limited.status, 429u);
    EXPECT_EQ(limited.header("Retry-After"), "2");
    EXPECT_EQ(json::parse(limited.body)["error"]["code"], -32002);
    EXPECT_EQ(upstream.requests(), 3);
  }
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 8; }));
  const auto lines = guard.audit_lines();
  EXPECT_EQ(lines[0]["reason"], "invalid_jsonrpc");
  EXPECT_EQ(lines[2]["reason"], "body_too_large");
  EXPECT_EQ(lines[3]["reason"], "header_mismatch");
  EXPECT_EQ(lines[7]["reason"], "rate_limit");
}

TEST(McpGuardFaults, UpstreamOutsideAllowedCidrsIsNeverDialled) {
  FakeUpstream upstream(answer_json);
  const std::string config =
      "metrics_listen: \"\"\nroutes:\n  - name: tickets\n    listen: 127.0.0.1:0\n"
      "    upstream: http://localhost:" +
      std::to_string(upstream.port()) + "\n    allowed_cidrs: [\"10.0.0.0/8\"]\n";
  GuardProcess guard(config);
  Client client(guard.route_url("tickets"));
  const auto reply = client.post(call(1, "get_ticket"));
  EXPECT_EQ(reply.status, 502u);
  EXPECT_EQ(json::parse(reply.body)["error"]["code"], -32003);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(upstream.connections(), 0);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 1; }));
  EXPECT_EQ(guard.audit_lines()[0]["reason"], "upstream_not_allowed");
}

// DNS rebinding: the upstream's name answers an allowed address, then (the attacker's DNS
// changing its answer) an address outside allowed_cidrs, where a stand-in for the cloud metadata
// service listens on the same port. The guard checks each connection's own lookup: the second
// client is refused and the stand-in never sees a connection. Loopback only: 127.0.0.2 plays
// 169.254.169.254. The guard gets a private /etc/hosts (GuardProcessOptions::hosts_file).
TEST(McpGuardFaults, AnUpstreamNameRebindingOutsideAllowedCidrsIsRefusedAtTheNextConnection) {
  ASSERT_EQ(::geteuid(), 0u) << "the rebinding test gives the guard a private /etc/hosts: root";
  FakeUpstream upstream(answer_json);
  FakeUpstream metadata(answer_json, "127.0.0.2", upstream.port());
  const std::string hosts_path =
      ::testing::TempDir() + "mcpguard-rebind-hosts-" + std::to_string(::getpid());
  const auto answer = [&](const std::string& address) {
    std::ofstream(hosts_path, std::ios::trunc)  // in place: the bind mount follows the inode
        << address << " mcp.rebind.perimeter.test\n";
  };
  answer("127.0.0.1");
  const std::string config =
      "metrics_listen: \"\"\nroutes:\n  - name: tickets\n    listen: 127.0.0.1:0\n"
      "    upstream: http://mcp.rebind.perimeter.test:" +
      std::to_string(upstream.port()) + "\n    allowed_cidrs: [\"127.0.0.1/32\"]\n";
  GuardProcess guard(config, GuardProcessOptions{20s, hosts_path});

  Client before(guard.route_url("tickets"));
  EXPECT_EQ(before.post(call(1, "get_ticket")).status, 200u) << guard.log();
  EXPECT_EQ(upstream.connections(), 1);

  answer("127.0.0.2");
  Client after(guard.route_url("tickets"));
  const auto refused = after.post(call(2, "get_ticket"));
  EXPECT_EQ(refused.status, 502u) << refused.body;
  EXPECT_EQ(json::parse(refused.body, nullptr, false)["error"]["code"], -32003) << refused.body;
  EXPECT_THAT(guard.log(), HasSubstr("127.0.0.2, outside allowed_cidrs"));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(metadata.connections(), 0) << "the guard dialled the rebound address";

  // The connection made under the first answer keeps its checked upstream.
  EXPECT_EQ(before.post(call(3, "get_ticket")).status, 200u);
  EXPECT_EQ(metadata.connections(), 0);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 3; }));
  EXPECT_EQ(guard.audit_lines()[1]["reason"], "upstream_not_allowed");
  std::remove(hosts_path.c_str());
}

// ---- https upstreams ----

// A CA and a server certificate it signs, as PEM files in a scratch folder.
class TestPki {
 public:
  TestPki()
      : dir_(::testing::TempDir() + "mcpguard-pki-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter_++)) {
    std::filesystem::create_directories(dir_);
  }
  ~TestPki() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  // A new CA; its certificate is written to <dir>/<name>.crt, whose path is returned.
  std::string make_ca(const std::string& name) {
    pki::CaRequest request;
    request.common_name = name;
    request.lifetime = std::chrono::hours(1);
    request.backdate = std::chrono::minutes(5);
    cas_.emplace(name, Issuer{pki::PrivateKey::generate_ec_p256(), std::nullopt});
    auto& issuer = cas_.at(name);
    issuer.certificate = pki::issue_self_signed_ca(request, issuer.key, now());
    const std::string path = dir_ + "/" + name + ".crt";
    std::ofstream(path) << issuer.certificate->pem();
    return path;
  }
  // A server certificate from CA `ca` for DNS names and IP addresses.
  TlsIdentity server(const std::string& ca, std::vector<std::string> dns_names,
                     std::vector<std::string> ip_addresses) {
    const auto& issuer = cas_.at(ca);
    pki::CertificateRequest request;
    request.common_name = dns_names.empty() ? ip_addresses.front() : dns_names.front();
    request.dns_names = std::move(dns_names);
    request.ip_addresses = std::move(ip_addresses);
    request.lifetime = std::chrono::hours(1);
    request.backdate = std::chrono::minutes(5);
    const auto key = pki::PrivateKey::generate_ec_p256();
    const auto certificate =
        pki::issue_certificate(request, key, *issuer.certificate, issuer.key, now());
    return {certificate.pem(), key.pem()};
  }

 private:
  struct Issuer {
    pki::PrivateKey key;
    std::optional<pki::Certificate> certificate;
  };
  static pki::TimePoint now() { return std::chrono::system_clock::now(); }
  static inline int counter_ = 0;
  std::string dir_;
  std::map<std::string, Issuer> cas_;
};

std::string https_config(const FakeUpstream& upstream, const std::string& host,
                         const std::string& ca_file) {
  return guard_config("https://" + host + ":" + std::to_string(upstream.port()),
                      "    upstream_ca_file: " + ca_file + "\n");
}

TEST(McpGuardFaults, AnHttpsUpstreamIsVerifiedAgainstTheRouteCaAndServedOverTls) {
  TestPki pki;
  const std::string ca = pki.make_ca("route-ca");
  // By DNS name (SNI and the name checked) and by IP address (the address SAN checked).
  for (const auto& [host, identity] : std::vector<std::pair<std::string, TlsIdentity>>{
           {"localhost", pki.server("route-ca", {"localhost"}, {})},
           {"127.0.0.1", pki.server("route-ca", {}, {"127.0.0.1"})}}) {
    SCOPED_TRACE(host);
    FakeUpstream upstream(answer_json, "127.0.0.1", 0, identity);
    GuardProcess guard(https_config(upstream, host, ca));
    Client client(guard.route_url("tickets"));
    const auto first = client.post(call(1, "get_ticket"));
    EXPECT_EQ(first.status, 200u) << first.body << guard.log();
    EXPECT_EQ(json::parse(first.body, nullptr, false)["result"]["content"][0]["text"],
              "RESULT-TEXT-for-get_ticket")
        << first.body;
    // The TLS connection is kept alive and reused for the next request.
    EXPECT_EQ(client.post(call(2, "get_ticket")).status, 200u);
    EXPECT_EQ(upstream.requests(), 2);
    EXPECT_EQ(upstream.connections(), 1);
    EXPECT_EQ(upstream.received().front()[http::field::host],
              host + ":" + std::to_string(upstream.port()));
    ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 2; }));
    EXPECT_EQ(guard.audit_lines()[0]["upstream_status"], 200);
  }
}

// Someone else's server on the upstream's address (a hijacked Service, a poisoned DNS answer):
// its certificate does not chain to the route's CA, or names another host. The guard refuses the
// connection before a byte of the request is sent.
TEST(McpGuardFaults, AnUpstreamCertificateTheRouteDoesNotTrustGetsNoRequest) {
  TestPki pki;
  const std::string ca = pki.make_ca("route-ca");
  pki.make_ca("attacker-ca");
  struct Case {
    std::string what;
    TlsIdentity identity;
    std::string log_says;
  };
  for (const auto& [what, identity, log_says] :
       std::vector<Case>{{"signed by another CA", pki.server("attacker-ca", {"localhost"}, {}),
                          "certificate verify failed: unable to get local issuer certificate"},
                         {"for another name", pki.server("route-ca", {"tickets.example"}, {}),
                          "certificate verify failed: hostname mismatch"}}) {
    SCOPED_TRACE(what);
    FakeUpstream impostor(answer_json, "127.0.0.1", 0, identity);
    GuardProcess guard(https_config(impostor, "localhost", ca));
    Client client(guard.route_url("tickets"));
    const auto reply = client.post(call(1, "get_ticket", {{"secret", "do-not-send"}}));
    EXPECT_EQ(reply.status, 502u) << reply.body;
    EXPECT_EQ(json::parse(reply.body, nullptr, false)["error"]["code"], -32003) << reply.body;
    EXPECT_THAT(guard.log(), HasSubstr(log_says));
    EXPECT_EQ(impostor.requests(), 0) << "the request reached a server the route does not trust";
    // Recorded by the impostor's thread, which may end its handshake after the guard answered.
    EXPECT_TRUE(eventually([&] { return impostor.failed_handshakes() >= 1; }));
    ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 1; }));
    EXPECT_EQ(guard.audit_lines()[0]["outcome"], "error");
    EXPECT_TRUE(guard.audit_lines()[0]["upstream_status"].is_null());
    const auto metrics = http_get(guard.metrics_address(), "/metrics");
    EXPECT_THAT(metrics, HasSubstr("kind=\"tls\""));
  }
}

TEST(McpGuardFaults, AnHttpsRouteWhoseCaFileCannotBeReadDoesNotStart) {
  FakeUpstream upstream(answer_json);
  EXPECT_THAT(
      [&] {
        GuardProcess guard(https_config(upstream, "localhost", "/nonexistent/route-ca.crt"),
                           std::chrono::seconds(5));
      },
      ::testing::ThrowsMessage<std::runtime_error>(
          HasSubstr("cannot read upstream_ca_file /nonexistent/route-ca.crt")));
}

// ---- upstream failures and backpressure ----

TEST(McpGuardFaults, UpstreamDyingMidStreamEndsTheClientsReadPromptly) {
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    if (std::string(exchange.request.target()) == "/dies") {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(sse_event("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}")));
      std::this_thread::sleep_for(100ms);
      exchange.close();
      return;
    }
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"), 5s);
  client.send(http::verb::post, "/dies", call(1, "get_ticket"));
  EXPECT_EQ(client.read_head().status, 200u);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(
      {
        for (;;) {
          if (client.read_some().empty()) break;  // a clean end would be wrong: no throw
        }
      },
      beast::system_error);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);

  Client other(guard.route_url("tickets"));
  EXPECT_EQ(other.post(call(2, "get_ticket")).status, 200u);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 2; }));
  EXPECT_EQ(guard.audit_lines()[0]["outcome"], "stream_ended");
}

TEST(McpGuardFaults, ASlowClientDoesNotGrowTheGuardOrStallOthers) {
  constexpr std::size_t kTotal = 200u * 1024 * 1024;
  std::atomic<std::size_t> pushed{0};
  std::atomic<bool> stop{false};
  const std::string event = sse_event(
      "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\","
      "\"params\":{\"data\":\"" +
      std::string(60 * 1024, 'x') + "\"}}");
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    if (std::string(exchange.request.target()) == "/flood") {
      exchange.write(chunked_head(200, "text/event-stream"));
      const std::string one = chunk(event);
      while (pushed < kTotal && !stop) {
        if (!exchange.write(one)) return;
        pushed += event.size();
      }
      exchange.write("0\r\n\r\n");
      return;
    }
    if (std::string(exchange.request.target()) == "/ticks") {
      exchange.write(chunked_head(200, "text/event-stream"));
      for (int i = 0; i < 20; ++i) {
        exchange.write(chunk(sse_event("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tick\"}")));
        std::this_thread::sleep_for(10ms);
      }
      exchange.write("0\r\n\r\n");
      return;
    }
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url()));
  const long rss_before = rss_kb(guard.pid());

  Client slow(guard.route_url("tickets"));
  slow.stop_reading_and_shrink_buffer();
  slow.send(http::verb::get, "/flood", "");
  // The upstream stalls once the socket buffers on the way are full.
  std::size_t last = 0;
  ASSERT_TRUE(eventually(
      [&] {
        const std::size_t now = pushed;
        const bool stalled = now > 0 && now == last;
        last = now;
        return stalled;
      },
      10000ms));
  std::this_thread::sleep_for(300ms);
  EXPECT_LT(pushed.load(), kTotal / 4) << "the guard read ahead of its client";
  const long rss_during = rss_kb(guard.pid());
  EXPECT_LT(rss_during - rss_before, 32 * 1024)
      << "RSS grew from " << rss_before << " kB to " << rss_during << " kB";

  // Another client's stream flows meanwhile.
  Client other(guard.route_url("tickets"));
  const auto ticks = other.request(http::verb::get, "/ticks", "");
  EXPECT_EQ(ticks.status, 200u);
  EXPECT_EQ(std::count(ticks.body.begin(), ticks.body.end(), '\n'), 20 * 3);
  EXPECT_EQ(other.post(call(1, "get_ticket")).status, 200u);
  stop = true;
}

// ---- audit ----

TEST(McpGuardFaults, ExactlyOneAuditLinePerRequestWithoutArgumentText) {
  FakeUpstream upstream(answer_json);
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  EXPECT_EQ(client.post(list_tools(1)).status, 200u);
  EXPECT_EQ(client
                .post(call(2, "get_ticket", {{"query", "ARGUMENT-TEXT"}}),
                      {{"Mcp-Session-Id", "sess-1"}, {"MCP-Protocol-Version", "2025-11-25"}})
                .status,
            200u);
  EXPECT_EQ(client.post(call(3, "delete_user", {{"query", "ARGUMENT-TEXT"}})).status, 200u);
  EXPECT_EQ(client.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})").status, 202u);
  EXPECT_EQ(client.post("[" + call(4, "create_ticket") + "," + call(5, "get_ticket") + "]").status,
            200u);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() >= 6; }));
  std::this_thread::sleep_for(200ms);
  const auto lines = guard.audit_lines();
  ASSERT_EQ(lines.size(), 6u);
  for (const auto& line : lines) {
    EXPECT_EQ(line["type"], "perimeter.mcp-audit.v1");
    EXPECT_EQ(line["level"], "metadata");
    EXPECT_EQ(line["route"], "tickets");
    EXPECT_EQ(line["direction"], "client");
    EXPECT_FALSE(line.contains("arguments"));
    EXPECT_THAT(line.dump(), Not(HasSubstr("ARGUMENT-TEXT")));
    EXPECT_THAT(line.dump(), Not(HasSubstr("RESULT-TEXT")));
  }
  EXPECT_EQ(lines[0]["method"], "tools/list");
  EXPECT_EQ(lines[0]["outcome"], "result");
  EXPECT_EQ(lines[1]["session"], "sess-1");
  EXPECT_EQ(lines[1]["protocol_version"], "2025-11-25");
  EXPECT_EQ(lines[1]["name"], "get_ticket");
  EXPECT_EQ(lines[1]["upstream_status"], 200);
  EXPECT_EQ(lines[2]["decision"], "denied");
  EXPECT_TRUE(lines[3]["id"].is_null());
  EXPECT_EQ(lines[3]["outcome"], "no_response");
  EXPECT_EQ(lines[3]["upstream_status"], 202);
  EXPECT_EQ(lines[4]["id"], 4);
  EXPECT_EQ(lines[5]["id"], 5);
  // The tool label takes names the server listed.
  const std::string metrics = http_get(guard.metrics_address(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("tool=\"get_ticket\""));
}

// Tool names in a request come from the client: only names the server listed become metric
// labels, so a client calling a thousand made-up tools cannot grow the label set.
TEST(McpGuardFaults, ToolNamesTheServerNeverListedShareOneMetricLabel) {
  FakeUpstream upstream(answer_json);
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  EXPECT_EQ(client.post(list_tools(1)).status, 200u);
  EXPECT_EQ(client.post(call(2, "get_ticket")).status, 200u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(client.post(call(10 + i, "made_up_tool_" + std::to_string(i))).status, 200u);
  }
  const std::string metrics = http_get(guard.metrics_address(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("tool=\"get_ticket\""));
  EXPECT_THAT(metrics, HasSubstr("tool=\"(unlisted)\""));
  EXPECT_THAT(metrics, Not(HasSubstr("made_up_tool_")));
  // The audit still names what was called: that is the record, the label is only a count.
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() >= 52; }));
  EXPECT_EQ(guard.audit_lines().back()["name"], "made_up_tool_49");
}

// ---- reload ----

TEST(McpGuardFaults, ReloadChangesPolicyWithoutDroppingAnOpenStreamAndRefusesListenerChanges) {
  Gate send_second;
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    if (exchange.request.method() == http::verb::get) {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(sse_event("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/one\"}")));
      if (!send_second.wait(20000ms)) return;
      exchange.write(chunk(sse_event("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/two\"}")));
      exchange.write("0\r\n\r\n");
      return;
    }
    answer_json(exchange);
  });
  const std::string before = guard_config(upstream.url());
  GuardProcess guard(before);
  Client stream(guard.route_url("tickets"));
  stream.send(http::verb::get, "/mcp", "");
  EXPECT_EQ(stream.read_head().status, 200u);
  EXPECT_THAT(stream.read_some(), HasSubstr("notifications/one"));

  Client client(guard.route_url("tickets"));
  EXPECT_EQ(json::parse(client.post(call(1, "create_ticket")).body).count("result"), 1u);
  std::string after = before;
  after.replace(after.find("delete_*"), 8, "create_*");
  guard.rewrite_config(after);
  guard.reload();
  ASSERT_TRUE(eventually([&] { return guard.log().find("config reloaded") != std::string::npos; }));
  EXPECT_EQ(json::parse(client.post(call(2, "create_ticket")).body)["error"]["code"], -32001);
  EXPECT_EQ(json::parse(client.post(call(3, "delete_user")).body).count("result"), 1u);

  send_second.open();
  std::string rest;
  for (std::string bytes; !(bytes = stream.read_some()).empty();) rest += bytes;
  EXPECT_THAT(rest, HasSubstr("notifications/two"));

  // A listener change is refused (through the 2 s content check, no SIGHUP) and counted.
  std::string moved = after;
  moved.replace(moved.find("listen: 127.0.0.1:0"), 19, "listen: 127.0.0.1:1");
  guard.rewrite_config(moved);
  ASSERT_TRUE(eventually(
      [&] { return guard.log().find("config reload refused") != std::string::npos; }, 6000ms));
  EXPECT_THAT(guard.log(), HasSubstr("listen changed"));
  const std::string metrics = http_get(guard.metrics_address(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("perimeter_mcp_guard_config_reloads_total{result=\"error\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("perimeter_mcp_guard_config_reloads_total{result=\"ok\"} 1"));
  // The old policy stays in force.
  EXPECT_EQ(json::parse(client.post(call(4, "create_ticket")).body)["error"]["code"], -32001);
  EXPECT_TRUE(guard.running());
}

TEST(McpGuardFaults, AClientHangingUpOnAQuietStreamIsNoticedAtOnce) {
  std::atomic<bool> upstream_saw_close{false};
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    if (exchange.request.method() == http::verb::get) {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(": open\n\n"));
      // A quiet stream: the guard's only way to learn of the hang-up is the client socket.
      char byte;
      boost::system::error_code error;
      exchange.close_when_peer_closes(&byte, &error);
      upstream_saw_close = true;
      return;
    }
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url()));
  {
    Client stream(guard.route_url("tickets"));
    stream.send(http::verb::get, "/mcp", "");
    EXPECT_EQ(stream.read_head().status, 200u);
    EXPECT_EQ(stream.read_some(), ": open\n\n");
  }
  EXPECT_TRUE(eventually([&] { return upstream_saw_close.load(); }, 3000ms));
  // The guard goes on serving.
  Client client(guard.route_url("tickets"));
  EXPECT_EQ(client.post(call(1, "get_ticket")).status, 200u);
}

TEST(McpGuardFaults, FullLevelRedactsByKeyAndServerRequestsGetTheirOwnLine) {
  const std::string sampling =
      R"({"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{"messages":[]}})";
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    if (exchange.request.method() == http::verb::get) {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(sse_event(sampling)));
      exchange.write("0\r\n\r\n");
      return;
    }
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url(), "", "audit:\n  level: full\n"));
  Client client(guard.route_url("tickets"));
  EXPECT_EQ(client.post(call(1, "get_ticket", {{"password", "hunter2"}, {"q", "visible"}})).status,
            200u);
  const auto stream = client.request(http::verb::get, "/mcp", "");
  EXPECT_EQ(stream.body, sse_event(sampling));
  // The server's request is audited once the client's answer is seen.
  EXPECT_EQ(client.post(R"({"jsonrpc":"2.0","id":"srv-1","result":{"token":"SECRET-TOKEN","n":1}})")
                .status,
            202u);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 2; }));
  const auto lines = guard.audit_lines();
  EXPECT_EQ(lines[0]["level"], "full");
  EXPECT_EQ(lines[0]["arguments"]["password"], "[REDACTED]");
  EXPECT_EQ(lines[0]["arguments"]["q"], "visible");
  EXPECT_EQ(lines[0]["result"]["content"][0]["text"], "RESULT-TEXT-for-get_ticket");
  EXPECT_THAT(lines[0].dump(), Not(HasSubstr("hunter2")));
  EXPECT_EQ(lines[1]["direction"], "server");
  EXPECT_EQ(lines[1]["method"], "sampling/createMessage");
  EXPECT_EQ(lines[1]["id"], "srv-1");
  EXPECT_EQ(lines[1]["outcome"], "result");
  EXPECT_EQ(lines[1]["result"]["token"], "[REDACTED]");
  EXPECT_EQ(lines[1]["result"]["n"], 1);
}

// A server's request is matched with the client's answer by (Mcp-Session-Id, id), on whichever
// connection it comes; one never answered is audited `no_response` when the guard stops.
TEST(McpGuardFaults, ServerRequestsAreAuditedWhenTheClientAnswersThem) {
  Gate answered;
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    if (exchange.request.method() == http::verb::get) {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(
          sse_event(R"({"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}})") +
          sse_event(R"({"jsonrpc":"2.0","id":"r-1","method":"roots/list"})") +
          sse_event(R"({"jsonrpc":"2.0","id":8,"method":"elicitation/create","params":{}})")));
      if (!answered.wait(20000ms)) return;
      exchange.write("0\r\n\r\n");
      return;
    }
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url()));
  const Headers session = {{"Mcp-Session-Id", "sess-9"}};
  Client stream(guard.route_url("tickets"));
  stream.send(http::verb::get, "/mcp", "", session);
  EXPECT_EQ(stream.read_head().status, 200u);
  std::string events;
  while (events.find("elicitation/create") == std::string::npos) events += stream.read_some();
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(guard.audit_lines().empty()) << "no line before the client's answer";

  std::this_thread::sleep_for(200ms);
  Client other(guard.route_url("tickets"));
  // The same id in another session answers nothing.
  EXPECT_EQ(other.post(R"({"jsonrpc":"2.0","id":7,"result":{}})", {{"Mcp-Session-Id", "x"}}).status,
            202u);
  EXPECT_EQ(other.post(R"({"jsonrpc":"2.0","id":7,"result":{}})", session).status, 202u);
  EXPECT_EQ(
      other.post(R"({"jsonrpc":"2.0","id":"r-1","error":{"code":-32601,"message":"no"}})", session)
          .status,
      202u);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 2; }));
  auto lines = guard.audit_lines();
  EXPECT_EQ(lines[0]["direction"], "server");
  EXPECT_EQ(lines[0]["method"], "sampling/createMessage");
  EXPECT_EQ(lines[0]["id"], 7);
  EXPECT_EQ(lines[0]["session"], "sess-9");
  EXPECT_EQ(lines[0]["outcome"], "result");
  EXPECT_TRUE(lines[0]["rpc_error_code"].is_null());
  EXPECT_GE(lines[0]["duration_ms"].get<int>(), 400) << "from when the server sent it";
  EXPECT_EQ(lines[1]["method"], "roots/list");
  EXPECT_EQ(lines[1]["outcome"], "error");
  EXPECT_EQ(lines[1]["rpc_error_code"], -32601);
  answered.open();
  for (std::string bytes; !(bytes = stream.read_some()).empty();) {
  }

  ASSERT_EQ(::kill(guard.pid(), SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return !guard.running(); }, 5000ms));
  lines = guard.audit_lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2]["method"], "elicitation/create");
  EXPECT_EQ(lines[2]["outcome"], "no_response");
}

// A notification the server accepts with an empty chunked 202 (Node's http does that for a
// body-less Response) is `no_response`, as with a Content-Length: 0 one.
TEST(McpGuardFaults, ANotificationAcceptedWithAnEmptyChunked202IsAuditedNoResponse) {
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    exchange.write("HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  EXPECT_EQ(client.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})").status, 202u);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 1; }));
  const auto line = guard.audit_lines().front();
  EXPECT_EQ(line["upstream_status"], 202);
  EXPECT_EQ(line["outcome"], "no_response");
}

// Bytes that are not HTTP get the 400 a server would send, and no audit line (no JSON-RPC read).
TEST(McpGuardFaults, AMalformedHeaderLineIsAnswered400AndCountedNotAudited) {
  FakeUpstream upstream(answer_json);
  GuardProcess guard(guard_config(upstream.url()));
  const std::string url = guard.route_url("tickets");
  const auto colon = url.rfind(':');
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address(url.substr(7, colon - 7)),
                               static_cast<unsigned short>(std::stoi(url.substr(colon + 1)))));
  timeval timeout{5, 0};
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  const std::string body = list_tools(1);
  asio::write(socket,
              asio::buffer("POST /mcp HTTP/1.1\r\nHost: guard.test\r\nThisLineHasNoColon\r\n"
                           "Content-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body));
  beast::flat_buffer buffer;
  http::response<http::string_body> reply;
  beast::error_code error;
  http::read(socket, buffer, reply, error);
  ASSERT_FALSE(error) << error.message();
  EXPECT_EQ(reply.result_int(), 400u);
  EXPECT_EQ(reply[http::field::connection], "close");
  EXPECT_EQ(upstream.requests(), 0);
  ASSERT_TRUE(eventually([&] {
    return http_get(guard.metrics_address(), "/metrics")
               .find("perimeter_mcp_guard_malformed_requests_total{route=\"tickets\"} 1") !=
           std::string::npos;
  }));
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(guard.audit_lines().empty());
}

// An upstream error not tied to an id (null, or none) is the error of the exchange's one request.
TEST(McpGuardFaults, AnUpstreamErrorWithoutAnIdGivesTheOnlyRequestItsErrorCode) {
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    const auto request = json::parse(exchange.request.body());
    if (request["id"] == 1) {
      exchange.write(http_reply(
          406, "Not Acceptable", {{"Content-Type", "application/json"}},
          R"({"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Not Acceptable"}})"));
    } else {
      exchange.write(http_reply(400, "Bad Request", {{"Content-Type", "application/json"}},
                                R"({"jsonrpc":"2.0","error":{"code":-32001,"message":"no"}})"));
    }
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  EXPECT_EQ(client.post(call(1, "get_ticket")).status, 406u);
  EXPECT_EQ(client.post(call(2, "get_ticket")).status, 400u);
  ASSERT_TRUE(eventually([&] { return guard.audit_lines().size() == 2; }));
  const auto lines = guard.audit_lines();
  EXPECT_EQ(lines[0]["outcome"], "error");
  EXPECT_EQ(lines[0]["rpc_error_code"], -32000);
  EXPECT_EQ(lines[1]["outcome"], "error");
  EXPECT_EQ(lines[1]["rpc_error_code"], -32001);
}

TEST(McpGuardFaults, AnUpstreamClosingAnIdleKeptAliveConnectionIsRedialled) {
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    answer_json(exchange);
    // No Connection: close: the server just drops the idle connection, as servers do.
    std::this_thread::sleep_for(20ms);
    exchange.close();
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client client(guard.route_url("tickets"));
  for (int id = 1; id <= 3; ++id) {
    EXPECT_EQ(client.post(call(id, "get_ticket")).status, 200u) << id;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(upstream.requests(), 3);
  EXPECT_EQ(upstream.connections(), 3);
}

// Each phase's limit: an idle kept-alive client, an upstream slow to answer, a quiet stream.
TEST(McpGuardFaults, HeaderReplyAndStreamIdleTimeoutsAreEnforced) {
  std::atomic<int> streams_closed{0};
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    char byte;
    boost::system::error_code error;
    if (std::string(exchange.request.target()) == "/slow") {
      exchange.close_when_peer_closes(&byte, &error);  // never answers
      return;
    }
    if (exchange.request.method() == http::verb::get) {
      exchange.write(chunked_head(200, "text/event-stream"));
      exchange.write(chunk(": open\n\n"));
      exchange.close_when_peer_closes(&byte, &error);
      ++streams_closed;
      return;
    }
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url(), "",
                                  "limits:\n  header_timeout_seconds: 1\n"
                                  "  upstream_reply_timeout_seconds: 1\n"
                                  "  stream_idle_timeout_seconds: 1\n"));

  // A kept-alive client that sends nothing more is closed after header_timeout.
  Client idle(guard.route_url("tickets"), 5s);
  EXPECT_EQ(idle.post(call(1, "get_ticket")).status, 200u);
  auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(idle.read_head(), beast::system_error);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);

  // An upstream that does not answer within upstream_reply_timeout: 502, kind timeout.
  Client slow(guard.route_url("tickets"), 5s);
  started = std::chrono::steady_clock::now();
  slow.send(http::verb::post, "/slow", call(2, "get_ticket"));
  const auto head = slow.read_head();
  EXPECT_EQ(head.status, 502u);
  std::string body;
  for (std::string bytes; !(bytes = slow.read_some()).empty();) body += bytes;
  EXPECT_THAT(body, HasSubstr("failed (timeout)"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);

  // A stream with no bytes either way for stream_idle_timeout is cut, the upstream's included.
  Client stream(guard.route_url("tickets"), 5s);
  stream.send(http::verb::get, "/mcp", "");
  EXPECT_EQ(stream.read_head().status, 200u);
  EXPECT_EQ(stream.read_some(), ": open\n\n");
  started = std::chrono::steady_clock::now();
  EXPECT_THROW(
      {
        for (;;) {
          if (stream.read_some().empty()) break;  // a clean end would be wrong: no throw
        }
      },
      beast::system_error);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  EXPECT_TRUE(eventually([&] { return streams_closed.load() == 1; }, 3000ms));
  EXPECT_THAT(
      http_get(guard.metrics_address(), "/metrics"),
      HasSubstr(R"(perimeter_mcp_guard_upstream_errors_total{kind="timeout",route="tickets"} 2)"));
}

TEST(McpGuardFaults, SigtermLetsTheOpenExchangeFinishThenExits) {
  FakeUpstream upstream([&](UpstreamExchange& exchange) {
    std::this_thread::sleep_for(500ms);
    answer_json(exchange);
  });
  GuardProcess guard(guard_config(upstream.url()));
  Client idle(guard.route_url("tickets"));  // kept alive with nothing in flight: closed at once
  Client client(guard.route_url("tickets"));
  client.send(http::verb::post, "/mcp", call(1, "get_ticket"));
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(::kill(guard.pid(), SIGTERM), 0);
  const auto head = client.read_head();
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.header("Connection"), "close");
  std::string body;
  for (std::string bytes; !(bytes = client.read_some()).empty();) body += bytes;
  EXPECT_THAT(body, HasSubstr("RESULT-TEXT"));
  EXPECT_TRUE(eventually([&] { return !guard.running(); }, 5000ms));
  EXPECT_THAT(guard.log(), HasSubstr(R"("drained":true)"));
}

}  // namespace
}  // namespace perimeter::testing
