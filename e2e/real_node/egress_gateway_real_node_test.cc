// Gateway egress mode on the real node (docs/egress.md, "The gateway mode"): the egress gateway
// runs in a pod made from the operator's own objects (its Deployment, ConfigMap, key Secret,
// Service and NetworkPolicy as egress_gateway.h builds them), and a runner pod sits under the
// operator's gateway-mode NetworkPolicy (build_network_policy with RunnerEgress pointed at that
// gateway), on kubelet + containerd + runc with kube-router enforcing NetworkPolicy. From inside
// the runner pod's network namespace (setns on a thread, as the pod's processes would connect):
// a CONNECT with the session's credential reaches a TLS stand-in for the API and for an allowed
// host, and a real OpenSSL handshake with that SNI completes end to end; an unlisted host gets
// 403; a listed name that resolves to the metadata address gets 403; a CONNECT to an allowed host
// whose ClientHello names another host is cut before a byte reaches the stand-in; direct
// connections to the stand-in, to 169.254.169.254 and to port 53 outside the cluster's DNS pods
// are refused by the policy, while a pod without the policy makes each of them (the control:
// without the policy, the test fails). Every CONNECT leaves one audit line in the gateway pod's
// log with its decision and reason.
//
// The "internet" is a network namespace this test creates, routed from the node's bridge only
// (as in network_policy_real_node_test.cc): the stand-ins listen on 198.18.<r>.2 and on
// 169.254.169.254 there, so no address outside this machine is ever used. 198.18.0.0/15 (RFC
// 2544 benchmarking) is not in the gateway's forbidden table (address_policy.cc), so the gateway
// dials it as it would a public address; 169.254.169.254 is, which is what the metadata check
// needs. The stand-in names are served by the node's cluster DNS (CoreDNS behind kube-system/
// kube-dns, from the node's hosts file, docs/development.md "The cluster DNS on the real node"):
// the gateway pod resolves them as it would public names, and the runner pod reaches the gateway
// at its Service's ClusterIP (kube-proxy), as HTTPS_PROXY names it.
//
// Shares the real-node cluster of real_node_e2e_test (real_node_cluster_options()). Needs root.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/egress_gateway.h"
#include "controllers/agentenvironment/runner_egress.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/base64.h"
#include "egressgateway/tls_peers.h"
#include "localcluster/real_node.h"
#include "pod_netns.h"
#include "process/process.h"
#include "real_node_cluster.h"
#include "stand_in_network.h"

namespace perimeter::e2e {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kMetadataPort = 80;
constexpr int kDnsPort = 53;
// The stand-in names. The front's certificate holds the API's name, the allowed host's and
// other.perimeter.test: a client that reached it with SNI other.perimeter.test would be served
// (a shared front, as a CDN is), which is what makes the SNI check matter.
constexpr const char* kApiHost = "api.perimeter.test";
constexpr const char* kAllowedHost = "files.perimeter.test";
constexpr const char* kFrontedHost = "other.perimeter.test";
constexpr const char* kUnlistedHost = "unlisted.perimeter.test";
// On the allow-list, but resolving to the metadata address: the gateway refuses it by address.
constexpr const char* kMetadataHost = "metadata.perimeter.test";

bool blocked(Outcome outcome) {
  return outcome == Outcome::kTimedOut || outcome == Outcome::kRefused;
}

// Repeats `probe` until its outcome is the one wanted (the enforcer applies a new pod's chain
// within a second or two of seeing it), for at most 20 s; returns the last outcome.
template <typename Probe>
Outcome settle(Probe probe, bool connects) {
  Outcome outcome = Outcome::kError;
  const auto deadline = std::chrono::steady_clock::now() + seconds(20);
  do {
    outcome = probe();
    if ((outcome == Outcome::kConnected) == connects && outcome != Outcome::kError) break;
    std::this_thread::sleep_for(milliseconds(500));
  } while (std::chrono::steady_clock::now() < deadline);
  return outcome;
}

// One DNS query for `name`'s A record, over UDP from inside a network namespace to `server`:53.
// The first address of the answer, "" when none came within `limit` or it had none.
std::string dns_a_from(const std::string& netns_path, const std::string& server,
                       const std::string& name, milliseconds limit = milliseconds(2000)) {
  std::string query = {'\x12', '\x34', '\x01', '\x00', '\x00', '\x01',
                       '\x00', '\x00', '\x00', '\x00', '\x00', '\x00'};
  std::istringstream labels(name);
  for (std::string label; std::getline(labels, label, '.');) {
    query.push_back(static_cast<char>(label.size()));
    query += label;
  }
  query += std::string("\x00\x00\x01\x00\x01", 5);  // root, type A, class IN
  std::string answer_address;
  in_netns(netns_path, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    const sockaddr_in address = address_of(server, kDnsPort);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        ::send(fd, query.data(), query.size(), 0) < 0) {
      ::close(fd);
      return;
    }
    pollfd watch{fd, POLLIN, 0};
    unsigned char reply[512];
    ssize_t count = -1;
    if (::poll(&watch, 1, static_cast<int>(limit.count())) > 0) {
      count = ::recv(fd, reply, sizeof(reply), MSG_DONTWAIT);
    }
    ::close(fd);
    // Header, the question echoed back, then answers: find the first A record's 4 bytes.
    if (count < static_cast<ssize_t>(query.size()) || reply[0] != 0x12 || reply[1] != 0x34) return;
    const int answers = (reply[6] << 8) | reply[7];
    size_t at = query.size();
    for (int i = 0; i < answers && at + 12 <= static_cast<size_t>(count); ++i) {
      if ((reply[at] & 0xc0) == 0xc0) {
        at += 2;  // a pointer to the question's name
      } else {
        while (at < static_cast<size_t>(count) && reply[at] != 0) at += reply[at] + 1;
        ++at;
      }
      const int type = (reply[at] << 8) | reply[at + 1];
      const int length = (reply[at + 8] << 8) | reply[at + 9];
      at += 10;
      if (type == 1 && length == 4 && at + 4 <= static_cast<size_t>(count)) {
        answer_address = std::to_string(reply[at]) + "." + std::to_string(reply[at + 1]) + "." +
                         std::to_string(reply[at + 2]) + "." + std::to_string(reply[at + 3]);
        return;
      }
      at += static_cast<size_t>(length);
    }
  });
  return answer_address;
}

