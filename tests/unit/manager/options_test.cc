// perimeter-operator's command line: every flag the usage lists is accepted, and bad values are
// refused naming the flag.
#include "manager/options.h"

#include <gtest/gtest.h>

#include <sstream>

namespace perimeter::manager {
namespace {

Options parse(std::vector<std::string> args) {
  bool help = false;
  return parse_options(args, &help);
}

TEST(OptionsTest, EveryFlagTheUsageListsIsAccepted) {
  // The usage is the contract: a flag it documents and the parser refuses is a defect.
  std::istringstream usage_text(usage());
  std::string line;
  int flags = 0;
  while (std::getline(usage_text, line)) {
    const auto start = line.find("  --");
    if (start != 0) continue;
    const auto end = line.find(' ', start + 2);
    const std::string flag = line.substr(start + 2, end - start - 2);
    if (flag == "--help") continue;
    ++flags;
    // A value every flag takes: a number works for the numeric ones and is a string to the rest.
    std::string value = "7";
    if (flag == "--leader-elect") value = "false";
    if (flag == "--log-level") value = "debug";
    if (flag == "--allowed-api-hosts") value = "https://api.anthropic.com";
    if (flag == "--tunnel-audiences") value = "https://api.anthropic.com";
    if (flag == "--runner-egress") value = "cilium";
    if (flag == "--cluster-dns") value = "kube-system/k8s-app=kube-dns";
    if (flag == "--warm-assignment-pod-labels") value = "app.kubernetes.io/name=perimeter";
    if (flag == "--warm-assignment-address") value = "10.0.0.7";
    EXPECT_NO_THROW(parse({flag, value})) << flag;
  }
  EXPECT_GE(flags, 20);
}

TEST(OptionsTest, TheWarmAssignmentServiceIsOffUnlessAPortIsGivenAndItsFlagsAreChecked) {
  const Options defaults = parse({});
  EXPECT_EQ(defaults.warm_assignment_port, 0);
  EXPECT_EQ(defaults.warm_assignment_service, "perimeter-assignment");
  EXPECT_EQ(defaults.warm_assignment_ca_secret, "perimeter-assignment-ca");
  EXPECT_EQ(defaults.warm_assignment_pod_labels,
            (std::map<std::string, std::string>{{"app.kubernetes.io/name", "perimeter"},
                                                {"app.kubernetes.io/component", "operator"}}));

  const Options set = parse({"--warm-assignment-port=9443", "--warm-assignment-service=edge-assign",
                             "--warm-assignment-pod-labels=app=edge,tier=ops"});
  EXPECT_EQ(set.warm_assignment_port, 9443);
  EXPECT_EQ(set.warm_assignment_service, "edge-assign");
  EXPECT_EQ(set.warm_assignment_pod_labels,
            (std::map<std::string, std::string>{{"app", "edge"}, {"tier", "ops"}}));

  EXPECT_THROW(parse({"--warm-assignment-port=65536"}), std::invalid_argument);
  EXPECT_THROW(parse({"--warm-assignment-port=-1"}), std::invalid_argument);
  EXPECT_THROW(parse({"--warm-assignment-service=Edge.Assign"}), std::invalid_argument);
  EXPECT_THROW(parse({"--warm-assignment-pod-labels="}), std::invalid_argument);
  EXPECT_THROW(parse({"--warm-assignment-pod-labels=app"}), std::invalid_argument);

  // An operator outside the cluster is reached at an address of its host, never a name: the
  // certificate names exactly what the pods dial.
  EXPECT_EQ(defaults.warm_assignment_address, "");
  EXPECT_EQ(parse({"--warm-assignment-address=10.88.0.1"}).warm_assignment_address, "10.88.0.1");
  EXPECT_EQ(parse({"--warm-assignment-address=fd00::1"}).warm_assignment_address, "fd00::1");
  EXPECT_THROW(parse({"--warm-assignment-address=operator.example"}), std::invalid_argument);
  EXPECT_THROW(parse({"--warm-assignment-address=10.88.0.1:8443"}), std::invalid_argument);
}

TEST(OptionsTest, TheGuardImageIsTheBuildsUnlessAFlagNamesOne) {
  EXPECT_EQ(parse({}).mcp_guard_image, "");
  EXPECT_EQ(
      parse({"--mcp-guard-image", "registry.example/perimeter-mcp-guard:0.1.0"}).mcp_guard_image,
      "registry.example/perimeter-mcp-guard:0.1.0");
}

TEST(OptionsTest, TheClientRateLimitIsSet) {
  const Options options = parse({"--kube-api-qps", "50.5", "--kube-api-burst=80"});
  EXPECT_DOUBLE_EQ(options.kube_api_qps, 50.5);
  EXPECT_EQ(options.kube_api_burst, 80);
  EXPECT_THROW(parse({"--kube-api-qps", "fast"}), std::invalid_argument);
  EXPECT_THROW(parse({"--kube-api-burst", "0"}), std::invalid_argument);
}

TEST(OptionsTest, TheReconcilerSweepsKeepTheirDefaultsAndCanBeShortened) {
  const Options defaults = parse({});
  EXPECT_EQ(defaults.resync_seconds, 15);
  EXPECT_EQ(defaults.orphan_sweep_seconds, 60);
  EXPECT_EQ(defaults.gate_sweep_seconds, 15);
  const Options options =
      parse({"--resync-seconds", "2", "--orphan-sweep-seconds=3", "--gate-sweep-seconds", "1"});
  EXPECT_EQ(options.resync_seconds, 2);
  EXPECT_EQ(options.orphan_sweep_seconds, 3);
  EXPECT_EQ(options.gate_sweep_seconds, 1);
  // A sweep that never runs, or runs in a busy loop, is a mistake to refuse at start-up.
  for (const char* flag : {"--resync-seconds", "--orphan-sweep-seconds", "--gate-sweep-seconds"}) {
    for (const char* value : {"0", "-5", "1.5", "soon", ""}) {
      try {
        parse({flag, value});
        ADD_FAILURE() << flag << " accepted '" << value << "'";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
      }
    }
  }
}

TEST(OptionsTest, NamespaceListsAndTheirWildcard) {
  const Options options = parse({"--session-namespaces", "a, b", "--tunnel-namespaces", "*"});
  ASSERT_TRUE(options.session_namespaces);
  EXPECT_EQ(*options.session_namespaces, (std::set<std::string>{"a", "b"}));
  EXPECT_FALSE(options.tunnel_namespaces);
  const Options none = parse({"--tunnel-namespaces="});
  ASSERT_TRUE(none.tunnel_namespaces);
  EXPECT_TRUE(none.tunnel_namespaces->empty());
}

TEST(OptionsTest, TheRunnerEgressFlagsAreCheckedAtStart) {
  const auto defaults = parse({});
  EXPECT_EQ(defaults.runner_egress, "public-addresses");
  EXPECT_EQ(defaults.cluster_dns.labels.at("k8s-app"), "kube-dns");

  const auto set = parse({"--runner-egress=cilium", "--cluster-dns=dns/app=coredns,tier=node"});
  EXPECT_EQ(set.runner_egress, "cilium");
  EXPECT_EQ(set.cluster_dns.namespace_, "dns");
  EXPECT_EQ(set.cluster_dns.labels.size(), 2u);

  const auto gateway = parse({"--runner-egress=gateway", "--egress-gateway-image=registry/gw:1",
                              "--egress-gateway-replicas=3", "--egress-gateway-namespace=egress"});
  EXPECT_EQ(gateway.runner_egress, "gateway");
  EXPECT_EQ(gateway.egress_gateway_image, "registry/gw:1");
  EXPECT_EQ(gateway.egress_gateway_replicas, 3);
  EXPECT_EQ(gateway.egress_gateway_namespace, "egress");

  for (const std::vector<std::string>& bad : {std::vector<std::string>{"--runner-egress", "open"},
                                              {"--runner-egress", "proxy"},
                                              {"--egress-gateway-replicas", "0"},
                                              {"--cluster-dns", "kube-system"},
                                              {"--cluster-dns", "kube-system/"},
                                              {"--cluster-dns", "kube-system/k8s-app"}}) {
    try {
      parse(bad);
      ADD_FAILURE() << "accepted " << bad[0] << " " << bad[1];
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(bad[0]), std::string::npos) << e.what();
    }
  }
}

TEST(OptionsTest, AnUnknownFlagIsRefusedByName) {
  try {
    parse({"--no-such-flag", "1"});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--no-such-flag"), std::string::npos);
  }
}

}  // namespace
}  // namespace perimeter::manager
