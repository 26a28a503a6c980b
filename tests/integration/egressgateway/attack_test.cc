// perimeter-egress-gateway attacked over loopback (docs/egress-gateway.md, "Threat model").

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/base64.h"
#include "egressgateway/gateway_process.h"
#include "egressgateway/tls_peers.h"
#include "process/process.h"

namespace perimeter::testing {
namespace {

using std::chrono::milliseconds;

// allowed.test is a shared front (think of a CDN): its stand-in also holds a certificate for
// other.test, so a client that reached it with SNI other.test would be served other.test.
// other.test also has a stand-in of its own. metadata.test is on the allow-list but resolves
// to the cloud metadata address; mixed.test resolves to the front and to that address.
constexpr const char* kFrontAddress = "127.0.0.2";
constexpr const char* kOtherAddress = "127.0.0.3";

std::string hosts_file_text() {
  return "127.0.0.1 localhost\n"
         "127.0.0.2 allowed.test\n"
         "127.0.0.3 other.test\n"
         "169.254.169.254 metadata.test\n"
         "127.0.0.2 mixed.test\n"
         "169.254.169.254 mixed.test\n"
         "::ffff:169.254.169.254 mapped-metadata.test\n";
}

std::string config_text(int front_port, int other_port, bool allow_front = true) {
  const std::string front = std::to_string(front_port);
  return "listen: 127.0.0.1:0\n"
         "metrics_listen: 127.0.0.1:0\n"
         "connect_timeout_ms: 2000\n"
         "client_hello_timeout_ms: 2000\n"
         "idle_timeout_ms: 10000\n"
         "testing_allow_loopback_upstreams: true\n"
         "environments:\n"
         "  - name: team-a/agents\n"
         "    allow:\n" +
         (allow_front ? "      - {host: allowed.test, ports: [" + front + "]}\n" : std::string()) +
         "      - {host: metadata.test, ports: [" + front +
         "]}\n"
         "      - {host: mapped-metadata.test, ports: [" +
         front +
         "]}\n"
         "      - {host: mixed.test, ports: [" +
         front +
         "]}\n"
         "  - name: team-b/agents\n"
         "    allow:\n"
         "      - {host: other.test, ports: [" +
         std::to_string(other_port) + "]}\n";
}

class EgressGatewayAttack : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(geteuid(), 0u) << "the private /etc/hosts needs root (a mount namespace)";
    ca_ = new TestCa();
    const auto front = ca_->issue({"allowed.test", "other.test", "mixed.test"});
    const auto other = ca_->issue({"other.test"});
    front_ = new TlsStandIn(kFrontAddress, front.first, front.second);
    other_ = new TlsStandIn(kOtherAddress, other.first, other.second);
    hosts_dir_ = new std::string(std::filesystem::temp_directory_path() /
                                 ("perimeter-egress-hosts-" + std::to_string(getpid())));
    std::filesystem::create_directories(*hosts_dir_);
    std::ofstream(*hosts_dir_ + "/hosts") << hosts_file_text();
    GatewayProcessOptions options;
    options.hosts_file = *hosts_dir_ + "/hosts";
    gateway_ = new GatewayProcess(config_text(front_->port(), other_->port()), options);
  }
  static void TearDownTestSuite() {
    delete gateway_;
    delete front_;
    delete other_;
    delete ca_;
    if (hosts_dir_ != nullptr) std::filesystem::remove_all(*hosts_dir_);
    delete hosts_dir_;
  }

  // The audit line of the connection that ended last, once it is written.
  static nlohmann::json next_audit_line(std::size_t before) {
    const auto lines = gateway_->wait_for_audit_lines(before + 1, milliseconds(5000));
    if (lines.size() <= before) return nlohmann::json::object();
    return lines.back();
  }

  static std::string front_target() { return "allowed.test:" + std::to_string(front_->port()); }

  static TestCa* ca_;
  static TlsStandIn* front_;
  static TlsStandIn* other_;
  static GatewayProcess* gateway_;
  static std::string* hosts_dir_;
};

TestCa* EgressGatewayAttack::ca_ = nullptr;
TlsStandIn* EgressGatewayAttack::front_ = nullptr;
TlsStandIn* EgressGatewayAttack::other_ = nullptr;
GatewayProcess* EgressGatewayAttack::gateway_ = nullptr;
std::string* EgressGatewayAttack::hosts_dir_ = nullptr;