// 32 random bytes as hex, the way the operator makes the gateway's key.
std::string random_key() {
  std::random_device device;
  std::string key;
  const char* digits = "0123456789abcdef";
  for (int i = 0; i < 64; ++i) key.push_back(digits[device() % 16]);
  return key;
}

// The Proxy-Authorization a client derives from HTTPS_PROXY's user information
// ("http://user:password@host:port").
std::string proxy_authorization(const std::string& proxy_url) {
  const std::string scheme = "http://";
  const auto at = proxy_url.rfind('@');
  if (proxy_url.rfind(scheme, 0) != 0 || at == std::string::npos) return "";
  return "Basic " + base64_encode(proxy_url.substr(scheme.size(), at - scheme.size()));
}

bool is_ready(const json& pod) {
  for (const auto& condition :
       pod.value("status", json::object()).value("conditions", json::array())) {
    if (condition.value("type", "") == "Ready") return condition.value("status", "") == "True";
  }
  return false;
}

class EgressGatewayRealNodeTest : public RealNodeTest {
 protected:
  struct RunningPod {
    std::string name;
    std::string ip;
    std::string netns;  // /proc/<pid>/ns/net of one of its processes
  };

  void TearDown() override {
    if (HasFailure() && transport_ && !gateway_pod_.empty()) {
      try {
        // The client's connection may have gone idle while the test waited: one request first.
        try {
          list(kube::resources::pods());
        } catch (const std::exception&) {
        }
        std::cerr << "---- the gateway pod ----\n"
                  << client(kube::resources::pods())
                         ->get(ns_, gateway_pod_)
                         .value("status", json::object())
                         .dump(2)
                         .substr(0, 6000)
                  << "\n---- its log ----\n"
                  << pod_log(ns_, gateway_pod_).substr(0, 12000)
                  << "\n---- its previous container's log ----\n"
                  << pod_log(ns_, gateway_pod_, "?previous=true").substr(0, 4000) << "\n";
      } catch (const std::exception& e) {
        std::cerr << "---- the gateway pod: " << e.what() << "\n";
      }
    }
    RealNodeTest::TearDown();
  }

  // The pod once it runs, with its address and network namespace.
  RunningPod wait_running(const std::string& ns, const std::string& name) {
    RunningPod running{name, "", ""};
    eventually(
        [&] {
          const json pod = client(kube::resources::pods())->get(ns, name);
          const json status = pod.value("status", json::object());
          if (status.value("phase", "") != "Running") return false;
          running.ip = status.value("podIP", "");
          const auto pids = pod_processes(pod["metadata"]["uid"].get<std::string>());
          if (pids.empty() || running.ip.empty()) return false;
          running.netns = "/proc/" + std::to_string(pids.front()) + "/ns/net";
          return true;
        },
        seconds(90), "pod " + ns + "/" + name + " to run");
    return running;
  }

