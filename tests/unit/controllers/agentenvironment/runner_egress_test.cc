#include "controllers/agentenvironment/runner_egress.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/golden_file.h"
#include "pki/hmac.h"

namespace perimeter::agentenvironment {
namespace {

nlohmann::json environment_object() {
  return nlohmann::json::parse(R"({
    "apiVersion": "perimeter.dev/v1alpha1", "kind": "AgentEnvironment",
    "metadata": {"name": "payments", "namespace": "agents", "uid": "uid-1", "generation": 3},
    "spec": {"environmentId": "env_42", "environmentKeySecretRef": {"name": "payments-key"},
             "runner": {"image": "registry.example/perimeter-runner:1.0"},
             "egress": {"allowedCIDRs": ["10.20.0.0/16", "0.0.0.0/0"],
                        "allowedHosts": [{"host": "files.pythonhosted.org"},
                                         {"host": "*.pypi.org"},
                                         {"host": "git.corp.example", "ports": [443, 8443]}]}}
  })");
}

AgentEnvironment environment() {
  return parse_agent_environment(environment_object());
}

RunnerEgress gateway_egress() {
  RunnerEgress egress;
  egress.mode = EgressMode::kGateway;
  egress.gateway_host = "perimeter-egress-gateway.perimeter-system.svc";
  egress.gateway_port = 3128;
  egress.gateway_pods = {"perimeter-system",
                         {{"app.kubernetes.io/name", "perimeter-egress-gateway"}}};
  egress.credentials_key = std::string(32, 'k');
  return egress;
}

RunnerEgress cilium_egress() {
  RunnerEgress egress;
  egress.mode = EgressMode::kCiliumFqdn;
  return egress;
}

ClaimedSession session(const std::string& id = "sesn_777") {
  return {"work_Abc123", id, "c2VjcmV0", "2026-11-23T06:00:00Z"};
}

const nlohmann::json* find_env(const nlohmann::json& pod, const std::string& name) {
  for (const auto& var : pod["spec"]["containers"][0]["env"]) {
    if (var["name"] == name) return &var;
  }
  return nullptr;
}

// Every address a policy's ipBlocks allow, as written.
std::vector<std::string> allowed_cidrs(const nlohmann::json& policy) {
  std::vector<std::string> cidrs;
  for (const auto& rule : policy["spec"]["egress"]) {
    for (const auto& peer : rule.value("to", nlohmann::json::array())) {
      if (peer.contains("ipBlock")) cidrs.push_back(peer["ipBlock"]["cidr"]);
    }
  }
  return cidrs;
}

TEST(EgressModeTest, ParsesTheFlagValuesAndNamesTheModeForStatus) {
  EXPECT_EQ(parse_egress_mode("gateway"), EgressMode::kGateway);
  EXPECT_EQ(parse_egress_mode("cilium"), EgressMode::kCiliumFqdn);
  EXPECT_EQ(parse_egress_mode("public-addresses"), EgressMode::kPublicAddresses);
  EXPECT_FALSE(parse_egress_mode("Gateway").has_value());
  EXPECT_FALSE(parse_egress_mode("").has_value());
  EXPECT_EQ(egress_mode_name(EgressMode::kGateway), "Gateway");
  EXPECT_EQ(egress_mode_name(EgressMode::kCiliumFqdn), "CiliumFQDN");
  EXPECT_EQ(egress_mode_name(EgressMode::kPublicAddresses), "PublicAddresses");
}

TEST(AllowedHostsTest, ReadsNamesWildcardsAndPortsWithPort443ByDefault) {
  const auto env = environment();
  ASSERT_EQ(env.egress_allowed_hosts.size(), 3u);
  EXPECT_EQ(env.egress_allowed_hosts[0].host, "files.pythonhosted.org");
  EXPECT_EQ(env.egress_allowed_hosts[0].ports, std::vector<int>({443}));
  EXPECT_EQ(env.egress_allowed_hosts[1].host, "*.pypi.org");
  EXPECT_EQ(env.egress_allowed_hosts[2].ports, std::vector<int>({443, 8443}));
}

TEST(AllowedHostsTest, RefusesWhatIsNotALowercaseDnsNameOrAPort) {
  const std::vector<nlohmann::json> refused = {
      {{"host", "10.0.0.1"}},            // an address: allowedCIDRs
      {{"host", "*"}},                   // everything
      {{"host", "*.com"}},               // a whole top-level domain has no dot left
      {{"host", "a.*.example.com"}},     // wildcard only in front
      {{"host", "API.example.com"}},     // the gateway and Cilium compare lower case
      {{"host", "-bad.example.com"}},    // label starts with a hyphen
      {{"host", "bad-.example.com"}},    // label ends with a hyphen
      {{"host", "a..example.com"}},      // empty label
      {{"host", "team~a.example.com"}},  // '~' separates the gateway credential's parts
      {{"host", "localhost"}},           // one label
      {{"host", "example.com"}, {"ports", nlohmann::json::array()}},
      {{"host", "example.com"}, {"ports", {0}}},
      {{"host", "example.com"}, {"ports", {65536}}},
      {{"ports", {443}}},
  };
  for (const auto& entry : refused) {
    auto object = environment_object();
    object["spec"]["egress"]["allowedHosts"] = {entry};
    try {
      parse_agent_environment(object);
      ADD_FAILURE() << "accepted " << entry.dump();
    } catch (const SpecError& e) {
      EXPECT_NE(std::string(e.what()).find("spec.egress.allowedHosts[0]"), std::string::npos)
          << e.what();
    }
  }
}

TEST(GatewayEgressTest, ThePolicyAllowsOnlyTheGatewayTheClusterDnsAndTheListedCidrs) {
  const auto policy = build_network_policy(environment(), gateway_egress());
  const auto& rules = policy["spec"]["egress"];
  ASSERT_EQ(rules.size(), 3u) << rules.dump(2);

  // DNS only to kube-dns's pods: not port 53 anywhere (a DNS server of the agent's choosing is
  // a channel out).
  const auto& dns = rules[0];
  ASSERT_EQ(dns["to"].size(), 1u);
  EXPECT_EQ(dns["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "kube-system");
  EXPECT_EQ(dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns");
  EXPECT_EQ(dns["ports"][0]["port"], 53);

  const auto& gateway = rules[1];
  EXPECT_EQ(gateway["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "perimeter-system");
  EXPECT_EQ(gateway["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "perimeter-egress-gateway");
  EXPECT_EQ(gateway["ports"], nlohmann::json::parse(R"([{"port":3128,"protocol":"TCP"}])"));

  // The API's port to public addresses is gone: only the CIDRs the resource lists, with
  // link-local excepted from the wide one.
  EXPECT_EQ(allowed_cidrs(policy), std::vector<std::string>({"10.20.0.0/16", "0.0.0.0/0"}));
  EXPECT_EQ(rules[2]["to"][1]["ipBlock"]["except"], nlohmann::json::array({"169.254.0.0/16"}));
  for (const auto& rule : rules) EXPECT_TRUE(rule.contains("to")) << "a rule open to anywhere";
}

TEST(GatewayEgressTest, AnApiGivenAsAnAddressIsReachedDirectlyAndKeptOutOfTheProxy) {
  auto object = environment_object();
  object["spec"]["apiBaseUrl"] = "https://10.96.4.7:8443";
  object["spec"]["egress"].erase("allowedCIDRs");
  const auto env = parse_agent_environment(object);
  const auto policy = build_network_policy(env, gateway_egress());
  EXPECT_EQ(allowed_cidrs(policy), std::vector<std::string>({"10.96.4.7/32"}));
  const auto no_proxy = egress_no_proxy(gateway_egress(), env);
  EXPECT_NE(no_proxy.find(",10.96.4.7"), std::string::npos) << no_proxy;
}

TEST(GatewayEgressTest, TheSessionSecretCarriesAProxyUrlWithThatSessionsCredential) {
  const auto egress = gateway_egress();
  const auto secret = build_session_secret(environment(), session(), egress);
  const std::string url = secret["stringData"][std::string(kSecretKeyHttpsProxy)];
  const std::string user = "agents~payments~sesn_777";
  // Recomputed here from the key, as the gateway does.
  const std::string password = pki::hmac_sha256_hex(egress.credentials_key, user);
  EXPECT_EQ(url, "http://" + user + ":" + password +
                     "@perimeter-egress-gateway.perimeter-system.svc:3128");
  EXPECT_EQ(secret["stringData"]["work-secret"], "c2VjcmV0");

  // Another session, another environment, another key: another password.
  EXPECT_NE(egress_proxy_credentials(egress.credentials_key, environment(), "sesn_778").password,
            password);
  auto other = environment();
  other.name = "billing";
  EXPECT_NE(egress_proxy_credentials(egress.credentials_key, other, "sesn_777").password, password);
  EXPECT_NE(egress_proxy_credentials(std::string(32, 'x'), environment(), "sesn_777").password,
            password);
}

TEST(GatewayEgressTest, TheRunnerGetsTheProxyFromItsSecretAndTheTemplateCannotOverrideIt) {
  auto object = environment_object();
  object["spec"]["runner"]["env"] = {{{"name", "HTTPS_PROXY"}, {"value", "http://evil:1"}},
                                     {{"name", "no_proxy"}, {"value", "*"}},
                                     {{"name", "LANG"}, {"value", "C.UTF-8"}}};
  const auto pod = build_runner_pod(parse_agent_environment(object), session(), gateway_egress());
  for (const char* name : {"HTTPS_PROXY", "https_proxy"}) {
    const auto* var = find_env(pod, name);
    ASSERT_NE(var, nullptr) << name;
    EXPECT_FALSE(var->contains("value")) << "the credential is never a literal in the pod spec";
    EXPECT_EQ((*var)["valueFrom"]["secretKeyRef"]["key"], "https-proxy");
    EXPECT_EQ((*var)["valueFrom"]["secretKeyRef"]["name"], runner_object_name("work_Abc123"));
  }
  for (const char* name : {"NO_PROXY", "no_proxy"}) {
    const auto* var = find_env(pod, name);
    ASSERT_NE(var, nullptr) << name;
    EXPECT_EQ((*var)["value"],
              "localhost,127.0.0.1,::1,.svc,.cluster.local,10.20.0.0/16,0.0.0.0/0");
  }
  int proxies = 0;
  for (const auto& var : pod["spec"]["containers"][0]["env"]) {
    if (is_proxy_variable(var["name"].get<std::string>())) ++proxies;
  }
  EXPECT_EQ(proxies, 4) << "the template's own proxy variables were kept";
  EXPECT_NE(find_env(pod, "LANG"), nullptr);
}

TEST(PublicAddressesEgressTest, NoProxyVariablesAndNoProxyUrlInTheSecret) {
  auto object = environment_object();
  object["spec"]["runner"]["env"] = {{{"name", "HTTPS_PROXY"}, {"value", "http://corp:3128"}}};
  const auto env = parse_agent_environment(object);
  const auto pod = build_runner_pod(env, session(), RunnerEgress{});
  EXPECT_EQ((*find_env(pod, "HTTPS_PROXY"))["value"], "http://corp:3128");
  EXPECT_EQ(find_env(pod, "https_proxy"), nullptr);
  EXPECT_FALSE(build_session_secret(env, session(), RunnerEgress{})["stringData"].contains(
      std::string(kSecretKeyHttpsProxy)));
}

TEST(CiliumEgressTest, TheNetworkPolicyDeniesEverythingAndTheCiliumPolicyAllows) {
  const auto policy = build_network_policy(environment(), cilium_egress());
  EXPECT_EQ(policy["spec"]["policyTypes"], nlohmann::json::array({"Ingress", "Egress"}));
  EXPECT_TRUE(policy["spec"]["ingress"].empty());
  EXPECT_TRUE(policy["spec"]["egress"].empty()) << policy["spec"]["egress"].dump(2);
}

TEST(CiliumEgressTest, TheRenderedCiliumPolicyIsAsReviewed) {
  auto object = environment_object();
  object["spec"]["apiBaseUrl"] = "https://api.anthropic.com:443";
  testing::expect_golden(
      "tests/unit/controllers/agentenvironment/testdata", "cilium-networkpolicy.json",
      build_cilium_network_policy(parse_agent_environment(object), cilium_egress()).dump(2) + "\n");
}

TEST(CiliumEgressTest, AnApiAddressIsACidrAndDnsGoesOnlyToTheClusterDns) {
  auto object = environment_object();
  object["spec"]["apiBaseUrl"] = "http://10.96.4.7:8080";
  object["spec"]["egress"].erase("allowedHosts");
  object["spec"]["egress"].erase("allowedCIDRs");
  const auto policy = build_cilium_network_policy(parse_agent_environment(object), cilium_egress());
  const auto& rules = policy["spec"]["egress"];
  ASSERT_EQ(rules.size(), 2u) << rules.dump(2);
  EXPECT_EQ(rules[0]["toEndpoints"][0]["matchLabels"]["k8s:io.kubernetes.pod.namespace"],
            "kube-system");
  EXPECT_EQ(rules[1]["toCIDR"], nlohmann::json::array({"10.96.4.7/32"}));
  EXPECT_EQ(rules[1]["toPorts"][0]["ports"][0]["port"], "8080");
}

TEST(HmacTest, MatchesRfc4231TestCase2) {
  EXPECT_EQ(pki::hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_TRUE(pki::constant_time_equal("abc", "abc"));
  EXPECT_FALSE(pki::constant_time_equal("abc", "abd"));
  EXPECT_FALSE(pki::constant_time_equal("abc", "abcd"));
}

}  // namespace
}  // namespace perimeter::agentenvironment