TEST_F(EgressGatewayAttack, AnAllowedHostWorksEndToEndAndItsAuditLineCountsEveryByte) {
  const auto audit_before = gateway_->audit_lines().size();
  ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
  const auto reply =
      client.connect(front_target(), gateway_->credential("team-a", "agents", "s-1"));
  ASSERT_EQ(reply.status, 200) << reply.head << reply.body;
  std::string error;
  ASSERT_TRUE(client.handshake("allowed.test", ca_->pem(), "allowed.test", &error)) << error;
  ASSERT_TRUE(client.write("SEND 300000\n"));
  const auto body = client.read_to_end();
  EXPECT_EQ(body.size(), 300000u);
  const auto raw_up = client.raw_written();
  const auto raw_down = client.raw_read();
  ::shutdown(client.fd(), SHUT_RDWR);

  const auto line = next_audit_line(audit_before);
  EXPECT_EQ(line["decision"], "allowed") << line.dump();
  EXPECT_EQ(line["reason"], "ok");
  EXPECT_EQ(line["environment"], "team-a/agents");
  EXPECT_EQ(line["session"], "s-1");
  EXPECT_EQ(line["host"], "allowed.test");
  EXPECT_EQ(line["port"], front_->port());
  EXPECT_EQ(line["upstream"], std::string(kFrontAddress) + ":" + std::to_string(front_->port()));
  EXPECT_TRUE(line["client"].get<std::string>().starts_with("127.0.0.1:"));
  // Every byte the client put on the wire after the CONNECT went up, every byte it read came down.
  EXPECT_EQ(line["bytes_up"], raw_up);
  EXPECT_EQ(line["bytes_down"], raw_down);
  EXPECT_GT(raw_down, 300000u);
  EXPECT_EQ(gateway_->log().find("Proxy-Authorization"), std::string::npos);
}

TEST_F(EgressGatewayAttack, AClientsHalfCloseReachesTheUpstreamWhichCanStillAnswer) {
  const auto audit_before = gateway_->audit_lines().size();
  ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
  ASSERT_EQ(client.connect(front_target(), gateway_->credential("team-a", "agents", "h")).status,
            200);
  std::string error;
  ASSERT_TRUE(client.handshake("allowed.test", ca_->pem(), "allowed.test", &error)) << error;
  ASSERT_TRUE(client.write("HALFCLOSE\nabc"));
  client.close_write();
  // The front saw the end of the stream under the close_notify, and its answer still came back.
  EXPECT_EQ(client.read_to_end(), "EOF after 3\n");
  const auto line = next_audit_line(audit_before);
  EXPECT_EQ(line["reason"], "ok") << line.dump();
  EXPECT_EQ(line["bytes_up"], client.raw_written());
  EXPECT_EQ(line["bytes_down"], client.raw_read());
}

TEST_F(EgressGatewayAttack, AnUnlistedHostIsRefusedAndNothingIsDialled) {
  const auto audit_before = gateway_->audit_lines().size();
  const int front_before = front_->settled_connections();
  const int other_before = other_->settled_connections();
  ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
  const auto reply = client.connect("other.test:" + std::to_string(other_->port()),
                                    gateway_->credential("team-a", "agents", "s-2"));
  EXPECT_EQ(reply.status, 403) << reply.head;
  EXPECT_NE(reply.body.find("not on the allow-list of team-a/agents"), std::string::npos)
      << reply.body;
  const auto line = next_audit_line(audit_before);
  EXPECT_EQ(line["decision"], "denied");
  EXPECT_EQ(line["reason"], "not_allowed");
  EXPECT_EQ(line["host"], "other.test");
  EXPECT_TRUE(line["upstream"].is_null());
  EXPECT_EQ(front_->settled_connections(), front_before);
  EXPECT_EQ(other_->settled_connections(), other_before);
}

// Domain fronting: CONNECT to the allowed front, then a ClientHello for other.test, which the
// front would serve. The gateway must close the tunnel before a byte reaches the front.
TEST_F(EgressGatewayAttack, AClientHelloForAnotherHostIsCutAndReachesNoOne) {
  const auto audit_before = gateway_->audit_lines().size();
  const int front_bytes_before = front_->connections_with_bytes();
  const int front_handshakes_before = front_->handshakes();
  const int other_before = other_->settled_connections();
  ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
  const auto reply =
      client.connect(front_target(), gateway_->credential("team-a", "agents", "s-3"));
  ASSERT_EQ(reply.status, 200) << reply.head;
  std::string error;
  EXPECT_FALSE(client.handshake("other.test", ca_->pem(), "other.test", &error))
      << "the front served other.test through a tunnel to allowed.test";
  const auto line = next_audit_line(audit_before);
  EXPECT_EQ(line["decision"], "denied") << line.dump();
  EXPECT_EQ(line["reason"], "sni_mismatch");
  EXPECT_EQ(line["bytes_up"], 0);
  EXPECT_EQ(line["bytes_down"], 0);
  EXPECT_EQ(front_->connections_with_bytes(), front_bytes_before);
  EXPECT_EQ(front_->handshakes(), front_handshakes_before);
  EXPECT_EQ(other_->settled_connections(), other_before);
}

