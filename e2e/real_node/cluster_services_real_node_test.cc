// Services and the cluster DNS on the real node (docs/development.md, "Services on the real node"
// and "The cluster DNS on the real node"): kube-proxy sends a connection to a Service's ClusterIP
// to the pod behind it, and CoreDNS, in kube-system behind the kube-dns Service the kubelet
// names as every pod's nameserver, answers Service names and the stand-in names of the node's
// hosts file, and nothing else. Without kube-proxy no ClusterIP leads anywhere (nothing else on
// the node translates it), so the first test fails; without CoreDNS no name resolves in a pod.
//
// The server side is a listener the test opens inside a sleeping pod's network namespace (setns
// on a thread), recording the source address of every connection: a connection counts only when
// it arrived from the client pod's own address. Only the node's pod addresses and its service
// range are used. Shares the real-node cluster of real_node_e2e_test. Needs root.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "localcluster/real_node.h"
#include "pod_netns.h"
#include "process/process.h"
#include "real_node_cluster.h"

namespace perimeter::e2e {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kServerPort = 8080;
constexpr int kServicePort = 80;

class ClusterServicesRealNodeTest : public RealNodeTest {
 protected:
  struct RunningPod {
    std::string ip;
    std::string netns;   // /proc/<pid>/ns/net of one of its processes
    std::string rootfs;  // /proc/<pid>/root
  };

  RunningPod start_sleeping_pod(const std::string& name, const json& labels) {
    client(kube::resources::pods())
        ->create(ns_, runner_image_pod(name, labels, {"sleep", "600"}, "Always"));
    RunningPod running;
    eventually(
        [&] {
          const json pod = client(kube::resources::pods())->get(ns_, name);
          const json status = pod.value("status", json::object());
          if (status.value("phase", "") != "Running") return false;
          running.ip = status.value("podIP", "");
          const auto pids = pod_processes(pod["metadata"]["uid"].get<std::string>());
          if (pids.empty() || running.ip.empty()) return false;
          running.netns = "/proc/" + std::to_string(pids.front()) + "/ns/net";
          running.rootfs = "/proc/" + std::to_string(pids.front()) + "/root";
          return true;
        },
        seconds(90), "pod " + name + " to run");
    return running;
  }

  // A Service `name` in front of the pods labelled app=<name>, port 80 to their port 8080.
  // Returns its ClusterIP.
  std::string create_service(const std::string& name) {
    const json service = client(kube::resources::services())
                             ->create(ns_, {{"apiVersion", "v1"},
                                            {"kind", "Service"},
                                            {"metadata", {{"name", name}}},
                                            {"spec",
                                             {{"selector", {{"app", name}}},
                                              {"ports",
                                               {{{"port", kServicePort},
                                                 {"targetPort", kServerPort},
                                                 {"protocol", "TCP"}}}}}}});
    return service["spec"].value("clusterIP", "");
  }

  // Runs `script` with bash in a pod of its own until it ends (the test fails when it does not
  // within 90 s); returns its log, and its status when it did not end.
  std::string run_script(const std::string& name, const std::string& script) {
    client(kube::resources::pods())
        ->create(ns_, runner_image_pod(name, {{"role", "probe"}}, {"bash", "-c", script}, "Never"));
    json status;
    const bool ended = eventually(
        [&] {
          status = client(kube::resources::pods())->get(ns_, name).value("status", json::object());
          const std::string phase = status.value("phase", "");
          return phase == "Succeeded" || phase == "Failed";
        },
        seconds(90), "pod " + name + " to end");
    kube::HttpRequest request;
    request.method = "GET";
    request.path_and_query = "/api/v1/namespaces/" + ns_ + "/pods/" + name + "/log";
    const kube::HttpResponse response = transport_->send(request);
    return (response.status == 200 ? response.body : "") + (ended ? "" : status.dump(2));
  }
};

// The attack on nothing: a pod connects to another pod through its Service's ClusterIP. Only
// kube-proxy's rules make that address lead to the server pod; the server sees the client pod's
// own address (no masquerading of pod traffic, so NetworkPolicy still sees who connects).
TEST_F(ClusterServicesRealNodeTest, PodReachesAnotherPodThroughItsServiceClusterIp) {
  const RunningPod server = start_sleeping_pod("server", {{"app", "server"}});
  const RunningPod client_pod = start_sleeping_pod("client", {{"role", "client"}});
  const Listeners::Endpoint listener{server.ip, kServerPort, false};
  Listeners listeners(server.netns, {listener});
  const std::string cluster_ip = create_service("server");
  ASSERT_FALSE(cluster_ip.empty());
  ASSERT_NE(cluster_ip, server.ip);

  // The endpoint reaches the proxy's rules within a second or two of the EndpointSlice.
  Outcome outcome = Outcome::kError;
  const auto started = std::chrono::steady_clock::now();
  for (const auto deadline = started + seconds(30); std::chrono::steady_clock::now() < deadline;) {
    outcome = tcp_from(client_pod.netns, cluster_ip, kServicePort, milliseconds(1000));
    if (outcome == Outcome::kConnected) break;
    std::this_thread::sleep_for(milliseconds(200));
  }
  EXPECT_EQ(outcome, Outcome::kConnected)
      << "connecting from the client pod to the Service's ClusterIP " << cluster_ip << ":"
      << kServicePort << " " << describe(outcome);
  EXPECT_TRUE(eventually([&] { return listeners.saw(listener, client_pod.ip); }, seconds(10),
                         "the server pod to accept a connection from the client pod's address"));
  // An address of the service range no Service holds is not routed off the machine: the host's
  // routing decision for it, coming from a pod on the bridge, is "prohibited" (without the
  // node's rule it would be the host's default route), and the pod's connection goes nowhere.
  const std::string unused_ip = "10.0.0.254";
  for (const json& service :
       client(kube::resources::services())->list("").value("items", json::array())) {
    ASSERT_NE(service["spec"].value("clusterIP", ""), unused_ip) << "pick another address";
  }
  const process::ShellResult route =
      process::run_shell("ip route get " + unused_ip + " from " + client_pod.ip + " iif " +
                         node_.value("bridge", "?") + " 2>&1");
  EXPECT_NE(route.output.find("Permission denied"), std::string::npos) << route.output;
  EXPECT_EQ(route.output.find(" dev "), std::string::npos) << route.output;
  const Outcome untranslated = tcp_from(client_pod.netns, unused_ip, kServicePort);
  EXPECT_NE(untranslated, Outcome::kConnected) << "connecting to " << unused_ip;
  std::cerr << "ClusterIP reachable "
            << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started)
                   .count()
            << " ms after the Service was created\n";
}

