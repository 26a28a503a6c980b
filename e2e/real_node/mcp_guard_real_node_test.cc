// perimeter-mcp-guard on the real node: server-everything runs in a pod of its own (an image built
// locally from the pinned npm install), and the guard runs in a pod made from what the McpTunnel
// controller renders for a gateway (its guard container, guard.yaml in the gateway ConfigMap, the
// pod's security context) on kubelet + containerd + runc. The official MCP SDK client on the host
// reaches the server through the guard pod, the way mcp-proxy does beside it: on the pod's
// loopback (entered with nsenter, as nothing outside the pod may reach a guard listener). Results
// equal a direct connection; a denied tool is hidden and refused there too; every call leaves its
// audit line in the pod's log; and the guard's listener cannot be reached from outside the pod.
//
// Shares the real-node cluster of real_node_e2e_test (real_node_cluster_options()). Needs root.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "controllers/mcptunnel/gateway.h"
#include "controllers/mcptunnel/mcp_tunnel.h"
#include "kube/client_metrics.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/real_node.h"
#include "mcpguard/mcp_peers.h"
#include "real_node_cluster.h"

namespace perimeter::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kEverythingPort = 3001;  // PORT in the image's environment
// Two routes to the same server: one with no tool policy, one that denies get-sum.
constexpr const char* kOpenRoute = "everything";
constexpr const char* kRestrictedRoute = "restricted";

// Whether a TCP connection to ip:port from this process's network namespace is accepted (within
// 2 s); `error` gets errno otherwise.
bool tcp_accepts(const std::string& ip, int port, int* error = nullptr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval timeout{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &address.sin_addr);
  const bool accepted =
      ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  if (!accepted && error != nullptr) *error = errno;
  ::close(fd);
  return accepted;
}

// The network namespace of a running pod, from any of its processes ("" when none is found).
std::string pod_network_namespace(const std::string& uid) {
  const auto pids = pod_processes(uid);
  return pids.empty() ? "" : "/proc/" + std::to_string(pids.front()) + "/ns/net";
}

// server-everything as a user would run it under PodSecurity `restricted`.
json everything_pod() {
  json spec = {
      {"automountServiceAccountToken", false},
      {"enableServiceLinks", false},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", 65532},
        {"runAsGroup", 65532},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
      {"containers",
       {{{"name", "server"},
         {"image", kMcpEverythingImage},
         {"imagePullPolicy", "Never"},
         {"ports", {{{"containerPort", kEverythingPort}, {"name", "mcp"}}}},
         {"readinessProbe", {{"tcpSocket", {{"port", kEverythingPort}}}, {"periodSeconds", 1}}},
         {"securityContext",
          {{"allowPrivilegeEscalation", false},
           {"readOnlyRootFilesystem", true},
           {"capabilities", {{"drop", {"ALL"}}}}}},
         {"volumeMounts", {{{"name", "tmp"}, {"mountPath", "/tmp"}}}}}}},
      {"volumes", {{{"name", "tmp"}, {"emptyDir", json::object()}}}}};
  spec.update(real_node_placement());
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", "everything"}, {"labels", {{"app", "everything"}}}}},
          {"spec", spec}};
}

// An McpTunnel with two URL routes to the server, one with a tool policy, as a user writes it.
mcptunnel::McpTunnel tunnel_in(const std::string& ns, const std::string& upstream) {
  return mcptunnel::parse_mcp_tunnel(json{
      {"metadata",
       {{"name", "tickets"}, {"namespace", ns}, {"uid", "real-node-guard"}, {"generation", 1}}},
      {"spec",
       {{"tunnel", {{"id", "tnl_real_node"}}},
        {"credentials",
         {{"mode", "WorkloadIdentity"},
          {"workloadIdentity",
           {{"federationRuleId", "fdrl_1"},
            {"organizationId", "org"},
            {"serviceAccountId", "svac_1"}}}}},
        {"routes",
         {{{"name", kOpenRoute}, {"url", upstream}},
          {{"name", kRestrictedRoute},
           {"url", upstream},
           // "get-su?" matches get-sum and no other server-everything tool.
           {"policy", {{"tools", {{"deny", {"get-su?"}}}}}}}}}}}});
}

class McpGuardRealNodeTest : public RealNodeTest {
 protected:
  void TearDown() override {
    if (HasFailure() && transport_) {
      for (const char* pod : {"everything", "gateway"}) {
        try {
          std::cerr << "---- pod " << pod << " ----\n"
                    << client(kube::resources::pods())->get(ns_, pod).dump(2).substr(0, 6000)
                    << "\n---- its log ----\n"
                    << pod_log(pod).substr(0, 8000) << "\n";
        } catch (const std::exception& e) {
          std::cerr << "---- pod " << pod << ": " << e.what() << "\n";
        }
      }
    }
    RealNodeTest::TearDown();
  }