TEST_F(EgressGatewayAttack, NoSniOrNoTlsIsCut) {
  {
    const auto audit_before = gateway_->audit_lines().size();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    ASSERT_EQ(
        client.connect(front_target(), gateway_->credential("team-a", "agents", "s-4")).status,
        200);
    std::string error;
    EXPECT_FALSE(client.handshake("", ca_->pem(), "allowed.test", &error));
    EXPECT_EQ(next_audit_line(audit_before)["reason"], "no_sni");
  }
  {
    const auto audit_before = gateway_->audit_lines().size();
    const int front_bytes_before = front_->connections_with_bytes();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    ASSERT_EQ(
        client.connect(front_target(), gateway_->credential("team-a", "agents", "s-4")).status,
        200);
    ASSERT_TRUE(client.write_raw("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"));
    EXPECT_TRUE(client.closed_by_peer(5000));
    EXPECT_EQ(next_audit_line(audit_before)["reason"], "no_tls");
    EXPECT_EQ(front_->connections_with_bytes(), front_bytes_before);
  }
}

TEST_F(EgressGatewayAttack, TheMetadataAddressIsNeverDialled) {
  for (const std::string host : {"metadata.test", "mapped-metadata.test", "mixed.test"}) {
    const auto audit_before = gateway_->audit_lines().size();
    const int front_before = front_->settled_connections();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply = client.connect(host + ":" + std::to_string(front_->port()),
                                      gateway_->credential("team-a", "agents", "s-5"));
    EXPECT_EQ(reply.status, 403) << host << ": " << reply.head;
    EXPECT_NE(reply.body.find("forbidden address"), std::string::npos) << reply.body;
    const auto line = next_audit_line(audit_before);
    EXPECT_EQ(line["reason"], "forbidden_address") << host;
    EXPECT_TRUE(line["upstream"].is_null());
    // mixed.test's other address is the front: not dialled either.
    EXPECT_EQ(front_->settled_connections(), front_before) << host;
  }
}

TEST_F(EgressGatewayAttack, BadCredentialsGet407) {
  for (const std::string& authorization :
       {std::string(), std::string("Basic !!!"), std::string("Basic dGVhbS1hfmFnZW50c35zLTY="),
        std::string("Bearer x"),
        gateway_->credential("team-a", "agents", "s-6").substr(0, 40) + "AAAA"}) {
    const auto audit_before = gateway_->audit_lines().size();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply = client.connect(front_target(), authorization);
    EXPECT_EQ(reply.status, 407) << authorization;
    EXPECT_NE(reply.head.find("Proxy-Authenticate: Basic realm=\"perimeter-egress\""),
              std::string::npos);
    const auto line = next_audit_line(audit_before);
    EXPECT_EQ(line["reason"], "bad_credentials");
    EXPECT_TRUE(line["environment"].is_null());
  }
  EXPECT_EQ(front_->connections_with_bytes(), front_->handshakes());  // none half-open
}

TEST_F(EgressGatewayAttack, OneEnvironmentsCredentialCannotReachAnothersHosts) {
  // team-b's session, honestly signed: team-b's list does not have allowed.test.
  {
    const auto audit_before = gateway_->audit_lines().size();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply =
        client.connect(front_target(), gateway_->credential("team-b", "agents", "b1"));
    EXPECT_EQ(reply.status, 403);
    const auto line = next_audit_line(audit_before);
    EXPECT_EQ(line["environment"], "team-b/agents");
    EXPECT_EQ(line["reason"], "not_allowed");
  }
  // team-b's password under team-a's name: the signature covers the name.
  {
    const auto audit_before = gateway_->audit_lines().size();
    std::string decoded;
    ASSERT_TRUE(
        base64_decode_any(gateway_->credential("team-b", "agents", "b1").substr(6), &decoded));
    const auto password_of_b = decoded.substr(decoded.find(':') + 1);
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply = client.connect(
        front_target(), "Basic " + base64_encode("team-a~agents~b1:" + password_of_b));
    EXPECT_EQ(reply.status, 407);
    EXPECT_EQ(next_audit_line(audit_before)["reason"], "bad_credentials");
  }
}

