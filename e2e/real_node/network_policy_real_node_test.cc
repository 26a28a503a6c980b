// NetworkPolicy is enforced on the real node: pods under a policy cannot open connections the
// policy does not allow, and pods without one can. The destinations are TCP listeners in a network
// namespace this test creates, routed from the node's bridge only (a policy routing rule on the
// bridge's input), so no address outside this machine is ever used: 198.18.<r>.2 (the allowed
// destination), 198.19.<r>.1 (another one) and 169.254.169.254 (where a cloud's instance metadata
// would answer). Connections are made from inside each pod's network namespace (setns on a thread,
// as the pod's processes would make them), so the enforcer sees the pod's own address.
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
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "localcluster/real_node.h"
#include "pod_netns.h"
#include "process/process.h"
#include "real_node_cluster.h"

namespace perimeter::e2e {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

constexpr const char* kMetadataAddress = "169.254.169.254";
constexpr int kAllowedPort = 8080;
constexpr int kOtherPort = 8081;
constexpr int kMetadataPort = 80;

// A network namespace of the test's, reached from the node's bridge only: a veth pair
// (198.18.<r>.1 on the host, 198.18.<r>.2 inside), 198.19.<r>.1 and 169.254.169.254 inside, and
// a routing rule that sends what arrives on the bridge for those two through the veth. TCP
// listeners inside record the source address of every connection they accept. Removed on
// destruction (the veth and its routes go with the namespace).
class Destinations {
 public:
  explicit Destinations(const std::string& bridge) : bridge_(bridge) {
    std::random_device device;
    const unsigned r = device() % 256;
    tag_ = std::to_string(device() % 100000);
    netns_ = "pmtrnp" + tag_;
    table_ = std::to_string(20000 + device() % 10000);
    host_ip_ = "198.18." + std::to_string(r) + ".1";
    allowed_ip_ = "198.18." + std::to_string(r) + ".2";
    other_ip_ = "198.19." + std::to_string(r) + ".1";
    const std::string host_veth = "np" + tag_ + "h", inner_veth = "np" + tag_ + "n";
    run_ok("ip netns add " + netns_);
    created_ = true;
    run_ok("ip link add " + host_veth + " type veth peer name " + inner_veth + " netns " + netns_);
    run_ok("ip addr add " + host_ip_ + "/30 dev " + host_veth);
    run_ok("ip link set " + host_veth + " up");
    const std::string in = "ip -n " + netns_ + " ";
    run_ok(in + "link set lo up");
    run_ok(in + "addr add " + allowed_ip_ + "/30 dev " + inner_veth);
    run_ok(in + "addr add " + other_ip_ + "/32 dev lo");
    run_ok(in + "addr add " + std::string(kMetadataAddress) + "/32 dev lo");
    run_ok(in + "link set " + inner_veth + " up");
    run_ok(in + "route add default via " + host_ip_);
    for (const std::string& destination : {other_ip_, std::string(kMetadataAddress)}) {
      run_ok("ip route add " + destination + "/32 via " + allowed_ip_ + " table " + table_);
    }
    run_ok("ip rule add iif " + bridge_ + " lookup " + table_);
    rule_added_ = true;
    in_netns(path(), [&] {
      listen_on(allowed_ip_, kAllowedPort);
      listen_on(allowed_ip_, kOtherPort);
      listen_on(other_ip_, kOtherPort);
      listen_on(kMetadataAddress, kMetadataPort);
    });
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~Destinations() {
    stopping_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (const int fd : listeners_) ::close(fd);
    if (rule_added_) process::run_shell("ip rule del iif " + bridge_ + " lookup " + table_);
    process::run_shell("ip route flush table " + table_ + " 2>/dev/null");
    if (created_) process::run_shell("ip netns del " + netns_);
  }

  std::string path() const { return "/run/netns/" + netns_; }
  const std::string& allowed_ip() const { return allowed_ip_; }
  const std::string& other_ip() const { return other_ip_; }

  // Whether a connection from `source` reached the listener on `ip`:`port` (what the listeners
  // have accepted so far).
  bool accepted(const std::string& ip, int port, const std::string& source) {
    std::lock_guard lock(mutex_);
    return accepted_.count(key(ip, port, source)) != 0;
  }

  // Waits until that listener has accepted a connection from `source` (the client sees its
  // connect complete before the accept loop has taken the connection).
  bool eventually_accepted(const std::string& ip, int port, const std::string& source) {
    return eventually([&] { return accepted(ip, port, source); }, seconds(10),
                      key(ip, port, source) + " to be accepted");
  }

 private:
  static std::string key(const std::string& ip, int port, const std::string& source) {
    return ip + ":" + std::to_string(port) + " from " + source;
  }

  void listen_on(const std::string& ip, int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const sockaddr_in address = address_of(ip, port);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(fd, 16) != 0) {
      ADD_FAILURE() << "listening on " << ip << ":" << port << ": " << std::strerror(errno);
    }
    listeners_.push_back(fd);
    listener_addresses_.emplace_back(ip, port);
  }