// A pod's own resolver (glibc, through the resolv.conf the kubelet writes) finds a Service by its
// short and full names and a stand-in host of the node's hosts file through the cluster DNS, and
// connects to each; a name nobody serves does not resolve (the cluster DNS has no upstream).
TEST_F(ClusterServicesRealNodeTest, PodResolvesNamesOnlyThroughTheClusterDns) {
  wait_for_cluster_dns();
  const RunningPod server = start_sleeping_pod("server", {{"app", "server"}});
  const Listeners::Endpoint listener{server.ip, kServerPort, false};
  Listeners listeners(server.netns, {listener});
  ASSERT_FALSE(create_service("server").empty());
  add_dns_hosts({{server.ip, "standin.perimeter.test"}});

  // The kubelet gave the pod the cluster DNS as its only nameserver.
  const std::string resolv_conf = read_file(server.rootfs + "/etc/resolv.conf");
  EXPECT_NE(resolv_conf.find("nameserver " + node_.value("cluster_dns_ip", "?")), std::string::npos)
      << resolv_conf;
  std::istringstream lines(resolv_conf);
  int nameservers = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("nameserver", 0) == 0) ++nameservers;
  }
  EXPECT_EQ(nameservers, 1) << resolv_conf;

  // bash's /dev/tcp resolves with getaddrinfo, as any program in the pod would; a few rounds,
  // since the Service's endpoint and the hosts file line take a second or two to be served.
  const std::string full_name = "server." + ns_ + ".svc." + localcluster::kClusterDomain;
  const std::string script =
      "try() { start=$EPOCHREALTIME; if (exec 3<>/dev/tcp/$1/$2) 2>/dev/null; then r=reached; "
      "else r=failed; fi; echo \"$1 $r ($start to $EPOCHREALTIME)\"; [ $r = reached ]; }\n"
      "for round in 1 2 3 4 5; do\n"
      "  ok=1; try server 80 || ok=0; try " +
      full_name +
      " 80 || ok=0; try standin.perimeter.test 8080 || ok=0\n"
      "  [ $ok = 1 ] && break; sleep 1\n"
      "done\n"
      "try nowhere.perimeter.test 8080\n";
  const std::string log = run_script("resolver", script);
  const std::string prober_ip = client(kube::resources::pods())
                                    ->get(ns_, "resolver")
                                    .value("status", json::object())
                                    .value("podIP", "");
  EXPECT_NE(log.find("server reached"), std::string::npos) << log;
  EXPECT_NE(log.find(full_name + " reached"), std::string::npos) << log;
  EXPECT_NE(log.find("standin.perimeter.test reached"), std::string::npos) << log;
  EXPECT_NE(log.find("nowhere.perimeter.test failed"), std::string::npos) << log;
  std::cerr << log;
  ASSERT_FALSE(prober_ip.empty());
  EXPECT_TRUE(listeners.saw(listener, prober_ip))
      << "the server pod never saw a connection from the resolving pod " << prober_ip;
}

}  // namespace
}  // namespace perimeter::e2e