  // The pod's log as a user reads it: through the apiserver, which fetches it from the kubelet.
  std::string pod_log(const std::string& ns, const std::string& pod,
                      const std::string& query = "") {
    kube::HttpRequest request;
    request.method = "GET";
    request.path_and_query = "/api/v1/namespaces/" + ns + "/pods/" + pod + "/log" + query;
    const kube::HttpResponse response = transport_->send(request);
    return response.status == 200 ? response.body : "";
  }

  // The gateway's audit lines (its stdout; its log lines on stderr are not JSON with a decision).
  std::vector<json> audit_lines() {
    std::vector<json> lines;
    std::istringstream log(pod_log(ns_, gateway_pod_));
    for (std::string line; std::getline(log, line);) {
      json parsed = json::parse(line, nullptr, false);
      if (parsed.is_object() && parsed.contains("decision") && parsed.contains("reason")) {
        lines.push_back(std::move(parsed));
      }
    }
    return lines;
  }

  std::string gateway_pod_;
};

// A client through the gateway, made from inside `netns`: TCP to the gateway, then CONNECT.
std::unique_ptr<testing::ProxiedTlsClient> proxied_client(const std::string& netns,
                                                          const std::string& gateway_ip,
                                                          int gateway_port) {
  std::unique_ptr<testing::ProxiedTlsClient> made;
  in_netns(netns,
           [&] { made = std::make_unique<testing::ProxiedTlsClient>(gateway_ip, gateway_port); });
  return made;
}