  void accept_loop() {
    std::vector<pollfd> watched;
    for (const int fd : listeners_) watched.push_back({fd, POLLIN, 0});
    while (!stopping_) {
      if (::poll(watched.data(), watched.size(), 100) <= 0) continue;
      for (size_t i = 0; i < watched.size(); ++i) {
        if ((watched[i].revents & POLLIN) == 0) continue;
        sockaddr_in peer{};
        socklen_t length = sizeof(peer);
        const int client =
            ::accept4(watched[i].fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC);
        if (client < 0) continue;
        char text[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof(text));
        ::close(client);
        std::lock_guard lock(mutex_);
        accepted_.insert(key(listener_addresses_[i].first, listener_addresses_[i].second, text));
      }
    }
  }

  std::string bridge_, tag_, netns_, table_, host_ip_, allowed_ip_, other_ip_;
  bool created_ = false, rule_added_ = false;
  std::vector<int> listeners_;
  std::vector<std::pair<std::string, int>> listener_addresses_;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::set<std::string> accepted_;
};

class NetworkPolicyRealNodeTest : public RealNodeTest {
 protected:
  struct RunningPod {
    std::string ip;
    std::string netns;  // /proc/<pid>/ns/net of one of its processes
  };

  // A pod of the runner image that only sleeps, with `labels`, under PodSecurity `restricted`,
  // once it runs.
  RunningPod start_pod(const std::string& name, const json& labels) {
    client(kube::resources::pods())->create(ns_, runner_image_pod(name, labels, {"sleep", "600"}));
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
          return true;
        },
        seconds(90), "pod " + name + " to run");
    return running;
  }

  void apply_policy(const json& policy) {
    client(kube::resources::network_policies())->create(ns_, policy);
  }

  // Connects from `pod` until it connects (`connects`) or is refused or times out (not
  // `connects`): the enforcer applies a new policy or pod within a second or two of seeing it.
  // Returns the last outcome.
  static Outcome settle(const RunningPod& pod, const std::string& ip, int port, bool connects) {
    Outcome outcome = Outcome::kError;
    const auto deadline = std::chrono::steady_clock::now() + seconds(60);
    do {
      outcome = tcp_from(pod.netns, ip, port);
      if ((outcome == Outcome::kConnected) == connects && outcome != Outcome::kError) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    } while (std::chrono::steady_clock::now() < deadline);
    return outcome;
  }

  static bool blocked(Outcome outcome) {
    return outcome == Outcome::kTimedOut || outcome == Outcome::kRefused;
  }
};

