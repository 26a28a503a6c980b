#pragma once

// The stand-in "internet" of the real-node tests that need hosts outside the cluster: a network
// namespace the test creates, routed from the node's bridge only, so no address outside this
// machine is ever used. Shared by the egress gateway tests.
#include <random>
#include <string>

#include "pod_netns.h"
#include "process/process.h"

namespace perimeter::e2e {

inline constexpr const char* kMetadataAddress = "169.254.169.254";

// The stand-in "internet": a network namespace reached from the node's bridge only, through a
// veth pair (198.18.<r>.1 on the host, 198.18.<r>.2 inside) and, for 169.254.169.254 (on the
// namespace's loopback), a routing rule on the bridge's input. Removed on destruction.
class StandInNetwork {
 public:
  explicit StandInNetwork(const std::string& bridge) : bridge_(bridge) {
    std::random_device device;
    const unsigned r = device() % 256;
    const std::string tag = std::to_string(device() % 100000);
    netns_ = "pmtregw" + tag;
    table_ = std::to_string(30000 + device() % 10000);
    host_ip_ = "198.18." + std::to_string(r) + ".1";
    address_ = "198.18." + std::to_string(r) + ".2";
    const std::string host_veth = "eg" + tag + "h", inner_veth = "eg" + tag + "n";
    run_ok("ip netns add " + netns_);
    created_ = true;
    run_ok("ip link add " + host_veth + " type veth peer name " + inner_veth + " netns " + netns_);
    run_ok("ip addr add " + host_ip_ + "/30 dev " + host_veth);
    run_ok("ip link set " + host_veth + " up");
    const std::string in = "ip -n " + netns_ + " ";
    run_ok(in + "link set lo up");
    run_ok(in + "addr add " + address_ + "/30 dev " + inner_veth);
    run_ok(in + "addr add " + std::string(kMetadataAddress) + "/32 dev lo");
    run_ok(in + "link set " + inner_veth + " up");
    run_ok(in + "route add default via " + host_ip_);
    run_ok("ip route add " + std::string(kMetadataAddress) + "/32 via " + address_ + " table " +
           table_);
    run_ok("ip rule add iif " + bridge_ + " lookup " + table_);
    rule_added_ = true;
  }

  ~StandInNetwork() {
    if (rule_added_) process::run_shell("ip rule del iif " + bridge_ + " lookup " + table_);
    process::run_shell("ip route flush table " + table_ + " 2>/dev/null");
    if (created_) process::run_shell("ip netns del " + netns_);
  }

  std::string path() const { return "/run/netns/" + netns_; }
  const std::string& address() const { return address_; }

 private:
  std::string bridge_, netns_, table_, host_ip_, address_;
  bool created_ = false, rule_added_ = false;
};

}  // namespace perimeter::e2e