TEST_F(EgressGatewayAttack, NotConnectAndIpLiteralsAreRefused) {
  {
    const auto audit_before = gateway_->audit_lines().size();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply = client.send_head(
        "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nProxy-Authorization: " +
        gateway_->credential("team-a", "agents", "s-7") + "\r\n\r\n");
    EXPECT_EQ(reply.status, 405);
    EXPECT_EQ(next_audit_line(audit_before)["reason"], "method_not_allowed");
  }
  for (const std::string& target :
       {std::string(kFrontAddress) + ":" + std::to_string(front_->port()),
        "[::1]:" + std::to_string(front_->port())}) {
    const auto audit_before = gateway_->audit_lines().size();
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply = client.connect(target, gateway_->credential("team-a", "agents", "s-7"));
    EXPECT_EQ(reply.status, 403) << target;
    EXPECT_EQ(next_audit_line(audit_before)["reason"], "ip_literal");
  }
  {
    ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
    const auto reply = client.send_head(
        "CONNECT " + front_target() + " HTTP/1.1\r\nX-Pad: " + std::string(9000, 'a') + "\r\n\r\n");
    EXPECT_EQ(reply.status, 431);
  }
}

TEST_F(EgressGatewayAttack, ASlowReaderKeepsTheGatewaysMemoryBounded) {
  ProxiedTlsClient client(gateway_->proxy_host(), gateway_->proxy_port());
  ASSERT_EQ(client.connect(front_target(), gateway_->credential("team-a", "agents", "s-8")).status,
            200);
  std::string error;
  ASSERT_TRUE(client.handshake("allowed.test", ca_->pem(), "allowed.test", &error)) << error;
  const long rss_before = gateway_->rss_kib();
  const auto flooded_before = front_->flooded_bytes();
  ASSERT_TRUE(client.write("FLOOD\n"));
  // The client reads nothing for a while: the front can only fill the socket buffers and the
  // gateway's one chunk, then it stalls.
  std::this_thread::sleep_for(milliseconds(1500));
  const auto flooded = front_->flooded_bytes() - flooded_before;
  const long rss_during = gateway_->rss_kib();
  std::this_thread::sleep_for(milliseconds(500));
  const auto flooded_later = front_->flooded_bytes() - flooded_before;
  EXPECT_LT(flooded, 64u * 1024 * 1024) << "the upstream was never held back";
  EXPECT_LT(flooded_later - flooded, 1u * 1024 * 1024) << "still flowing with no reader";
  EXPECT_LT(rss_during - rss_before, 8 * 1024)
      << "RSS grew by " << (rss_during - rss_before) << " KiB while " << flooded << " bytes waited";
  // Reading again drains it: the tunnel was stalled, not broken.
  EXPECT_EQ(client.read_some(1 << 20).size(), 1u << 20);
}

TEST(EgressGatewayReload, ANewAllowListAppliesToNewConnectionsAndABadOneIsRefused) {
  ASSERT_EQ(geteuid(), 0u) << "the private /etc/hosts needs root (a mount namespace)";
  TestCa ca;
  const auto identity = ca.issue({"allowed.test"});
  TlsStandIn front(kFrontAddress, identity.first, identity.second);
  const std::string hosts = std::filesystem::temp_directory_path() /
                            ("perimeter-egress-reload-hosts-" + std::to_string(getpid()));
  std::ofstream(hosts) << hosts_file_text();
  GatewayProcessOptions options;
  options.hosts_file = hosts;
  options.drain_seconds = 1;
  GatewayProcess gateway(config_text(front.port(), 1), options);
  const std::string target = "allowed.test:" + std::to_string(front.port());
  auto status = [&] {
    ProxiedTlsClient client(gateway.proxy_host(), gateway.proxy_port());
    return client.connect(target, gateway.credential("team-a", "agents", "r")).status;
  };
  EXPECT_EQ(status(), 200);
  // A tunnel opened under the old list stays open across the reload.
  ProxiedTlsClient open_tunnel(gateway.proxy_host(), gateway.proxy_port());
  ASSERT_EQ(open_tunnel.connect(target, gateway.credential("team-a", "agents", "t")).status, 200);
  std::string error;
  ASSERT_TRUE(open_tunnel.handshake("allowed.test", ca.pem(), "allowed.test", &error)) << error;

  gateway.rewrite_config(config_text(front.port(), 1, /*allow_front=*/false));
  gateway.reload();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int after = 0;
  while ((after = status()) == 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(after, 403);
  ASSERT_TRUE(open_tunnel.write("PING\n"));
  EXPECT_EQ(open_tunnel.read_to_end(), "PONG\n");

  // Not YAML: refused whole, the last good list stays.
  gateway.rewrite_config("environments: [");
  gateway.reload();
  const auto log_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (gateway.log().find("config reload refused") == std::string::npos &&
         std::chrono::steady_clock::now() < log_deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_NE(gateway.log().find("config reload refused"), std::string::npos) << gateway.log();
  EXPECT_EQ(status(), 403);
  const auto metrics =
      process::run_shell("curl -s http://" + gateway.metrics_address() + "/metrics");
  EXPECT_NE(metrics.output.find("perimeter_egress_config_reloads_total{result=\"error\"} 1"),
            std::string::npos)
      << metrics.output;
  EXPECT_NE(metrics.output.find("perimeter_egress_config_reloads_total{result=\"ok\"} 1"),
            std::string::npos);
  // SIGTERM with a tunnel still held open by its client: drained up to --drain-seconds, then cut,
  // and its audit line still written.
  const auto audit_before = gateway.audit_lines().size();
  EXPECT_TRUE(gateway.terminate_and_wait(milliseconds(10000)));
  const auto lines = gateway.audit_lines();
  ASSERT_EQ(lines.size(), audit_before + 1);
  EXPECT_EQ(lines.back()["session"], "t");
  EXPECT_EQ(lines.back()["decision"], "allowed");
  EXPECT_EQ(lines.back()["reason"], "shutdown");
  std::filesystem::remove(hosts);
}

}  // namespace
}  // namespace perimeter::testing