// The attack: a pod whose policy allows egress to one destination only tries another. It must
// not get through, while a pod of the same namespace without a policy reaches both (so the test
// fails when nothing enforces).
TEST_F(NetworkPolicyRealNodeTest, EgressGoesOnlyWhereThePolicyAllows) {
  Destinations destinations(node_["bridge"].get<std::string>());
  apply_policy({{"apiVersion", "networking.k8s.io/v1"},
                {"kind", "NetworkPolicy"},
                {"metadata", {{"name", "only-the-allowed-destination"}}},
                {"spec",
                 {{"podSelector", {{"matchLabels", {{"role", "confined"}}}}},
                  {"policyTypes", {"Egress"}},
                  {"egress",
                   {{{"to", {{{"ipBlock", {{"cidr", destinations.allowed_ip() + "/32"}}}}}},
                     {"ports", {{{"protocol", "TCP"}, {"port", kAllowedPort}}}}}}}}}});
  const RunningPod confined = start_pod("confined", {{"role", "confined"}});
  const RunningPod free = start_pod("free", {{"role", "free"}});

  // The pod without a policy reaches both: the destinations are live.
  EXPECT_EQ(settle(free, destinations.allowed_ip(), kAllowedPort, true), Outcome::kConnected);
  EXPECT_EQ(settle(free, destinations.other_ip(), kOtherPort, true), Outcome::kConnected);
  EXPECT_EQ(settle(free, destinations.allowed_ip(), kOtherPort, true), Outcome::kConnected);
  EXPECT_TRUE(destinations.eventually_accepted(destinations.other_ip(), kOtherPort, free.ip));

  // The confined pod reaches what its policy allows, and nothing else.
  EXPECT_EQ(settle(confined, destinations.allowed_ip(), kAllowedPort, true), Outcome::kConnected);
  const Outcome other = settle(confined, destinations.other_ip(), kOtherPort, false);
  EXPECT_TRUE(blocked(other)) << "the confined pod's connection to another destination "
                              << describe(other);
  // The allowed address, on a port the policy does not allow.
  const Outcome port = settle(confined, destinations.allowed_ip(), kOtherPort, false);
  EXPECT_TRUE(blocked(port)) << "the confined pod's connection to a port not allowed "
                             << describe(port);
  EXPECT_TRUE(
      destinations.eventually_accepted(destinations.allowed_ip(), kAllowedPort, confined.ip));
  EXPECT_FALSE(destinations.accepted(destinations.other_ip(), kOtherPort, confined.ip));
  EXPECT_FALSE(destinations.accepted(destinations.allowed_ip(), kOtherPort, confined.ip));
}

// The runner's own NetworkPolicy (what the AgentEnvironment controller renders), for an API at a
// literal address and egress allowed to every IPv4 address: link-local stays excepted, so the
// instance-metadata address is out of reach of a runner pod, while a pod without the policy
// reaches the listener there.
TEST_F(NetworkPolicyRealNodeTest, RunnerPolicyKeepsInstanceMetadataOutOfReach) {
  Destinations destinations(node_["bridge"].get<std::string>());
  agentenvironment::AgentEnvironment env;
  env.name = "policy-shape";
  env.namespace_ = ns_;
  env.uid = "policy-shape-uid";
  env.api_base_url = "http://" + destinations.allowed_ip() + ":" + std::to_string(kAllowedPort);
  env.egress_allowed_cidrs = {"0.0.0.0/0"};
  json policy = agentenvironment::build_network_policy(env);
  // No AgentEnvironment object exists here: without the owner reference the garbage collector
  // keeps the policy.
  policy["metadata"].erase("ownerReferences");
  apply_policy(policy);
  const RunningPod runner = start_pod("runner", policy["spec"]["podSelector"]["matchLabels"]);
  const RunningPod free = start_pod("free", {{"role", "free"}});

  EXPECT_EQ(settle(free, kMetadataAddress, kMetadataPort, true), Outcome::kConnected);
  EXPECT_EQ(settle(runner, destinations.allowed_ip(), kAllowedPort, true), Outcome::kConnected);
  EXPECT_EQ(settle(runner, destinations.other_ip(), kOtherPort, true), Outcome::kConnected);
  const Outcome metadata = settle(runner, kMetadataAddress, kMetadataPort, false);
  EXPECT_TRUE(blocked(metadata)) << "the runner pod's connection to " << kMetadataAddress << " "
                                 << describe(metadata);
  EXPECT_FALSE(destinations.accepted(kMetadataAddress, kMetadataPort, runner.ip));
}

}  // namespace
}  // namespace perimeter::e2e