  // The pod once Ready (null, and the test failed, when it never is).
  json wait_ready(const std::string& name) {
    json pod;
    eventually(
        [&] {
          pod = client(kube::resources::pods())->get(ns_, name);
          for (const auto& condition :
               pod.value("status", json::object()).value("conditions", json::array())) {
            if (condition.value("type", "") == "Ready") return condition["status"] == "True";
          }
          return false;
        },
        seconds(180), "pod " + name + " to be Ready");
    return pod;
  }

  // The pod's log as a user reads it: through the apiserver, which fetches it from the kubelet.
  std::string pod_log(const std::string& pod, const std::string& container = "") {
    kube::HttpRequest request;
    request.method = "GET";
    request.path_and_query = "/api/v1/namespaces/" + ns_ + "/pods/" + pod + "/log" +
                             (container.empty() ? "" : "?container=" + container);
    const kube::HttpResponse response = transport_->send(request);
    return response.status == 200 ? response.body : "";
  }

  // The guard's audit lines so far (stdout, in the same log as its stderr).
  std::vector<json> audit_lines() {
    std::vector<json> lines;
    std::istringstream log(pod_log("gateway", "mcp-guard"));
    for (std::string line; std::getline(log, line);) {
      json parsed = json::parse(line, nullptr, false);
      if (parsed.is_object() && parsed.value("type", "") == "perimeter.mcp-audit.v1") {
        lines.push_back(std::move(parsed));
      }
    }
    return lines;
  }
};

