#include "controllers/mcptunnel/gateway.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "core/golden_file.h"
#include "pki/pki.h"

namespace perimeter::mcptunnel {
namespace {

using nlohmann::json;

McpTunnel tunnel() {
  McpTunnel t;
  t.name = "billing";
  t.namespace_ = "tools";
  t.uid = "6f1c2e4a-0000-4000-8000-000000000001";
  t.generation = 4;
  t.tunnel_id = "tnl_01abc";
  t.gateway.replicas = 2;
  return t;
}

ResolvedRoute service_route(std::string name, std::map<std::string, std::string> selector,
                            std::string target_port) {
  ResolvedRoute route;
  route.name = std::move(name);
  route.upstream = "http://" + route.name + ".tools.svc.cluster.local:80";
  route.pod_selector = std::move(selector);
  route.target_port = std::move(target_port);
  return route;
}

ResolvedRoute url_route(std::string name, std::string upstream, std::string ip, int port) {
  ResolvedRoute route;
  route.name = std::move(name);
  route.upstream = std::move(upstream);
  route.ip = std::move(ip);
  route.port = port;
  return route;
}

GatewayInputs inputs() {
  GatewayInputs in;
  in.domain = "a1b2c3.tunnels.example.com";
  // Deliberately not in name order.
  in.routes = {
      service_route("search", {{"app", "search"}}, "8080"),
      service_route("docs", {{"app", "docs"}, {"tier", "web"}}, "http"),
      url_route("legacy", "https://10.0.0.5:8443", "10.0.0.5", 8443),
      url_route("wiki", "https://wiki.corp.example:443", "", 443),
  };
  in.tls_secret_name = "billing-tls";
  in.token_secret_name = "billing-token";
  in.token_secret_key = "tunnel-token";
  in.token_id = "token-v1";
  return in;
}

// Helpers and tests read objects through non-const json: a missing field then reads as null and
// fails the expectation, where a const lookup would be undefined behaviour.
json& container(json& deployment, const std::string& name) {
  for (auto& c : deployment["spec"]["template"]["spec"]["containers"]) {
    if (c["name"] == name) return c;
  }
  throw std::runtime_error("no container " + name);
}

json* volume_named(json& deployment, const std::string& name) {
  for (auto& v : deployment["spec"]["template"]["spec"]["volumes"]) {
    if (v["name"] == name) return &v;
  }
  return nullptr;
}

// The volume that holds `secret`, or null.
json* volume_for_secret(json& deployment, const std::string& secret) {
  for (auto& v : deployment["spec"]["template"]["spec"]["volumes"]) {
    if (v.contains("secret") && v["secret"]["secretName"] == secret) return &v;
  }
  return nullptr;
}

json* mount_of(json& c, const std::string& volume) {
  if (!c.contains("volumeMounts")) return nullptr;
  for (auto& m : c["volumeMounts"]) {
    if (m["name"] == volume) return &m;
  }
  return nullptr;
}

bool has_rule(json& policy, const json& rule) {
  for (const auto& r : policy["spec"]["egress"]) {
    if (r == rule) return true;
  }
  return false;
}

std::string dirname(const std::string& path) {
  return path.substr(0, path.rfind('/'));
}

// --- proxy config ---------------------------------------------------------------------------

TEST(ProxyConfigTest, RoundTripsThroughYamlWithEveryField) {
  auto t = tunnel();
  t.allowed_cidrs = {"10.0.0.0/8", "192.168.0.0/16"};
  t.include_system_cas = true;
  const YAML::Node config = YAML::Load(render_proxy_config(t, inputs()));

  EXPECT_EQ(config["listen_addr"].as<std::string>(), ":8080");
  EXPECT_EQ(config["log_level"].as<std::string>(), "info");
  EXPECT_EQ(config["shutdown_timeout"].as<std::string>(), "30s");
  EXPECT_EQ(config["tunnel_domain"].as<std::string>(), "a1b2c3.tunnels.example.com");
  EXPECT_EQ(config["tls"]["cert_file"].as<std::string>(), "/etc/mcp-gateway/tls/tls.crt");
  EXPECT_EQ(config["tls"]["key_file"].as<std::string>(), "/etc/mcp-gateway/tls/tls.key");

  ASSERT_TRUE(config["routes"].IsMap());
  EXPECT_EQ(config["routes"].size(), 4u);
  EXPECT_EQ(config["routes"]["search"].as<std::string>(),
            "http://search.tools.svc.cluster.local:80");
  EXPECT_EQ(config["routes"]["docs"].as<std::string>(), "http://docs.tools.svc.cluster.local:80");
  EXPECT_EQ(config["routes"]["legacy"].as<std::string>(), "https://10.0.0.5:8443");
  EXPECT_EQ(config["routes"]["wiki"].as<std::string>(), "https://wiki.corp.example:443");

  ASSERT_TRUE(config["upstream"]["allowed_ips"].IsSequence());
  EXPECT_EQ(config["upstream"]["allowed_ips"].as<std::vector<std::string>>(),
            (std::vector<std::string>{"10.0.0.0/8", "192.168.0.0/16"}));
  EXPECT_TRUE(config["upstream"]["tls"]["include_system_cas"].as<bool>());
  EXPECT_FALSE(config["upstream"]["tls"]["ca_file"]);
  EXPECT_FALSE(config["upstream"]["disable_ip_validation"]);
}

TEST(ProxyConfigTest, IncludeSystemCasFollowsTheSpec) {
  auto t = tunnel();
  t.include_system_cas = false;
  EXPECT_FALSE(YAML::Load(render_proxy_config(t, inputs()))["upstream"]["tls"]["include_system_cas"]
                   .as<bool>());
}

TEST(ProxyConfigTest, PointsCaFileAtTheUpstreamCaMountOnlyWhenConfigured) {
  auto t = tunnel();
  t.upstream_ca_secret_name = "corp-ca";
  const YAML::Node with_ca = YAML::Load(render_proxy_config(t, inputs()));
  EXPECT_EQ(with_ca["upstream"]["tls"]["ca_file"].as<std::string>(),
            "/etc/mcp-gateway/upstream-ca/ca.crt");

  t.upstream_ca_secret_name.clear();
  EXPECT_FALSE(YAML::Load(render_proxy_config(t, inputs()))["upstream"]["tls"]["ca_file"]);
}

TEST(ProxyConfigTest, RoutesAreAnEmptyMapWhenNoneResolved) {
  auto in = inputs();
  in.routes.clear();
  const YAML::Node config = YAML::Load(render_proxy_config(tunnel(), in));
  ASSERT_TRUE(config["routes"].IsDefined());
  EXPECT_TRUE(config["routes"].IsMap());
  EXPECT_EQ(config["routes"].size(), 0u);
}

TEST(ProxyConfigTest, IsIndependentOfRouteOrder) {
  auto reversed = inputs();
  std::reverse(reversed.routes.begin(), reversed.routes.end());
  const std::string text = render_proxy_config(tunnel(), inputs());
  EXPECT_EQ(text, render_proxy_config(tunnel(), reversed));
  EXPECT_LT(text.find("docs:"), text.find("legacy:"));
  EXPECT_LT(text.find("legacy:"), text.find("search:"));
  EXPECT_LT(text.find("search:"), text.find("wiki:"));
}

TEST(ConfigMapTest, HoldsTheProxyConfigUnderConfigYaml) {
  const auto t = tunnel();
  auto config_map = build_config_map(t, inputs());
  EXPECT_EQ(config_map["apiVersion"], "v1");
  EXPECT_EQ(config_map["kind"], "ConfigMap");
  EXPECT_EQ(config_map["metadata"]["name"], "billing-gateway-config");
  EXPECT_EQ(config_map["data"]["config.yaml"], render_proxy_config(t, inputs()));
  EXPECT_EQ(config_map["data"].size(), 1u);
}

TEST(GatewayObjectsTest, AllCarryNameNamespaceLabelsAndOwner) {
  const auto t = tunnel();
  const auto names = object_names(t.name);
  const auto budget = build_disruption_budget(t);
  ASSERT_TRUE(budget.has_value());
  std::vector<std::pair<json, std::string>> objects = {
      {build_config_map(t, inputs()), names.config_map},
      {build_deployment(t, inputs()), names.deployment},
      {build_network_policy(t, inputs()), names.network_policy},
      {*budget, names.disruption_budget},
  };
  for (auto& [object, name] : objects) {
    SCOPED_TRACE(object["kind"].dump());
    EXPECT_TRUE(object["apiVersion"].is_string());
    EXPECT_EQ(object["metadata"]["name"], name);
    EXPECT_EQ(object["metadata"]["namespace"], "tools");
    EXPECT_EQ(object["metadata"]["labels"], json(common_labels(t)));
    EXPECT_EQ(object["metadata"]["ownerReferences"], json::array({owner_reference(t)}));
  }
}

// --- hash -----------------------------------------------------------------------------------

TEST(GatewayHashTest, ChangesWithRoutes) {
  const auto t = tunnel();
  const auto base = gateway_hash(t, inputs());
  auto added = inputs();
  added.routes.push_back(url_route("extra", "http://10.1.1.1:9000", "10.1.1.1", 9000));
  EXPECT_NE(gateway_hash(t, added), base);
  auto moved = inputs();
  moved.routes[0].upstream = "http://search.tools.svc.cluster.local:81";
  EXPECT_NE(gateway_hash(t, moved), base);
}

TEST(GatewayHashTest, ChangesWithTokenId) {
  auto rotated = inputs();
  rotated.token_id = "token-v2";
  EXPECT_NE(gateway_hash(tunnel(), rotated), gateway_hash(tunnel(), inputs()));
}

TEST(GatewayHashTest, ChangesWithUpstreamCaVersion) {
  auto with_ca = inputs();
  with_ca.upstream_ca_version = "1001";
  auto renewed = with_ca;
  renewed.upstream_ca_version = "1002";
  EXPECT_NE(gateway_hash(tunnel(), with_ca), gateway_hash(tunnel(), inputs()));
  EXPECT_NE(gateway_hash(tunnel(), renewed), gateway_hash(tunnel(), with_ca));
}

TEST(GatewayHashTest, KeepsTokenIdAndCaVersionApart) {
  auto a = inputs();
  a.token_id = "ab";
  a.upstream_ca_version = "c";
  auto b = inputs();
  b.token_id = "a";
  b.upstream_ca_version = "bc";
  EXPECT_NE(gateway_hash(tunnel(), a), gateway_hash(tunnel(), b));
}

TEST(GatewayHashTest, IgnoresEverythingCertificateRelated) {
  const auto t = tunnel();
  auto renewed = t;
  renewed.certificate.duration = std::chrono::hours(24);
  renewed.certificate.renew_before = std::chrono::hours(8);
  renewed.certificate.ca_duration = std::chrono::hours(48);
  renewed.certificate.ca_renew_before = std::chrono::hours(12);
  EXPECT_EQ(gateway_hash(renewed, inputs()), gateway_hash(t, inputs()));
  // A renewal rewrites the TLS Secret in place: the whole pod template must stay as it is.
  EXPECT_EQ(build_deployment(renewed, inputs()), build_deployment(t, inputs()));

  auto other_secret = inputs();
  other_secret.tls_secret_name = "billing-tls-next";
  EXPECT_EQ(gateway_hash(t, other_secret), gateway_hash(t, inputs()));
}

TEST(GatewayHashTest, IsThePodTemplateAnnotationAndCannotBeOverridden) {
  auto t = tunnel();
  t.gateway.pod_annotations = {{"perimeter.dev/gateway-hash", "forged"},
                               {"prometheus.io/scrape", "true"}};
  auto annotations = build_deployment(t, inputs())["spec"]["template"]["metadata"]["annotations"];
  EXPECT_EQ(annotations["perimeter.dev/gateway-hash"], gateway_hash(t, inputs()));
  EXPECT_EQ(annotations["prometheus.io/scrape"], "true");
}

// --- deployment -----------------------------------------------------------------------------

TEST(DeploymentTest, HasNoEnvAndReferencesTheTokenOnlyAsASecretVolume) {
  const auto in = inputs();
  auto deployment = build_deployment(tunnel(), in);
  for (auto& c : deployment["spec"]["template"]["spec"]["containers"]) {
    SCOPED_TRACE(c["name"].dump());
    EXPECT_FALSE(c.contains("env"));
    EXPECT_FALSE(c.contains("envFrom"));
    for (const auto& arg : c.value("args", json::array())) EXPECT_NE(arg, "--token");
  }
  EXPECT_EQ(deployment.dump().find("TUNNEL_TOKEN"), std::string::npos);

  json* token = volume_for_secret(deployment, in.token_secret_name);
  ASSERT_NE(token, nullptr);
  EXPECT_EQ((*token)["secret"]["items"],
            json::parse(R"([{"key": "tunnel-token", "path": "token"}])"));
  EXPECT_EQ((*token)["secret"]["defaultMode"], 0440);

  json* mount = mount_of(container(deployment, "cloudflared"), (*token)["name"]);
  ASSERT_NE(mount, nullptr);
  EXPECT_EQ((*mount)["mountPath"], "/etc/cloudflared/token");
  EXPECT_EQ((*mount)["readOnly"], true);
  // Only the connector sees the token.
  EXPECT_EQ(mount_of(container(deployment, "mcp-proxy"), (*token)["name"]), nullptr);
}

TEST(DeploymentTest, ConnectorRunsWithTheTokenFileAndFlagsOnTheRightCommand) {
  auto deployment = build_deployment(tunnel(), inputs());
  auto& connector = container(deployment, "cloudflared");
  EXPECT_EQ(connector["command"], json::array({"cloudflared"}));
  const json expected = json::array(
      {"tunnel", "--no-autoupdate", "--metrics", "0.0.0.0:2000", "--grace-period", "30s", "run",
       "--token-file", "/etc/cloudflared/token/token", "--url", "http://localhost:8080"});
  EXPECT_EQ(connector["args"], expected);
}

TEST(DeploymentTest, BothContainersMeetTheRestrictedProfile) {
  auto deployment = build_deployment(tunnel(), inputs());
  auto& pod = deployment["spec"]["template"]["spec"];
  EXPECT_EQ(pod["securityContext"]["runAsNonRoot"], true);
  EXPECT_EQ(pod["securityContext"]["runAsUser"], 65532);
  EXPECT_EQ(pod["securityContext"]["runAsGroup"], 65532);
  EXPECT_EQ(pod["securityContext"]["fsGroup"], 65532);
  EXPECT_EQ(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
  EXPECT_EQ(pod["automountServiceAccountToken"], false);
  EXPECT_EQ(pod["enableServiceLinks"], false);
  EXPECT_FALSE(pod.contains("hostNetwork"));
  EXPECT_FALSE(pod.contains("hostPID"));
  EXPECT_FALSE(pod.contains("hostIPC"));

  ASSERT_EQ(pod["containers"].size(), 2u);
  for (auto& c : pod["containers"]) {
    SCOPED_TRACE(c["name"].dump());
    auto& sc = c["securityContext"];
    EXPECT_EQ(sc["allowPrivilegeEscalation"], false);
    EXPECT_EQ(sc["readOnlyRootFilesystem"], true);
    EXPECT_EQ(sc["runAsNonRoot"], true);
    EXPECT_EQ(sc["capabilities"]["drop"], json::array({"ALL"}));
    EXPECT_FALSE(sc["capabilities"].contains("add"));
    EXPECT_EQ(c["imagePullPolicy"], "IfNotPresent");
  }
  for (auto& v : pod["volumes"]) {
    SCOPED_TRACE(v.dump());
    EXPECT_TRUE(v.contains("secret") || v.contains("configMap"));
    EXPECT_FALSE(v.contains("hostPath"));
  }
}

TEST(DeploymentTest, ProbesUseTheRightPathsAndPorts) {
  auto deployment = build_deployment(tunnel(), inputs());
  auto& connector = container(deployment, "cloudflared");
  EXPECT_EQ(connector["ports"],
            json::parse(R"([{"name": "metrics", "containerPort": 2000, "protocol": "TCP"}])"));
  EXPECT_EQ(connector["readinessProbe"]["httpGet"]["path"], "/ready");
  EXPECT_EQ(connector["readinessProbe"]["httpGet"]["port"], "metrics");
  EXPECT_EQ(connector["livenessProbe"]["httpGet"]["path"], "/healthcheck");
  EXPECT_EQ(connector["livenessProbe"]["httpGet"]["port"], "metrics");
  EXPECT_GE(connector["livenessProbe"]["failureThreshold"].get<int>(), 3);

  auto& proxy = container(deployment, "mcp-proxy");
  EXPECT_EQ(proxy["ports"],
            json::parse(R"([{"name": "proxy", "containerPort": 8080, "protocol": "TCP"}])"));
  EXPECT_EQ(proxy["readinessProbe"]["tcpSocket"]["port"], 8080);
}

TEST(DeploymentTest, TerminationGraceOutlastsTheConnectorDrain) {
  auto deployment = build_deployment(tunnel(), inputs());
  EXPECT_GT(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].get<int>(), 30);
}

TEST(DeploymentTest, ProxyFilesLiveInDirectoryMountsThatMatchTheConfig) {
  auto t = tunnel();
  t.upstream_ca_secret_name = "corp-ca";
  t.upstream_ca_secret_key = "bundle.pem";
  const auto in = inputs();
  auto deployment = build_deployment(t, in);
  auto& proxy = container(deployment, "mcp-proxy");
  const YAML::Node config = YAML::Load(render_proxy_config(t, in));

  // -config points into the ConfigMap's directory mount.
  ASSERT_EQ(proxy["args"].size(), 2u);
  EXPECT_EQ(proxy["args"][0], "-config");
  const std::string config_path = proxy["args"][1];
  json* config_volume = nullptr;
  for (auto& v : deployment["spec"]["template"]["spec"]["volumes"]) {
    if (v.contains("configMap")) config_volume = &v;
  }
  ASSERT_NE(config_volume, nullptr);
  EXPECT_EQ((*config_volume)["configMap"]["name"], "billing-gateway-config");
  json* config_mount = mount_of(proxy, (*config_volume)["name"]);
  ASSERT_NE(config_mount, nullptr);
  EXPECT_EQ(config_path, (*config_mount)["mountPath"].get<std::string>() + "/config.yaml");
  EXPECT_EQ((*config_volume)["configMap"]["items"],
            json::parse(R"([{"key": "config.yaml", "path": "config.yaml"}])"));

  // The TLS Secret at the directory the config names, read-only, 0440.
  json* tls = volume_for_secret(deployment, in.tls_secret_name);
  ASSERT_NE(tls, nullptr);
  EXPECT_EQ((*tls)["secret"]["defaultMode"], 0440);
  json* tls_mount = mount_of(proxy, (*tls)["name"]);
  ASSERT_NE(tls_mount, nullptr);
  EXPECT_EQ((*tls_mount)["readOnly"], true);
  EXPECT_EQ(dirname(config["tls"]["cert_file"].as<std::string>()), (*tls_mount)["mountPath"]);
  EXPECT_EQ(dirname(config["tls"]["key_file"].as<std::string>()), (*tls_mount)["mountPath"]);
  // The connector never sees the server key.
  EXPECT_EQ(mount_of(container(deployment, "cloudflared"), (*tls)["name"]), nullptr);

  // The upstream CA, its key renamed to the file the config names.
  json* ca = volume_for_secret(deployment, "corp-ca");
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ((*ca)["secret"]["items"], json::parse(R"([{"key": "bundle.pem", "path": "ca.crt"}])"));
  json* ca_mount = mount_of(proxy, (*ca)["name"]);
  ASSERT_NE(ca_mount, nullptr);
  EXPECT_EQ(config["upstream"]["tls"]["ca_file"].as<std::string>(),
            (*ca_mount)["mountPath"].get<std::string>() + "/ca.crt");

  // subPath mounts are never updated by the kubelet: a renewed certificate would not reach the
  // proxy.
  for (auto& c : deployment["spec"]["template"]["spec"]["containers"]) {
    for (auto& m : c["volumeMounts"]) EXPECT_FALSE(m.contains("subPath")) << m.dump();
  }
}

TEST(DeploymentTest, MountsNoUpstreamCaWhenNoneIsConfigured) {
  auto deployment = build_deployment(tunnel(), inputs());
  // config, tls, token.
  EXPECT_EQ(deployment["spec"]["template"]["spec"]["volumes"].size(), 3u);
  EXPECT_EQ(container(deployment, "mcp-proxy")["volumeMounts"].size(), 2u);
  EXPECT_EQ(volume_named(deployment, "upstream-ca"), nullptr);
}

TEST(DeploymentTest, RollsOutBySurgingOneBeforeRemovingAny) {
  auto strategy = build_deployment(tunnel(), inputs())["spec"]["strategy"];
  EXPECT_EQ(strategy["type"], "RollingUpdate");
  EXPECT_EQ(strategy["rollingUpdate"]["maxUnavailable"], 0);
  EXPECT_EQ(strategy["rollingUpdate"]["maxSurge"], 1);
}

TEST(DeploymentTest, ReplicasAndSelectorComeFromTheTunnel) {
  auto t = tunnel();
  t.gateway.replicas = 3;
  auto deployment = build_deployment(t, inputs());
  EXPECT_EQ(deployment["apiVersion"], "apps/v1");
  EXPECT_EQ(deployment["kind"], "Deployment");
  EXPECT_EQ(deployment["spec"]["replicas"], 3);
  EXPECT_EQ(deployment["spec"]["selector"]["matchLabels"], json(gateway_selector(t)));
}

TEST(DeploymentTest, UserPodLabelsCannotOverrideTheOperatorsLabels) {
  auto t = tunnel();
  for (const auto& [key, value] : gateway_selector(t)) t.gateway.pod_labels[key] = "hijacked";
  for (const auto& [key, value] : common_labels(t)) t.gateway.pod_labels[key] = "hijacked";
  t.gateway.pod_labels["team"] = "payments";
  auto deployment = build_deployment(t, inputs());
  auto& labels = deployment["spec"]["template"]["metadata"]["labels"];
  for (const auto& [key, value] : gateway_selector(t)) EXPECT_EQ(labels[key], value) << key;
  for (const auto& [key, value] : common_labels(t)) EXPECT_EQ(labels[key], value) << key;
  EXPECT_EQ(labels["team"], "payments");
  for (const auto& [key, value] : deployment["spec"]["selector"]["matchLabels"].items()) {
    EXPECT_EQ(labels[key], value) << "the selector does not match the pods: " << key;
  }
}

TEST(DeploymentTest, ImageOverridesApply) {
  auto t = tunnel();
  auto deployment = build_deployment(t, inputs());
  EXPECT_EQ(container(deployment, "mcp-proxy")["image"], kDefaultProxyImage);
  EXPECT_EQ(container(deployment, "cloudflared")["image"], kDefaultConnectorImage);

  t.gateway.proxy_image = "registry.corp/mcp-proxy:mirror";
  t.gateway.connector_image = "registry.corp/cloudflared:mirror";
  deployment = build_deployment(t, inputs());
  EXPECT_EQ(container(deployment, "mcp-proxy")["image"], "registry.corp/mcp-proxy:mirror");
  EXPECT_EQ(container(deployment, "cloudflared")["image"], "registry.corp/cloudflared:mirror");
}

TEST(DeploymentTest, ResourcesDefaultWithMemoryLimitsAndFollowTheSpec) {
  auto t = tunnel();
  auto deployment = build_deployment(t, inputs());
  for (const char* name : {"mcp-proxy", "cloudflared"}) {
    auto& resources = container(deployment, name)["resources"];
    EXPECT_TRUE(resources["requests"].contains("cpu")) << name;
    EXPECT_TRUE(resources["requests"].contains("memory")) << name;
    EXPECT_TRUE(resources["limits"].contains("memory")) << name;
  }

  t.gateway.proxy_resources = {{"requests", {{"cpu", "200m"}}}};
  t.gateway.connector_resources = {{"limits", {{"memory", "1Gi"}}}};
  deployment = build_deployment(t, inputs());
  EXPECT_EQ(container(deployment, "mcp-proxy")["resources"], t.gateway.proxy_resources);
  EXPECT_EQ(container(deployment, "cloudflared")["resources"], t.gateway.connector_resources);
}

TEST(DeploymentTest, SchedulingFollowsTheSpec) {
  auto t = tunnel();
  auto pod = build_deployment(t, inputs())["spec"]["template"]["spec"];
  EXPECT_FALSE(pod.contains("nodeSelector"));
  EXPECT_FALSE(pod.contains("tolerations"));

  t.gateway.node_selector = {{"pool", "edge"}};
  t.gateway.tolerations = json::parse(R"([{"key": "edge", "operator": "Exists"}])");
  pod = build_deployment(t, inputs())["spec"]["template"]["spec"];
  EXPECT_EQ(pod["nodeSelector"], json({{"pool", "edge"}}));
  EXPECT_EQ(pod["tolerations"], t.gateway.tolerations);
}

TEST(DeploymentTest, SpreadsAcrossNodesAndZonesOnlyWithMoreThanOneReplica) {
  auto t = tunnel();
  t.gateway.replicas = 1;
  EXPECT_FALSE(build_deployment(t, inputs())["spec"]["template"]["spec"].contains(
      "topologySpreadConstraints"));

  t.gateway.replicas = 2;
  auto constraints =
      build_deployment(t, inputs())["spec"]["template"]["spec"]["topologySpreadConstraints"];
  std::set<std::string> keys;
  for (auto& c : constraints) {
    keys.insert(c["topologyKey"]);
    EXPECT_EQ(c["maxSkew"], 1);
    EXPECT_EQ(c["whenUnsatisfiable"], "ScheduleAnyway");
    EXPECT_EQ(c["labelSelector"]["matchLabels"], json(gateway_selector(t)));
  }
  EXPECT_EQ(keys, (std::set<std::string>{"kubernetes.io/hostname", "topology.kubernetes.io/zone"}));
}

// --- disruption budget ----------------------------------------------------------------------

TEST(DisruptionBudgetTest, AbsentWithOneReplicaPresentWithTwo) {
  auto t = tunnel();
  t.gateway.replicas = 1;
  EXPECT_FALSE(build_disruption_budget(t).has_value());

  t.gateway.replicas = 2;
  auto budget = build_disruption_budget(t);
  ASSERT_TRUE(budget.has_value());
  EXPECT_EQ((*budget)["apiVersion"], "policy/v1");
  EXPECT_EQ((*budget)["kind"], "PodDisruptionBudget");
  EXPECT_EQ((*budget)["spec"]["maxUnavailable"], 1);
  EXPECT_EQ((*budget)["spec"]["selector"]["matchLabels"], json(gateway_selector(t)));
}

// --- network policy -------------------------------------------------------------------------

TEST(NetworkPolicyTest, SelectsTheGatewayAndAllowsNoIngress) {
  const auto t = tunnel();
  auto policy = build_network_policy(t, inputs());
  EXPECT_EQ(policy["apiVersion"], "networking.k8s.io/v1");
  EXPECT_EQ(policy["kind"], "NetworkPolicy");
  EXPECT_EQ(policy["spec"]["podSelector"]["matchLabels"], json(gateway_selector(t)));
  // Without "Ingress" in policyTypes an empty ingress list would allow everything.
  EXPECT_EQ(policy["spec"]["policyTypes"], json::array({"Ingress", "Egress"}));
  EXPECT_EQ(policy["spec"]["ingress"], json::array());
}

TEST(NetworkPolicyTest, AllowsDnsAndTheTunnelEdgeOnTcpAndUdp7844) {
  auto policy = build_network_policy(tunnel(), inputs());
  EXPECT_TRUE(has_rule(policy, json::parse(R"({"ports": [{"protocol": "UDP", "port": 53},
                                                         {"protocol": "TCP", "port": 53}]})")));
  EXPECT_TRUE(has_rule(policy, json::parse(R"({
      "to": [{"ipBlock": {"cidr": "198.41.192.0/19"}}, {"ipBlock": {"cidr": "2606:4700:a0::/44"}}],
      "ports": [{"protocol": "TCP", "port": 7844}, {"protocol": "UDP", "port": 7844}]})")));
}

TEST(NetworkPolicyTest, AllowsEachServiceRouteToItsPodsOnTheTargetPort) {
  auto policy = build_network_policy(tunnel(), inputs());
  EXPECT_TRUE(has_rule(policy, json::parse(R"({
      "to": [{"podSelector": {"matchLabels": {"app": "search"}}}],
      "ports": [{"protocol": "TCP", "port": 8080}]})")))
      << "numeric targetPort as a number";
  EXPECT_TRUE(has_rule(policy, json::parse(R"({
      "to": [{"podSelector": {"matchLabels": {"app": "docs", "tier": "web"}}}],
      "ports": [{"protocol": "TCP", "port": "http"}]})")))
      << "named targetPort as the name";
}

TEST(NetworkPolicyTest, AddsNoPodRuleForAServiceWithoutSelector) {
  auto in = inputs();
  in.routes = {service_route("manual", {}, "9000")};
  // DNS and the edge only.
  EXPECT_EQ(build_network_policy(tunnel(), in)["spec"]["egress"].size(), 2u);
}

TEST(NetworkPolicyTest, AllowsAnIpUrlRouteAsASingleAddress) {
  auto policy = build_network_policy(tunnel(), inputs());
  EXPECT_TRUE(has_rule(policy, json::parse(R"({
      "to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}],
      "ports": [{"protocol": "TCP", "port": 8443}]})")));
}

TEST(NetworkPolicyTest, AllowsAHostnameUrlRouteToTheAllowedCidrs) {
  auto t = tunnel();
  t.allowed_cidrs = {"10.0.0.0/8", "172.16.0.0/12"};
  auto policy = build_network_policy(t, inputs());
  EXPECT_TRUE(has_rule(policy, json::parse(R"({
      "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"ipBlock": {"cidr": "172.16.0.0/12"}}],
      "ports": [{"protocol": "TCP", "port": 443}]})")));
  // DNS, edge, two Service routes, the IP route, the hostname route.
  EXPECT_EQ(policy["spec"]["egress"].size(), 6u);
}

TEST(NetworkPolicyTest, DeduplicatesIdenticalRules) {
  auto in = inputs();
  in.routes = {service_route("a", {{"app", "mcp"}}, "8080"),
               service_route("b", {{"app", "mcp"}}, "8080"),
               url_route("c", "http://10.0.0.9:80", "10.0.0.9", 80),
               url_route("d", "https://10.0.0.9:80", "10.0.0.9", 80)};
  // DNS, edge, one pod rule, one /32.
  EXPECT_EQ(build_network_policy(tunnel(), in)["spec"]["egress"].size(), 4u);
}

// --- golden files -------------------------------------------------------------------------------
// Every object as rendered, compared byte for byte with testdata/. Without the guard the output
// must never change unnoticed (a change rolls every gateway in every cluster on upgrade).
void expect_golden(const std::string& name, const std::string& actual) {
  testing::expect_golden("tests/unit/controllers/mcptunnel/testdata", name, actual);
}

McpTunnel golden_tunnel() {
  auto t = tunnel();
  t.upstream_ca_secret_name = "corp-ca";
  t.include_system_cas = true;
  return t;
}

TEST(GatewayGoldenTest, WithoutTheGuardEveryObjectIsAsBefore) {
  const auto t = golden_tunnel();
  const auto in = inputs();
  expect_golden("no-guard/configmap.json", build_config_map(t, in).dump(2) + "\n");
  expect_golden("no-guard/deployment.json", build_deployment(t, in).dump(2) + "\n");
  expect_golden("no-guard/networkpolicy.json", build_network_policy(t, in).dump(2) + "\n");
  expect_golden("no-guard/poddisruptionbudget.json", build_disruption_budget(t)->dump(2) + "\n");
  expect_golden("no-guard/config.yaml", render_proxy_config(t, in));
  expect_golden("no-guard/gateway-hash", gateway_hash(t, in) + "\n");
}

// --- the guard ----------------------------------------------------------------------------------

RouteSpec spec_route(const std::string& name, std::optional<RoutePolicy> policy = std::nullopt) {
  RouteSpec route;
  route.name = name;
  route.url = "http://placeholder:1";  // the renderer reads the resolved upstream from the inputs
  route.policy = std::move(policy);
  return route;
}

// The spec behind inputs(): routes in the same (not name) order, two of them with a policy.
McpTunnel guarded_tunnel() {
  auto t = golden_tunnel();
  RoutePolicy search;
  search.allow = {"search_*", "get_*"};
  search.deny = {"delete_*"};
  search.rate_limit = RateLimitSpec{20, 40};
  RoutePolicy legacy;
  legacy.deny = {"admin_*", "*_[dD]rop"};
  t.routes = {spec_route("search", search), spec_route("docs"), spec_route("legacy", legacy),
              spec_route("wiki")};
  t.guard.audit_set = true;
  t.guard.audit_level = AuditLevel::kFull;
  t.guard.redact_keys = {"ssn", "password"};
  return t;
}

TEST(GatewayGoldenTest, WithTheGuardTheConfigsAndThePodAreAsReviewed) {
  const auto t = guarded_tunnel();
  const auto in = inputs();
  ASSERT_TRUE(t.guard_enabled());
  expect_golden("guard/configmap.json", build_config_map(t, in).dump(2) + "\n");
  expect_golden("guard/deployment.json", build_deployment(t, in).dump(2) + "\n");
  expect_golden("guard/config.yaml", render_proxy_config(t, in));
  expect_golden("guard/guard.yaml", render_guard_config(t, in));
  // The guard dials the upstreams from the same pod: the egress rules do not change.
  EXPECT_EQ(build_network_policy(t, in), build_network_policy(golden_tunnel(), in));
  EXPECT_EQ(build_disruption_budget(t), build_disruption_budget(golden_tunnel()));
}

TEST(GuardProxyConfigTest, RoutesGoToTheGuardListenersAndOnlyLoopbackIsAllowed) {
  const YAML::Node config = YAML::Load(render_proxy_config(guarded_tunnel(), inputs()));
  // spec.routes[i] -> 127.0.0.1:9100+i, whatever the map's (name) order.
  EXPECT_EQ(config["routes"]["search"].as<std::string>(), "http://127.0.0.1:9100");
  EXPECT_EQ(config["routes"]["docs"].as<std::string>(), "http://127.0.0.1:9101");
  EXPECT_EQ(config["routes"]["legacy"].as<std::string>(), "http://127.0.0.1:9102");
  EXPECT_EQ(config["routes"]["wiki"].as<std::string>(), "http://127.0.0.1:9103");
  EXPECT_EQ(config["upstream"]["allowed_ips"].as<std::vector<std::string>>(),
            std::vector<std::string>{"127.0.0.1/32"});
  // Plain HTTP to loopback: no CA for the proxy to trust.
  EXPECT_FALSE(config["upstream"]["tls"]["include_system_cas"].as<bool>());
  EXPECT_FALSE(config["upstream"]["tls"]["ca_file"]);
  EXPECT_EQ(config["listen_addr"].as<std::string>(), ":8080");
  EXPECT_EQ(config["tunnel_domain"].as<std::string>(), "a1b2c3.tunnels.example.com");
}

TEST(GuardConfigTest, CarriesTheRealUpstreamsThePoliciesAndTheAudit) {
  const YAML::Node config = YAML::Load(render_guard_config(guarded_tunnel(), inputs()));
  EXPECT_EQ(config["metrics_listen"].as<std::string>(), "0.0.0.0:9464");
  EXPECT_EQ(config["audit"]["level"].as<std::string>(), "full");
  // The user's keys are added to the built-in ones, never replace them.
  EXPECT_EQ(config["audit"]["redact_keys"].as<std::vector<std::string>>(),
            (std::vector<std::string>{"password", "*token*", "*secret*", "authorization", "ssn"}));
  EXPECT_FALSE(config["limits"]);  // the guard's defaults

  const YAML::Node routes = config["routes"];
  ASSERT_TRUE(routes.IsSequence());
  ASSERT_EQ(routes.size(), 4u);
  const std::vector<std::string> names = {"search", "docs", "legacy", "wiki"};  // spec order
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(routes[i]["name"].as<std::string>(), names[i]);
    EXPECT_EQ(routes[i]["listen"].as<std::string>(), "127.0.0.1:" + std::to_string(9100 + i));
    EXPECT_EQ(routes[i]["allowed_cidrs"].as<std::vector<std::string>>(),
              (std::vector<std::string>{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}));
  }
  EXPECT_EQ(routes[0]["upstream"].as<std::string>(), "http://search.tools.svc.cluster.local:80");
  EXPECT_EQ(routes[0]["tools"]["allow"].as<std::vector<std::string>>(),
            (std::vector<std::string>{"search_*", "get_*"}));
  EXPECT_EQ(routes[0]["tools"]["deny"].as<std::vector<std::string>>(),
            std::vector<std::string>{"delete_*"});
  EXPECT_EQ(routes[0]["rate_limit"]["requests_per_second"].as<int>(), 20);
  EXPECT_EQ(routes[0]["rate_limit"]["burst"].as<int>(), 40);
  EXPECT_FALSE(routes[0]["upstream_ca_file"]);  // http
  // No policy: no tools block (the guard allows every tool) and no rate limit.
  EXPECT_FALSE(routes[1]["tools"]);
  EXPECT_FALSE(routes[1]["rate_limit"]);
  EXPECT_EQ(routes[2]["upstream"].as<std::string>(), "https://10.0.0.5:8443");
  EXPECT_FALSE(routes[2]["tools"]["allow"]);  // absent: every tool deny does not match
  EXPECT_EQ(routes[2]["tools"]["deny"].as<std::vector<std::string>>(),
            (std::vector<std::string>{"admin_*", "*_[dD]rop"}));
  // HTTPS upstreams are verified against the tunnel's upstream CA, in the guard's own mount.
  EXPECT_EQ(routes[2]["upstream_ca_file"].as<std::string>(),
            "/etc/perimeter-mcp-guard/upstream-ca/ca.crt");
  EXPECT_EQ(routes[3]["upstream"].as<std::string>(), "https://wiki.corp.example:443");
}

TEST(GuardConfigTest, ServesOnlyResolvedRoutesAndKeepsTheirSpecPorts) {
  auto in = inputs();
  in.routes.erase(in.routes.begin());  // search (spec index 0) did not resolve
  const auto t = guarded_tunnel();
  const YAML::Node guard = YAML::Load(render_guard_config(t, in));
  ASSERT_EQ(guard["routes"].size(), 3u);
  EXPECT_EQ(guard["routes"][0]["name"].as<std::string>(), "docs");
  EXPECT_EQ(guard["routes"][0]["listen"].as<std::string>(), "127.0.0.1:9101");
  const YAML::Node proxy = YAML::Load(render_proxy_config(t, in));
  EXPECT_FALSE(proxy["routes"]["search"]);
  EXPECT_EQ(proxy["routes"]["docs"].as<std::string>(), "http://127.0.0.1:9101");
}

TEST(GuardConfigTest, MetadataLevelAndNoCaFileWithoutAnUpstreamCa) {
  auto t = guarded_tunnel();
  t.guard.audit_set = false;
  t.guard.audit_level = AuditLevel::kMetadata;
  t.guard.redact_keys.clear();
  t.upstream_ca_secret_name.clear();
  const YAML::Node config = YAML::Load(render_guard_config(t, inputs()));
  EXPECT_EQ(config["audit"]["level"].as<std::string>(), "metadata");
  EXPECT_EQ(config["audit"]["redact_keys"].size(), 4u);
  for (const auto& route : config["routes"]) EXPECT_FALSE(route["upstream_ca_file"]);
}

TEST(GuardConfigTest, ThrowsForARouteTheSpecDoesNotHave) {
  auto t = guarded_tunnel();
  t.routes.pop_back();  // wiki resolved but is not in the spec: a bug, not a user error
  EXPECT_THROW(render_guard_config(t, inputs()), std::logic_error);
}

TEST(GuardConfigMapTest, HoldsBothConfigsUnderTheirKeys) {
  const auto t = guarded_tunnel();
  auto config_map = build_config_map(t, inputs());
  EXPECT_EQ(config_map["data"].size(), 2u);
  EXPECT_EQ(config_map["data"]["config.yaml"], render_proxy_config(t, inputs()));
  EXPECT_EQ(config_map["data"]["guard.yaml"], render_guard_config(t, inputs()));
}

TEST(GuardDeploymentTest, AddsARestrictedGuardContainerProbedOnItsMetricsListener) {
  const auto t = guarded_tunnel();
  auto deployment = build_deployment(t, inputs());
  auto& pod = deployment["spec"]["template"]["spec"];
  ASSERT_EQ(pod["containers"].size(), 3u);
  EXPECT_EQ(pod["containers"][0]["name"], "mcp-proxy");
  EXPECT_EQ(pod["containers"][1]["name"], "cloudflared");
  auto& guard = container(deployment, "mcp-guard");
  EXPECT_EQ(guard["image"], kDefaultGuardImage);
  EXPECT_EQ(std::string(kDefaultGuardImage), "localhost/perimeter/perimeter-mcp-guard:0.1.0");
  EXPECT_EQ(guard["imagePullPolicy"], "IfNotPresent");
  EXPECT_EQ(guard["args"], json::array({"--config", "/etc/perimeter-mcp-guard/config/guard.yaml"}));
  EXPECT_FALSE(guard.contains("env"));
  EXPECT_EQ(guard["ports"], json::parse(R"([{"name": "guard-metrics", "containerPort": 9464,
                                             "protocol": "TCP"}])"));
  for (const char* probe : {"readinessProbe", "livenessProbe"}) {
    SCOPED_TRACE(probe);
    EXPECT_EQ(guard[probe]["httpGet"],
              json::parse(R"({"path": "/metrics", "port": "guard-metrics"})"));
  }
  auto& sc = guard["securityContext"];
  EXPECT_EQ(sc["allowPrivilegeEscalation"], false);
  EXPECT_EQ(sc["readOnlyRootFilesystem"], true);
  EXPECT_EQ(sc["runAsNonRoot"], true);
  EXPECT_EQ(sc["privileged"], false);
  EXPECT_EQ(sc["capabilities"]["drop"], json::array({"ALL"}));
  // uid 65532 and seccomp RuntimeDefault come from the pod, as for the other two.
  EXPECT_EQ(pod["securityContext"]["runAsUser"], 65532);
  EXPECT_EQ(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
  EXPECT_EQ(guard["resources"], json::parse(R"({"requests": {"cpu": "50m", "memory": "64Mi"},
                                                "limits": {"memory": "256Mi"}})"));
  EXPECT_GT(pod["terminationGracePeriodSeconds"].get<int>(), 25);  // the guard's drain
}

TEST(GuardDeploymentTest, MountsItsConfigAsADirectoryFromTheGatewayConfigMap) {
  const auto t = guarded_tunnel();
  auto deployment = build_deployment(t, inputs());
  auto& guard = container(deployment, "mcp-guard");
  json* volume = volume_named(deployment, "guard-config");
  ASSERT_NE(volume, nullptr);
  EXPECT_EQ((*volume)["configMap"]["name"], "billing-gateway-config");
  EXPECT_EQ((*volume)["configMap"]["items"],
            json::parse(R"([{"key": "guard.yaml", "path": "guard.yaml"}])"));
  json* mount = mount_of(guard, "guard-config");
  ASSERT_NE(mount, nullptr);
  // A directory mount (no subPath): the kubelet swaps it, and the guard reloads the policies.
  EXPECT_FALSE(mount->contains("subPath"));
  EXPECT_EQ((*mount)["mountPath"], dirname(kGuardConfigFile));
  EXPECT_EQ((*mount)["readOnly"], true);
  // The proxy sees only its own config.
  EXPECT_EQ(mount_of(container(deployment, "mcp-proxy"), "guard-config"), nullptr);
  // The upstream CA moves to the guard, which is what dials HTTPS upstreams now.
  json* ca = mount_of(guard, "upstream-ca");
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ((*ca)["mountPath"], "/etc/perimeter-mcp-guard/upstream-ca");
  EXPECT_EQ(mount_of(container(deployment, "mcp-proxy"), "upstream-ca"), nullptr);
  // Neither the connector token nor the server certificate reach the guard.
  EXPECT_EQ(mount_of(guard, (*volume_for_secret(deployment, "billing-token"))["name"]), nullptr);
  EXPECT_EQ(mount_of(guard, (*volume_for_secret(deployment, "billing-tls"))["name"]), nullptr);
}

TEST(GuardDeploymentTest, ImageAndResourcesFollowTheSpec) {
  auto t = guarded_tunnel();
  t.guard.image = "registry.example/perimeter-mcp-guard:0.1.0";
  t.guard.resources = json::parse(R"({"limits": {"memory": "1Gi"}})");
  auto deployment = build_deployment(t, inputs());
  auto& guard = container(deployment, "mcp-guard");
  EXPECT_EQ(guard["image"], "registry.example/perimeter-mcp-guard:0.1.0");
  EXPECT_EQ(guard["resources"], json::parse(R"({"limits": {"memory": "1Gi"}})"));
}

TEST(GuardDeploymentTest, EnabledFalseRendersExactlyTheUnguardedGateway) {
  auto t = guarded_tunnel();
  t.guard.enabled = false;
  const auto in = inputs();
  EXPECT_EQ(build_deployment(t, in), build_deployment(golden_tunnel(), in));
  EXPECT_EQ(build_config_map(t, in), build_config_map(golden_tunnel(), in));
}

TEST(GuardHashTest, PolicyAndAuditEditsDoNotRollThePods) {
  const auto in = inputs();
  const auto base = guarded_tunnel();
  const std::string hash = gateway_hash(base, in);

  auto edited = base;
  edited.routes[0].policy->deny.push_back("drop_*");
  edited.routes[0].policy->rate_limit = RateLimitSpec{1, 1};
  edited.routes[1].policy = RoutePolicy{};  // a policy on a route that had none
  edited.routes[2].policy.reset();
  edited.guard.audit_level = AuditLevel::kMetadata;
  edited.guard.redact_keys = {"iban"};
  EXPECT_NE(render_guard_config(edited, in), render_guard_config(base, in));
  EXPECT_EQ(gateway_hash(edited, in), hash);
}

TEST(GuardHashTest, ListenerUpstreamAndOnOffChangesRollThePods) {
  const auto in = inputs();
  const auto base = guarded_tunnel();
  const std::string hash = gateway_hash(base, in);

  auto reordered = base;  // the ports move with the spec order
  std::swap(reordered.routes[0], reordered.routes[1]);
  EXPECT_NE(gateway_hash(reordered, in), hash);

  auto moved = in;  // a Service's port changed: the guard's upstream, not the proxy's route
  moved.routes[0].upstream = "http://search.tools.svc.cluster.local:8080";
  EXPECT_EQ(render_proxy_config(base, moved), render_proxy_config(base, in));
  EXPECT_NE(gateway_hash(base, moved), hash);

  auto cidrs = base;
  cidrs.allowed_cidrs = {"10.0.0.0/8"};
  EXPECT_NE(gateway_hash(cidrs, in), hash);

  auto off = base;
  off.guard.enabled = false;
  EXPECT_NE(gateway_hash(off, in), hash);
  // Off is the hash of before the guard existed: upgrading the operator rolls no gateway.
  EXPECT_EQ(gateway_hash(off, in), gateway_hash(golden_tunnel(), in));
}

#ifdef PERIMETER_HAVE_MCP_GUARD
// The guard's own parser accepts what the operator renders (`perimeter-mcp-guard --check`;
// docs/mcp-guard.md). Compiled when the guard is in the tree; the build makes the binary first.
TEST(GuardConfigTest, TheGuardBinaryAcceptsTheRenderedConfig) {
  const char* bin_dir = std::getenv("PERIMETER_BIN_DIR");
  const std::string guard = std::string(bin_dir != nullptr ? bin_dir : "") + "/perimeter-mcp-guard";
  ASSERT_EQ(::access(guard.c_str(), X_OK), 0) << guard << " is not built";
  // Every route of the golden spec, the https ones with the CA Secret's file: --check reads the
  // CA file as a start would, so the pod's path is pointed at a real CA certificate here.
  char dir_template[] = "/tmp/mcptunnel-guard-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string ca_path = std::string(dir_template) + "/ca.crt";
  const auto ca_key = pki::PrivateKey::generate_ec_p256();
  pki::CaRequest ca_request;
  ca_request.common_name = "corp-ca";
  ca_request.lifetime = std::chrono::hours(1);
  std::ofstream(ca_path)
      << pki::issue_self_signed_ca(ca_request, ca_key, std::chrono::system_clock::now()).pem();
  std::string rendered = render_guard_config(guarded_tunnel(), inputs());
  const std::string pod_ca = std::string(kGuardUpstreamCaDir) + "/ca.crt";
  ASSERT_NE(rendered.find(pod_ca), std::string::npos) << rendered;
  for (std::size_t at; (at = rendered.find(pod_ca)) != std::string::npos;) {
    rendered.replace(at, pod_ca.size(), ca_path);
  }
  const std::string path = std::string(dir_template) + "/guard.yaml";
  std::ofstream(path) << rendered;
  const std::string command = guard + " --check --config " + path + " 2>&1";
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  std::remove(path.c_str());
  std::remove(ca_path.c_str());
  ::rmdir(dir_template);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("config ok"), std::string::npos) << output;
}
#endif

}  // namespace
}  // namespace perimeter::mcptunnel