namespace perimeter::testing {
namespace {

TEST(EgressGatewayLimits, ConnectionsPastMaxConnectionsGet503AndAreCounted) {
  GatewayProcess gateway(
      "listen: 127.0.0.1:0\n"
      "metrics_listen: 127.0.0.1:0\n"
      "max_connections: 1\n"
      "environments: []\n",
      GatewayProcessOptions{});
  // The first connection holds the only slot with a head it never finishes; the gateway accepts
  // in order, so it is registered before the second is accepted.
  ProxiedTlsClient holder(gateway.proxy_host(), gateway.proxy_port());
  ASSERT_TRUE(holder.write_raw("CONNECT allowed.test:443 HTTP/1.1\r\n"));
  ProxiedTlsClient refused(gateway.proxy_host(), gateway.proxy_port());
  const auto reply = refused.connect("allowed.test:443", gateway.credential("a", "b", "c"));
  EXPECT_EQ(reply.status, 503) << reply.head;
  const auto lines = gateway.wait_for_audit_lines(1, milliseconds(5000));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["reason"], "max_connections");
  const auto metrics =
      process::run_shell("curl -s http://" + gateway.metrics_address() + "/metrics");
  EXPECT_NE(metrics.output.find("perimeter_egress_max_connections_refusals_total 1"),
            std::string::npos)
      << metrics.output;
}

}  // namespace
}  // namespace perimeter::testing

namespace perimeter::testing {
namespace {

TEST(EgressGatewayLimits, AnIdleTunnelIsClosedAfterIdleTimeout) {
  ASSERT_EQ(geteuid(), 0u) << "the private /etc/hosts needs root (a mount namespace)";
  TestCa ca;
  const auto identity = ca.issue({"allowed.test"});
  TlsStandIn front(kFrontAddress, identity.first, identity.second);
  const std::string hosts = std::filesystem::temp_directory_path() /
                            ("perimeter-egress-idle-hosts-" + std::to_string(getpid()));
  std::ofstream(hosts) << hosts_file_text();
  GatewayProcessOptions options;
  options.hosts_file = hosts;
  GatewayProcess gateway(
      "listen: 127.0.0.1:0\n"
      "idle_timeout_ms: 300\n"
      "testing_allow_loopback_upstreams: true\n"
      "environments:\n"
      "  - name: team-a/agents\n"
      "    allow:\n"
      "      - {host: allowed.test, ports: [" +
          std::to_string(front.port()) + "]}\n",
      options);
  ProxiedTlsClient client(gateway.proxy_host(), gateway.proxy_port());
  ASSERT_EQ(client
                .connect("allowed.test:" + std::to_string(front.port()),
                         gateway.credential("team-a", "agents", "idle"))
                .status,
            200);
  std::string error;
  ASSERT_TRUE(client.handshake("allowed.test", ca.pem(), "allowed.test", &error)) << error;
  // Neither side sends anything more: the gateway closes the tunnel.
  EXPECT_TRUE(client.closed_by_peer(5000));
  const auto lines = gateway.wait_for_audit_lines(1, milliseconds(5000));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["decision"], "allowed");
  EXPECT_EQ(lines[0]["reason"], "idle_timeout");
  std::filesystem::remove(hosts);
}

}  // namespace
}  // namespace perimeter::testing