TEST_F(McpGuardRealNodeTest, TheSdkClientReachesServerEverythingThroughTheRenderedGuardPod) {
  testing::McpPeers peers;
  ASSERT_NO_FATAL_FAILURE(testing::find_mcp_peers(&peers));
  testing::TempDir scratch;

  // (1) server-everything in its pod; the host reaches it directly, as the baseline.
  client(kube::resources::pods())->create(ns_, everything_pod());
  const json everything = wait_ready("everything");
  ASSERT_FALSE(everything.is_null());
  const std::string server_ip = everything["status"].value("podIP", "");
  ASSERT_FALSE(server_ip.empty()) << everything.dump(2);
  const std::string upstream = "http://" + server_ip + ":" + std::to_string(kEverythingPort);
  json direct_full, direct_deny;
  ASSERT_NO_FATAL_FAILURE(testing::run_sdk_driver(peers, upstream + "/mcp", {"full", "rn-marker"},
                                                  scratch.path(), &direct_full));
  ASSERT_NO_FATAL_FAILURE(testing::run_sdk_driver(
      peers, upstream + "/mcp", {"deny", "get-sum", "echo"}, scratch.path(), &direct_deny));

  // (2) The gateway's guard, exactly as the McpTunnel controller renders it: the ConfigMap
  // (guard.yaml) and the pod template's guard container, volumes and security context. The
  // gateway's other two containers (mcp-proxy, cloudflared) pull public images this machine
  // cannot reach; the host stands in for mcp-proxy on the pod's loopback below.
  const mcptunnel::McpTunnel tunnel = tunnel_in(ns_, upstream);
  mcptunnel::GatewayInputs inputs;
  inputs.domain = "rn.tunnels.example.com";
  for (const char* name : {kOpenRoute, kRestrictedRoute}) {
    mcptunnel::ResolvedRoute route;
    route.name = name;
    route.upstream = upstream;
    route.ip = server_ip;
    route.port = kEverythingPort;
    inputs.routes.push_back(route);
  }
  inputs.tls_secret_name = "tickets-tls";
  inputs.token_secret_name = "tickets-token";
  inputs.token_secret_key = "token";
  inputs.token_id = "token-v1";

  json config_map = mcptunnel::build_config_map(tunnel, inputs);
  config_map["metadata"].erase("ownerReferences");  // no McpTunnel exists to own it
  client(kube::resources::config_maps())->create(ns_, config_map);

  const json deployment = mcptunnel::build_deployment(tunnel, inputs);
  json pod_spec = deployment["spec"]["template"]["spec"];
  json guard_container;
  for (const auto& container : pod_spec["containers"]) {
    if (container["name"] == "mcp-guard") guard_container = container;
  }
  ASSERT_TRUE(guard_container.is_object()) << "the rendered gateway has no guard container";
  EXPECT_EQ(guard_container.value("image", ""), testing::kGuardImage)
      << "the controller's default guard image is not the one the build imports";
  std::set<std::string> mounted;
  for (const auto& mount : guard_container["volumeMounts"]) mounted.insert(mount["name"]);
  json volumes = json::array();
  for (const auto& volume : pod_spec["volumes"]) {
    if (mounted.count(volume["name"])) volumes.push_back(volume);
  }
  pod_spec["containers"] = json::array({guard_container});
  pod_spec["volumes"] = volumes;
  pod_spec.update(real_node_placement());
  client(kube::resources::pods())
      ->create(ns_, {{"apiVersion", "v1"},
                     {"kind", "Pod"},
                     {"metadata",
                      {{"name", "gateway"},
                       {"labels", deployment["spec"]["template"]["metadata"]["labels"]}}},
                     {"spec", pod_spec}});
  const json gateway = wait_ready("gateway");
  ASSERT_FALSE(gateway.is_null());
  const std::string gateway_ip = gateway["status"].value("podIP", "");
  const std::string netns = pod_network_namespace(gateway["metadata"]["uid"]);
  ASSERT_FALSE(netns.empty()) << "no process of the gateway pod found in /proc";
  const auto guard_url = [&](const char* route) {
    return "http://127.0.0.1:" + std::to_string(mcptunnel::guard_route_port(tunnel, route)) +
           "/mcp";
  };
  const std::vector<std::string> in_pod = {"nsenter", "--net=" + netns};

  // (3) Through the guard pod's open route: the same results as directly, feature by feature.
  json guarded_full;
  ASSERT_NO_FATAL_FAILURE(testing::run_sdk_driver(
      peers, guard_url(kOpenRoute), {"full", "rn-marker"}, scratch.path(), &guarded_full, in_pod));
  EXPECT_EQ(guarded_full["results"], direct_full["results"])
      << "through the guard pod differs from direct:"
      << testing::describe_differences(direct_full["results"], guarded_full["results"]);

  // (4) The restricted route's policy holds there: get-sum is absent from tools/list and
  // refused; echo works.
  json guarded_deny;
  ASSERT_NO_FATAL_FAILURE(testing::run_sdk_driver(peers, guard_url(kRestrictedRoute),
                                                  {"deny", "get-sum", "echo"}, scratch.path(),
                                                  &guarded_deny, in_pod));
  const json& plain = direct_deny["results"];
  const json& results = guarded_deny["results"];
  ASSERT_EQ(plain["denied"]["content"][0]["text"], "The sum of 1 and 2 is 3.")
      << "directly, get-sum works: the refusal below is the guard's doing";
  json expected_tools = json::array();
  for (const json& name : plain["tools"]) {
    if (name != "get-sum") expected_tools.push_back(name);
  }
  EXPECT_EQ(results["tools"], expected_tools) << "tools/list through the guard pod";
  EXPECT_EQ(results["denied"].value("error", json::object()).value("code", 0), -32001)
      << results.dump();
  EXPECT_EQ(results["allowed"], plain["allowed"]);

  // (5) Every request the client sent has its audit line in the pod's log, the denied call
  // included, and no argument text at the default level.
  const std::size_t sent = guarded_full["sent"].size() + guarded_deny["sent"].size();
  std::vector<json> audit;
  eventually(
      [&] {
        audit = audit_lines();
        std::size_t client_lines = 0;
        for (const json& line : audit) client_lines += line.value("direction", "") == "client";
        return client_lines >= sent;
      },
      seconds(30), "an audit line per request in the guard pod's log");
  std::size_t client_lines = 0, denied_lines = 0;
  for (const json& line : audit) {
    const std::string route = line.value("route", "");
    EXPECT_TRUE(route == kOpenRoute || route == kRestrictedRoute) << line.dump();
    EXPECT_EQ(line.dump().find("rn-marker"), std::string::npos) << "argument text: " << line.dump();
    if (line.value("direction", "") == "client") ++client_lines;
    if (line.value("name", json()) == "get-sum" && line.value("method", "") == "tools/call") {
      if (line.value("decision", "") != "denied") {
        EXPECT_EQ(route, kOpenRoute) << "get-sum allowed on the restricted route: " << line.dump();
        continue;
      }
      ++denied_lines;
      EXPECT_EQ(route, kRestrictedRoute) << line.dump();
      EXPECT_TRUE(line["upstream_status"].is_null()) << "the server was asked: " << line.dump();
    }
  }
  EXPECT_EQ(client_lines, sent) << "one audit line per request the SDK client sent";
  EXPECT_EQ(denied_lines, 1u);

  // (6) The attack: from outside the pod (the host, on the same bridge), the guard's route
  // listener is not reachable, while the pod itself is (its metrics port, which the kubelet
  // probes). Only the gateway's own mcp-proxy, on loopback, can send through the guard.
  EXPECT_TRUE(tcp_accepts(gateway_ip, mcptunnel::kGuardMetricsPort))
      << "the gateway pod is not reachable from the host at all: the check below would prove "
         "nothing";
  int error = 0;
  EXPECT_FALSE(
      tcp_accepts(gateway_ip, mcptunnel::guard_route_port(tunnel, kRestrictedRoute), &error))
      << "the guard's route listener accepted a connection from outside the pod";
  EXPECT_EQ(error, ECONNREFUSED) << std::strerror(error);
}

}  // namespace
}  // namespace perimeter::e2e