TEST_F(EgressGatewayRealNodeTest, RunnerPodReachesListedHostsThroughTheGatewayPodAndNothingElse) {
  const auto started = std::chrono::steady_clock::now();
  wait_for_cluster_dns();
  StandInNetwork internet(node_["bridge"].get<std::string>());
  const std::string standin_ip = internet.address();
  // The stand-in names, served by the cluster DNS for this test only.
  add_dns_hosts({{standin_ip, kApiHost},
                 {standin_ip, kAllowedHost},
                 {standin_ip, kFrontedHost},
                 {standin_ip, kUnlistedHost},
                 {kMetadataAddress, kMetadataHost}});

  // (1) The stand-ins: one TLS front for the API, the allowed host and other.perimeter.test;
  // a listener on the metadata address; port 53 (UDP and TCP) on the stand-in address, outside
  // the cluster's DNS.
  testing::TestCa ca;
  const auto identity = ca.issue({kApiHost, kAllowedHost, kFrontedHost});
  std::unique_ptr<testing::TlsStandIn> front;
  in_netns(internet.path(), [&] {
    front = std::make_unique<testing::TlsStandIn>(standin_ip, identity.first, identity.second);
  });
  ASSERT_TRUE(front) << "the TLS stand-in did not start";
  const int port = front->port();
  const Listeners::Endpoint metadata{kMetadataAddress, kMetadataPort, false};
  const Listeners::Endpoint outside_dns_udp{standin_ip, kDnsPort, true};
  const Listeners::Endpoint outside_dns_tcp{standin_ip, kDnsPort, false};
  Listeners internet_listeners(internet.path(), {metadata, outside_dns_udp, outside_dns_tcp});

  // (2) The environment, and the operator's gateway-mode settings for runner pods.
  agentenvironment::AgentEnvironment env;
  env.name = "gateway-egress";
  env.namespace_ = ns_;
  env.uid = "gateway-egress-uid";
  env.api_base_url = "https://" + std::string(kApiHost) + ":" + std::to_string(port);
  env.egress_allowed_hosts = {{kAllowedHost, {port}}, {kMetadataHost, {kMetadataPort}}};
  agentenvironment::EgressGatewaySettings gateway;
  gateway.namespace_ = ns_;
  gateway.replicas = 1;
  ASSERT_EQ(gateway.image, testing::kEgressGatewayImage)
      << "the operator's default gateway image is not the one the build imports";
  const std::string key = random_key();
  agentenvironment::RunnerEgress egress;
  egress.mode = agentenvironment::EgressMode::kGateway;
  egress.credentials_key = key;
  agentenvironment::point_runners_at(gateway, egress);

  // (3) The gateway's objects, as the operator renders them.
  client(kube::resources::config_maps())
      ->create(ns_, agentenvironment::build_egress_gateway_config_map(
                        gateway, agentenvironment::render_egress_gateway_config(gateway, {env})));
  client(kube::resources::secrets())
      ->create(ns_, agentenvironment::build_egress_gateway_key_secret(gateway, key));
  client(kube::resources::services())
      ->create(ns_, agentenvironment::build_egress_gateway_service(gateway));
  client(kube::resources::network_policies())
      ->create(ns_, agentenvironment::build_egress_gateway_network_policy(gateway));
  json deployment = agentenvironment::build_egress_gateway_deployment(gateway);
  // Added by the test, not rendered by the operator: the real node takes only pods that select
  // and tolerate it.
  deployment["spec"]["template"]["spec"].update(real_node_placement());
  client(kube::resources::deployments())->create(ns_, deployment);

  // (4) The runner's policy as the operator renders it in gateway mode; no AgentEnvironment
  // object exists here, so no owner reference (the garbage collector would remove the policy).
  json runner_policy = agentenvironment::build_network_policy(env, egress);
  runner_policy["metadata"].erase("ownerReferences");
  client(kube::resources::network_policies())->create(ns_, runner_policy);

  // (5) Pods: a runner pod (the labels the operator gives runner pods, which both policies
  // select) and a control pod under no policy. The cluster's DNS pod is the node's CoreDNS, which
  // the runner's policy selects by the labels the operator is configured with.
  client(kube::resources::pods())
      ->create(ns_, runner_image_pod("runner", agentenvironment::environment_labels(env),
                                     {"sleep", "600"}));
  client(kube::resources::pods())
      ->create(ns_, runner_image_pod("control", {{"role", "control"}}, {"sleep", "600"}));
  const RunningPod runner = wait_running(ns_, "runner");
  const RunningPod control = wait_running(ns_, "control");
  ASSERT_FALSE(runner.netns.empty() || control.netns.empty());
  std::string dns_ip;
  {
    std::string selector;
    for (const auto& [label, value] : egress.cluster_dns.labels) {
      selector += (selector.empty() ? "" : ",") + label + "=" + value;
    }
    kube::ListOptions options;
    options.label_selector = selector;
    const json dns_pods = client(kube::resources::pods())
                              ->list(egress.cluster_dns.namespace_, options)
                              .value("items", json::array());
    ASSERT_EQ(dns_pods.size(), 1u) << "the node's one cluster DNS pod, selected by " << selector;
    dns_ip = dns_pods[0].value("status", json::object()).value("podIP", "");
  }
  const std::string dns_service_ip = node_.value("cluster_dns_ip", "");
  ASSERT_FALSE(dns_ip.empty() || dns_service_ip.empty());

  // (6) The gateway pod is Ready (its readiness probe is the gateway's /healthz).
  json gateway_pod;
  ASSERT_TRUE(eventually(
      [&] {
        for (const json& pod : list(kube::resources::pods())) {
          const json labels = pod["metadata"].value("labels", json::object());
          if (labels.value("app.kubernetes.io/name", "") != gateway.name) continue;
          gateway_pod_ = pod["metadata"]["name"];
          if (is_ready(pod)) {
            gateway_pod = pod;
            return true;
          }
        }
        return false;
      },
      seconds(120), "the gateway pod to be Ready"));
  // The runner reaches the gateway at its Service's ClusterIP (kube-proxy sends it to the pod).
  const std::string gateway_pod_ip = gateway_pod["status"].value("podIP", "");
  ASSERT_FALSE(gateway_pod_ip.empty()) << gateway_pod.dump(2);
  const std::string gateway_ip =
      client(kube::resources::services())->get(ns_, gateway.name)["spec"].value("clusterIP", "");
  ASSERT_FALSE(gateway_ip.empty() || gateway_ip == "None");
  std::cerr << "gateway Ready "
            << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started)
                   .count()
            << " ms after the test's start\n";

  // (7) The control: a pod without the policy reaches the stand-in directly, the metadata
  // address, and port 53 outside the DNS pods (TCP and UDP). So the blocks below are the
  // policy's, not a dead route.
  const auto tcp = [](const RunningPod& pod, const std::string& ip, int to) {
    return [&pod, ip, to] { return tcp_from(pod.netns, ip, to); };
  };
  const auto udp = [](const RunningPod& pod, const std::string& ip, int to) {
    return [&pod, ip, to] { return udp_from(pod.netns, ip, to); };
  };
  EXPECT_EQ(settle(tcp(control, standin_ip, port), true), Outcome::kConnected);
  EXPECT_EQ(settle(tcp(control, kMetadataAddress, kMetadataPort), true), Outcome::kConnected);
  EXPECT_EQ(settle(tcp(control, standin_ip, kDnsPort), true), Outcome::kConnected);
  EXPECT_EQ(settle(udp(control, standin_ip, kDnsPort), true), Outcome::kConnected);
  EXPECT_TRUE(eventually([&] { return internet_listeners.saw(metadata, control.ip); }, seconds(10),
                         "the metadata listener to see the control pod"));

  // (8) The runner pod under its policy: the gateway's port and the DNS pods' port 53 are
  // reachable, and the cluster DNS answers it (the stand-in API's name, through the kube-dns
  // Service); the stand-in directly, the metadata address and port 53 anywhere else are not.
  EXPECT_EQ(settle(tcp(runner, gateway_ip, gateway.port), true), Outcome::kConnected);
  EXPECT_EQ(settle(tcp(runner, dns_ip, kDnsPort), true), Outcome::kConnected);
  std::string resolved;
  eventually(
      [&] {
        resolved = dns_a_from(runner.netns, dns_service_ip, kApiHost);
        return resolved == standin_ip;
      },
      seconds(20), "the cluster DNS to answer the runner pod with the stand-in's address");
  EXPECT_EQ(resolved, standin_ip);
  const Outcome direct = settle(tcp(runner, standin_ip, port), false);
  EXPECT_TRUE(blocked(direct)) << "the runner pod's direct connection to the stand-in "
                               << describe(direct);
  const Outcome to_metadata = settle(tcp(runner, kMetadataAddress, kMetadataPort), false);
  EXPECT_TRUE(blocked(to_metadata))
      << "the runner pod's connection to " << kMetadataAddress << " " << describe(to_metadata);
  const Outcome dns_tcp = settle(tcp(runner, standin_ip, kDnsPort), false);
  EXPECT_TRUE(blocked(dns_tcp)) << "the runner pod's TCP 53 outside the DNS pods "
                                << describe(dns_tcp);
  const Outcome dns_udp = settle(udp(runner, standin_ip, kDnsPort), false);
  EXPECT_TRUE(blocked(dns_udp)) << "the runner pod's UDP 53 outside the DNS pods "
                                << describe(dns_udp);
  EXPECT_FALSE(internet_listeners.saw(metadata, runner.ip));
  EXPECT_FALSE(internet_listeners.saw(outside_dns_udp, runner.ip));
  EXPECT_FALSE(internet_listeners.saw(outside_dns_tcp, runner.ip));

  // (9) Through the gateway, from the runner pod, each CONNECT with its own session's credential
  // (egress_proxy_url, what the runner gets as HTTPS_PROXY), so each has its own audit line.
  const auto credential = [&](const std::string& session) {
    return proxy_authorization(agentenvironment::egress_proxy_url(egress, env, session));
  };
  const std::string target_port = ":" + std::to_string(port);
  for (const char* host : {kApiHost, kAllowedHost}) {
    SCOPED_TRACE(host);
    const std::string session = std::string(host) == kApiHost ? "s-api" : "s-allowed";
    auto tunnel = proxied_client(runner.netns, gateway_ip, gateway.port);
    ASSERT_TRUE(tunnel);
    const testing::ConnectReply reply = tunnel->connect(host + target_port, credential(session));
    ASSERT_EQ(reply.status, 200) << reply.head << reply.body;
    std::string error;
    ASSERT_TRUE(tunnel->handshake(host, ca.pem(), host, &error)) << error;
    ASSERT_TRUE(tunnel->write("PING\n"));
    EXPECT_EQ(tunnel->read_some(5), "PONG\n");
  }
  EXPECT_EQ(front->handshakes(), 2);
  {
    const std::vector<std::string> names = front->server_names();
    EXPECT_EQ(names, (std::vector<std::string>{kApiHost, kAllowedHost}));
  }

  // A host not on the list: 403, and the gateway dials nothing.
  const int before_unlisted = front->settled_connections();
  {
    auto tunnel = proxied_client(runner.netns, gateway_ip, gateway.port);
    ASSERT_TRUE(tunnel);
    const testing::ConnectReply reply =
        tunnel->connect(kUnlistedHost + target_port, credential("s-unlisted"));
    EXPECT_EQ(reply.status, 403) << reply.head << reply.body;
  }
  EXPECT_EQ(front->settled_connections(), before_unlisted);

  // A listed name that resolves to the metadata address: 403, never dialled.
  {
    auto tunnel = proxied_client(runner.netns, gateway_ip, gateway.port);
    ASSERT_TRUE(tunnel);
    const testing::ConnectReply reply = tunnel->connect(
        kMetadataHost + std::string(":") + std::to_string(kMetadataPort), credential("s-metadata"));
    EXPECT_EQ(reply.status, 403) << reply.head << reply.body;
  }
  EXPECT_FALSE(internet_listeners.saw(metadata, gateway_pod_ip));

  // Domain fronting: CONNECT to the allowed host, ClientHello for other.perimeter.test. The
  // gateway dials the front before it answers 200, then cuts both sides on reading the hello:
  // the handshake fails and not one byte reaches the front.
  const int bytes_before = front->connections_with_bytes();
  const int handshakes_before = front->handshakes();
  {
    auto tunnel = proxied_client(runner.netns, gateway_ip, gateway.port);
    ASSERT_TRUE(tunnel);
    const testing::ConnectReply reply =
        tunnel->connect(kAllowedHost + target_port, credential("s-fronting"));
    ASSERT_EQ(reply.status, 200) << reply.head << reply.body;
    std::string error;
    EXPECT_FALSE(tunnel->handshake(kFrontedHost, ca.pem(), kFrontedHost, &error))
        << "a ClientHello for " << kFrontedHost << " went through a tunnel to " << kAllowedHost;
  }

  // (10) One audit line per CONNECT, with the decision and the reason (the tunnels above are
  // closed, so every line is written).
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> expected = {
      {"s-api", {"allowed", "ok"}},
      {"s-allowed", {"allowed", "ok"}},
      {"s-unlisted", {"denied", "not_allowed"}},
      {"s-metadata", {"denied", "forbidden_address"}},
      {"s-fronting", {"denied", "sni_mismatch"}}};
  std::vector<json> audit;
  const auto lines_of = [&](const std::string& session) {
    std::vector<json> found;
    for (const json& line : audit) {
      if (line.value("session", json()).is_string() && line["session"] == session) {
        found.push_back(line);
      }
    }
    return found;
  };
  eventually(
      [&] {
        audit = audit_lines();
        for (const auto& [session, outcome] : expected) {
          if (lines_of(session).empty()) return false;
        }
        return true;
      },
      seconds(30), "an audit line for every CONNECT in the gateway pod's log");
  for (const auto& [session, outcome] : expected) {
    SCOPED_TRACE(session);
    const std::vector<json> lines = lines_of(session);
    ASSERT_EQ(lines.size(), 1u) << "one audit line per connection";
    const json& line = lines.front();
    EXPECT_EQ(line.value("environment", json()), ns_ + "/" + env.name) << line.dump();
    EXPECT_EQ(line.value("decision", ""), outcome.first) << line.dump();
    EXPECT_EQ(line.value("reason", ""), outcome.second) << line.dump();
    // "<address>:<port>": the runner pod's own address, not translated on the way.
    EXPECT_EQ(line.value("client", "").rfind(runner.ip + ":", 0), 0u) << line.dump();
    if (outcome.first == "allowed") {
      EXPECT_GT(line.value("bytes_up", 0), 0) << line.dump();
      EXPECT_GT(line.value("bytes_down", 0), 0) << line.dump();
    } else {
      EXPECT_EQ(line.value("bytes_up", -1), 0) << line.dump();
    }
  }
  // The fronting attempt's hello never reached the front: no byte on any connection since.
  EXPECT_EQ(front->connections_with_bytes(), bytes_before);
  EXPECT_EQ(front->handshakes(), handshakes_before);

  // (11) The control for the SNI check: the front does serve other.perimeter.test to a client
  // that reaches it (the control pod, directly). Without the gateway's check, the fronting
  // handshake above would have succeeded.
  {
    auto direct_client = proxied_client(control.netns, standin_ip, port);
    ASSERT_TRUE(direct_client);
    std::string error;
    EXPECT_TRUE(direct_client->handshake(kFrontedHost, ca.pem(), kFrontedHost, &error)) << error;
  }
  // The front counts a handshake once the client's Finished arrives, just after the client's.
  EXPECT_TRUE(eventually([&] { return front->handshakes() == handshakes_before + 1; }, seconds(10),
                         "the front to count the direct handshake"));
  std::cerr << "done "
            << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started)
                   .count()
            << " ms after the test's start\n";
}

}  // namespace
}  // namespace perimeter::e2e
