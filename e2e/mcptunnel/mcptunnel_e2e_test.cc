// McpTunnel end to end, as separate processes over loopback: a real control plane (kube-apiserver,
// etcd, controller manager, scheduler, KWOK nodes), perimeter-sim as the Tunnels API (its workload
// identity federation verifies the operator's ServiceAccount tokens against this apiserver's
// issuer keys), and the operator binary. KWOK runs no containers: these tests stop at the gateway
// pod (admitted, scheduled, Ready); no local stand-in for the tunnel edge exists.
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "core/base64.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/tools.h"
#include "operator/exposition.h"
#include "operator/operator_process.h"
#include "pki/pki.h"
#include "process/process.h"

namespace perimeter::e2e {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::metric_sum;

constexpr const char* kIssuer = "https://kubernetes.default.svc.cluster.local";
constexpr const char* kAudience = "https://api.anthropic.com";
constexpr const char* kOperatorNamespace = "perimeter-system";
constexpr const char* kOperatorAccount = "perimeter-operator";

kube::ResourceType mcp_tunnels() {
  return {"perimeter.dev", "v1alpha1", "mcptunnels", "McpTunnel", true};
}

std::string source_dir() { return std::getenv("PERIMETER_SOURCE_DIR"); }
std::string bin_dir() { return std::getenv("PERIMETER_BIN_DIR"); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Waits for `done`, polling; fails the test with `what` when it does not happen in `limit`.
// The limit is a generous bound on a shared machine, not a performance assertion.
template <typename Pred>
bool eventually(Pred done, seconds limit, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(250));
  }
  ADD_FAILURE() << "timed out waiting for " << what;
  return false;
}

std::string secret_data(const json& secret, const std::string& key) {
  std::string out;
  if (!secret.contains("data") || !secret["data"].contains(key)) return out;
  base64_decode_any(secret["data"][key].get<std::string>(), &out);
  return out;
}

class McpTunnelE2eTest : public ::testing::Test {
 protected:
  static testing::LocalClusterOptions cluster_options() {
    testing::LocalClusterOptions options;
    options.controller_manager = true;  // Deployments -> ReplicaSets -> Pods, garbage collection
    options.scheduler = true;
    options.kwok_nodes = 3;
    return options;
  }

  static void SetUpTestSuite() {
    auto& cluster = testing::shared_cluster(cluster_options());
    kubectl_ = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
               " --kubeconfig " + cluster.kubeconfig_path();
    run_ok(kubectl_ + " apply -f " + source_dir() + "/crds/ >/dev/null && " + kubectl_ +
           " wait --for condition=established --timeout=60s crd/mcptunnels.perimeter.dev");
    // The operator's identity, as the chart creates it; its tokens are what the simulator's
    // federation rules trust.
    process::run_shell(kubectl_ + " create namespace " + kOperatorNamespace + " 2>/dev/null");
    process::run_shell(kubectl_ + " -n " + kOperatorNamespace + " create serviceaccount " +
                       kOperatorAccount + " 2>/dev/null");
    // The issuer's discovery document and keys are public, as for any OIDC provider.
    process::run_shell(kubectl_ +
                       " create clusterrolebinding mcptunnel-e2e-oidc-discovery "
                       "--clusterrole=system:service-account-issuer-discovery "
                       "--group=system:unauthenticated 2>/dev/null");
    sim_ = new testing::SimProcess({"--oidc-issuer-url", cluster.apiserver_url(), "--oidc-issuer",
                                    kIssuer, "--oidc-ca-file", cluster.ca_file()});
  }
  static void TearDownTestSuite() {
    delete sim_;
    sim_ = nullptr;
  }

  static std::string run_ok(const std::string& command) {
    const auto result = process::run_shell(command);
    EXPECT_EQ(result.exit_code, 0) << command << "\n" << result.output;
    return result.output;
  }

  void SetUp() override {
    auto& cluster = testing::shared_cluster(cluster_options());
    kubeconfig_ = cluster.kubeconfig_path();
    config_ = kube::Config::from_kubeconfig_file(kubeconfig_);
    config_.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config_);
    tunnels_ = client(mcp_tunnels());
    ns_ = "mcpt-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    // Gateway pods must be admitted under PodSecurity restricted.
    client(kube::resources::namespaces())
        ->create("", {{"apiVersion", "v1"},
                      {"kind", "Namespace"},
                      {"metadata",
                       {{"name", ns_},
                        {"labels", {{"pod-security.kubernetes.io/enforce", "restricted"},
                                    {"pod-security.kubernetes.io/warn", "restricted"}}}}}});
    const auto organization = testing::http_call(sim_->url(), "POST", "/admin/organizations",
                                                 json({{"name", ns_}}).dump());
    ASSERT_EQ(organization.status, 201) << organization.body;
    organization_ = organization.json()["id"];
    const auto rule = testing::http_call(
        sim_->url(), "POST", "/admin/federation_rules",
        json({{"issuer", kIssuer},
              {"audience", kAudience},
              {"subjects", {std::string("system:serviceaccount:") + kOperatorNamespace + ":" +
                            kOperatorAccount}},
              {"organization_id", organization_},
              {"service_account_id", "svac_perimeter"}})
            .dump());
    ASSERT_EQ(rule.status, 201) << rule.body;
    rule_ = rule.json()["id"];
    logs_ = std::make_unique<testing::TempDir>();
  }

  void TearDown() override {
    operator_.reset();
    set_faults(json::object({{"error_5xx_rate", 0.0}, {"error_429_rate", 0.0},
                             {"latency_ms", 0}}));
    if (HasFailure()) {
      const std::string log = read_file(logs_->path() + "/operator.log");
      std::cerr << "---- operator log (tail) ----\n"
                << (log.size() > 200000 ? log.substr(log.size() - 200000) : log);
    }
  }

  std::unique_ptr<kube::ResourceClient> client(const kube::ResourceType& type) {
    return std::make_unique<kube::ResourceClient>(*transport_, type, metrics_);
  }

  void start_operator(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "--allowed-api-hosts", sim_->url(),
        "--tunnels-service-account", std::string(kOperatorNamespace) + "/" + kOperatorAccount,
        "--ca-rotation-overlap-seconds", "10",
        "--tunnel-archive-deadline-seconds", "8",
        // Only this test's namespace: another test's leftovers never meet this operator.
        "--namespace", ns_};
    args.insert(args.end(), extra.begin(), extra.end());
    operator_ = std::make_unique<testing::OperatorProcess>(testing::OperatorProcessOptions{
        bin_dir() + "/perimeter-operator", kubeconfig_,
        logs_->path() + "/operator.log", args});
  }

  static void set_faults(const json& faults) {
    const auto result = testing::http_call(sim_->url(), "POST", "/admin/faults", faults.dump());
    ASSERT_EQ(result.status, 200) << result.body;
  }

  std::string tunnel_yaml(const std::string& name, const std::string& extra_spec = "",
                          const std::string& routes = "") const {
    return "apiVersion: perimeter.dev/v1alpha1\nkind: McpTunnel\nmetadata:\n  name: " + name +
           "\n  namespace: " + ns_ +
           "\nspec:\n"
           "  tunnel: {create: {}}\n"
           "  credentials:\n"
           "    mode: WorkloadIdentity\n"
           "    apiBaseUrl: " + sim_->url() + "\n"
           "    workloadIdentity: {federationRuleId: " + rule_ + ", organizationId: " +
           organization_ + ", serviceAccountId: svac_perimeter}\n" +
           (routes.empty() ? "  routes:\n    - {name: docs, url: 'http://10.0.0.5:8080'}\n"
                           : routes) +
           extra_spec;
  }

  process::ShellResult apply(const std::string& yaml) {
    const std::string path = logs_->path() + "/object-" + std::to_string(objects_++) + ".yaml";
    std::ofstream(path) << yaml;
    return process::run_shell(kubectl_ + " apply -f " + path + " 2>&1");
  }

  json tunnel(const std::string& name) { return tunnels_->get(ns_, name); }

  static std::string condition(const json& object, const std::string& type) {
    for (const auto& c : object.value("status", json::object()).value("conditions", json::array())) {
      if (c.value("type", "") == type) return c.value("status", "") + "/" + c.value("reason", "");
    }
    return "";
  }

  bool wait_ready(const std::string& name, seconds limit = seconds(120)) {
    return eventually(
        [&] { return condition(tunnel(name), "Ready").rfind("True/", 0) == 0; }, limit,
        name + " Ready; last status: " + tunnel(name).value("status", json::object()).dump());
  }

  // The simulator's record of every tunnel of this test's organization, archived too.
  json sim_tunnels() {
    const auto result = testing::http_call(sim_->url(), "GET",
                                           "/admin/tunnels?organization_id=" + organization_);
    EXPECT_EQ(result.status, 200) << result.body;
    const json body = result.json();
    return body.is_array() ? body : body.value("data", json::array());
  }
  json sim_tunnel(const std::string& id) {
    const auto result = testing::http_call(sim_->url(), "GET", "/admin/tunnels/" + id);
    EXPECT_EQ(result.status, 200) << result.body;
    return result.json();
  }

  static std::string kubectl_;
  static testing::SimProcess* sim_;
  static int counter_;
  std::string kubeconfig_;
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  std::unique_ptr<kube::ResourceClient> tunnels_;
  std::string ns_, organization_, rule_;
  std::unique_ptr<testing::TempDir> logs_;
  std::unique_ptr<testing::OperatorProcess> operator_;
  int objects_ = 0;
};

std::string McpTunnelE2eTest::kubectl_;
testing::SimProcess* McpTunnelE2eTest::sim_ = nullptr;
int McpTunnelE2eTest::counter_ = 0;

// Create: the tunnel exists once in the simulator, its CA passed the service's rules, the gateway
// is admitted under PodSecurity restricted and Ready, and what the operator wrote is what the
// proxy and the edge need.
TEST_F(McpTunnelE2eTest, CreateProvisionsRegistersAndServesTheRoutes) {
  // A Service route whose Service comes later, and a URL route.
  ASSERT_EQ(apply(tunnel_yaml("tickets", "",
                              "  routes:\n"
                              "    - {name: tickets, service: {name: tickets, portName: mcp}}\n"
                              "    - {name: docs, url: 'http://10.0.0.5:8080'}\n"))
                .exit_code,
            0);
  start_operator({"--log-level", "debug"});
  ASSERT_TRUE(eventually(
      [&] { return condition(tunnel("tickets"), "RoutesResolved") == "False/UpstreamNotFound"; },
      seconds(30), "RoutesResolved False for the missing Service"));
  json object = tunnel("tickets");
  const json routes = object["status"]["routes"];
  ASSERT_EQ(routes.size(), 2u) << object["status"].dump();
  EXPECT_EQ(object["status"]["routesSummary"], "1/2");
  for (const auto& route : routes) {
    if (route["name"] == "tickets") {
      EXPECT_FALSE(route["ready"].get<bool>());
      EXPECT_NE(route.value("reason", "").find("Service tickets does not exist"), std::string::npos);
    } else {
      EXPECT_TRUE(route["ready"].get<bool>());  // the other route is served meanwhile
    }
  }

  run_ok(kubectl_ + " -n " + ns_ +
         " create service clusterip tickets --tcp=8443:3000 >/dev/null && " + kubectl_ + " -n " +
         ns_ + " patch service tickets --type json -p " +
         "'[{\"op\":\"replace\",\"path\":\"/spec/ports/0/name\",\"value\":\"mcp\"}]'");
  ASSERT_TRUE(wait_ready("tickets", seconds(40)));
  object = tunnel("tickets");
  const json status = object["status"];
  EXPECT_EQ(status["routesSummary"], "2/2");
  EXPECT_EQ(status["observedGeneration"], object["metadata"]["generation"]);
  const std::string tunnel_id = status["tunnelId"];
  const std::string domain = status["domain"];
  EXPECT_EQ(status["connectedReplicas"], 2);
  for (const char* type : {"TunnelProvisioned", "CredentialsReady", "CertificateRegistered",
                           "ConnectorConnected", "RoutesResolved"}) {
    EXPECT_EQ(condition(object, type).substr(0, 4), "True") << type << ": " << status.dump();
  }

  // Exactly one tunnel in the organization, named after the resource's uid, with our CA active.
  const json all = sim_tunnels();
  ASSERT_EQ(all.size(), 1u) << all.dump();
  const json record = sim_tunnel(tunnel_id);
  EXPECT_NE(record["tunnel"].value("display_name", "").find(object["metadata"]["uid"].get<std::string>()),
            std::string::npos);
  ASSERT_EQ(record["active_certificates"], 1) << record.dump();
  for (const auto& certificate : record["certificates"]) {
    EXPECT_EQ(certificate["fingerprint"], status["certificate"]["caFingerprint"]);
    EXPECT_TRUE(certificate["archived_at"].is_null());
  }

  // The server certificate: signed directly by that CA, for *.<domain>, verified by openssl.
  auto secrets = client(kube::resources::secrets());
  const json tls = secrets->get(ns_, "tickets-tls");
  const json ca_secret = secrets->get(ns_, "tickets-ca");
  const auto leaf = pki::Certificate::from_pem(secret_data(tls, "tls.crt"));
  const auto ca = pki::Certificate::from_pem(secret_data(ca_secret, "ca.crt"));
  EXPECT_EQ(ca.fingerprint_sha256(), status["certificate"]["caFingerprint"]);
  EXPECT_EQ(pki::verify_server_certificate(leaf, ca, "tickets." + domain), std::nullopt);
  EXPECT_EQ(pki::tunnel_ca_violation(ca.pem()), std::nullopt);
  {
    const std::string dir = logs_->path();
    std::ofstream(dir + "/leaf.pem") << leaf.pem();
    std::ofstream(dir + "/ca.pem") << ca.pem();
    const auto verified = process::run_shell("openssl verify -CAfile " + dir + "/ca.pem " + dir +
                                             "/leaf.pem 2>&1");
    EXPECT_EQ(verified.exit_code, 0) << verified.output;
  }
  EXPECT_EQ(leaf.serial_hex(), status["certificate"]["serial"]);

  // The proxy's config, parsed back: routes as a map to the Service's cluster name.
  const json config_map = client(kube::resources::config_maps())->get(ns_, "tickets-gateway-config");
  const YAML::Node config = YAML::Load(config_map["data"]["config.yaml"].get<std::string>());
  EXPECT_EQ(config["tunnel_domain"].as<std::string>(), domain);
  ASSERT_TRUE(config["routes"].IsMap());
  EXPECT_EQ(config["routes"]["tickets"].as<std::string>(),
            "http://tickets." + ns_ + ".svc.cluster.local:8443");
  EXPECT_EQ(config["routes"]["docs"].as<std::string>(), "http://10.0.0.5:8080");
  EXPECT_EQ(config["upstream"]["allowed_ips"].size(), 3u);

  // The token the connector runs with is the tunnel's current one; no pod spec carries it.
  const json token_secret = secrets->get(ns_, "tickets-token");
  const auto accepted = testing::http_call(
      sim_->url(), "POST", "/admin/tunnels/" + tunnel_id + "/connect",
      json({{"tunnel_token", secret_data(token_secret, "token")}}).dump());
  EXPECT_TRUE(accepted.json().value("accepted", false)) << accepted.body;
  const json deployment = client(kube::resources::deployments())->get(ns_, "tickets-gateway");
  EXPECT_EQ(deployment["spec"]["template"].dump().find(secret_data(token_secret, "token")),
            std::string::npos);
  EXPECT_EQ(deployment["status"].value("availableReplicas", 0), 2) << deployment["status"].dump();
  // No private key anywhere but the two Secrets.
  const std::string ca_key = secret_data(ca_secret, "ca.key");
  ASSERT_FALSE(ca_key.empty());
  EXPECT_EQ(object.dump().find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(config_map.dump().find("PRIVATE KEY"), std::string::npos);
  const auto events = run_ok(kubectl_ + " -n " + ns_ + " get events -o json");
  EXPECT_EQ(events.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(read_file(logs_->path() + "/operator.log").find("PRIVATE KEY"), std::string::npos);
}

// Every invalid McpTunnel is refused by the apiserver itself, naming the field.
TEST_F(McpTunnelE2eTest, InvalidMcpTunnelsAreRejectedNamingTheField) {
  struct Case {
    const char* what;
    std::string yaml;
    const char* expected;  // text the refusal must contain
  };
  const std::string url_route = "  routes:\n    - {name: docs, url: 'http://10.0.0.5:8080'}\n";
  auto with_routes = [&](const std::string& name, const std::string& routes) {
    return tunnel_yaml(name, "", routes);
  };
  const std::vector<Case> cases = {
      {"a route name that is not a DNS label",
       with_routes("bad1", "  routes:\n    - {name: Bad_Name, url: 'http://10.0.0.5:80'}\n"),
       "spec.routes[0].name"},
      {"a duplicate route",
       with_routes("bad2",
                   "  routes:\n    - {name: a, url: 'http://10.0.0.5:80'}\n"
                   "    - {name: a, url: 'http://10.0.0.6:80'}\n"),
       "Duplicate value"},
      {"a URL with a path",
       with_routes("bad3", "  routes:\n    - {name: a, url: 'http://10.0.0.5:80/mcp'}\n"),
       "must not have a path"},
      {"a URL without a port",
       with_routes("bad4", "  routes:\n    - {name: a, url: 'http://tickets.internal'}\n"),
       "must name a port"},
      {"a URL that is not http",
       with_routes("bad5", "  routes:\n    - {name: a, url: 'ftp://10.0.0.5:21'}\n"),
       "http or https"},
      {"both a Service and a URL",
       with_routes("bad6",
                   "  routes:\n    - {name: a, url: 'http://10.0.0.5:80', service: "
                   "{name: s, port: 80}}\n"),
       "exactly one of service and url"},
      {"no routes", with_routes("bad7", "  routes: []\n"), "spec.routes"},
      {"an invalid CIDR", tunnel_yaml("bad8", "  upstream: {allowedCIDRs: ['10.0.0.0/33']}\n"),
       "spec.upstream.allowedCIDRs[0]"},
      {"an IPv6 CIDR for the proxy's IPv4 list",
       tunnel_yaml("bad9", "  upstream: {allowedCIDRs: ['fd00::/8']}\n"), "IPv4 CIDR"},
      {"link-local (cloud metadata) allowed",
       tunnel_yaml("bad10", "  upstream: {allowedCIDRs: ['169.254.0.0/16']}\n"), "link-local"},
      {"both id and create",
       [&] {
         std::string y = tunnel_yaml("bad11");
         y.replace(y.find("{create: {}}"), 12, "{id: tnl_abc, create: {}}");
         return y;
       }(),
       "exactly one of tunnel.id"},
      {"renewal after expiry",
       tunnel_yaml("bad12", "  certificate: {duration: 1h, renewBefore: 2h}\n"),
       "renewBefore must be shorter"},
      {"a duration that is not one", tunnel_yaml("bad13", "  certificate: {duration: 90d}\n"),
       "spec.certificate.duration"},
      {"an unknown deletion policy", tunnel_yaml("bad14", "  deletionPolicy: Delete\n"),
       "spec.deletionPolicy"},
      {"zero replicas", tunnel_yaml("bad15", "  gateway: {replicas: 0}\n"),
       "spec.gateway.replicas"},
      {"a pod label the operator sets",
       tunnel_yaml("bad16", "  gateway: {podLabels: {perimeter.dev/mcptunnel: x}}\n"),
       "set by the operator"},
      {"a Service port by both number and name",
       with_routes("bad17",
                   "  routes:\n    - {name: a, service: {name: s, port: 80, portName: "
                   "http}}\n"),
       "exactly one of service.port and service.portName"},
      {"a federation rule id of the wrong shape",
       [&] {
         std::string y = tunnel_yaml("bad18");
         y.replace(y.find(rule_), rule_.size(), "rule-1");
         return y;
       }(),
       "federationRuleId"},
      {"Manual mode with a tunnel block",
       [&] {
         std::string y = tunnel_yaml("bad19");
         y.replace(y.find("    mode: WorkloadIdentity"), 26, "    mode: Manual");
         return y;
       }(),
       "spec.tunnel must not be set"},
      {"a name too long for the gateway's object names",
       tunnel_yaml("a-name-that-is-far-too-long-for-the-gateway-objects"), "metadata.name"},
      {"an audit level the guard does not have",
       tunnel_yaml("bad21", "  guard: {audit: {level: loud}}\n"), "spec.guard.audit.level"},
      {"an empty tool glob",
       with_routes("bad22",
                   "  routes:\n    - {name: a, url: 'http://10.0.0.5:80', policy: "
                   "{tools: {deny: ['delete_*', '']}}}\n"),
       "spec.routes[0].policy.tools.deny[1]"},
      {"a tool glob whose [ is never closed",
       with_routes("bad23",
                   "  routes:\n    - {name: a, url: 'http://10.0.0.5:80', policy: "
                   "{tools: {allow: ['get_[a-z']}}}\n"),
       "whose every [ is closed"},
      {"a rate limit of zero",
       with_routes("bad24",
                   "  routes:\n    - {name: a, url: 'http://10.0.0.5:80', policy: "
                   "{rateLimit: {requestsPerSecond: 0}}}\n"),
       "spec.routes[0].policy.rateLimit.requestsPerSecond"},
  };
  ASSERT_GE(cases.size(), 12u);
  for (const auto& c : cases) {
    const auto result = apply(c.yaml);
    EXPECT_NE(result.exit_code, 0) << c.what << ": accepted";
    EXPECT_NE(result.output.find(c.expected), std::string::npos)
        << c.what << ": the refusal does not name " << c.expected << ":\n" << result.output;
  }
  // The same object without the fault is accepted: the table tests the rules, not a typo.
  EXPECT_EQ(apply(tunnel_yaml("good")).exit_code, 0);
  const auto good_policy =
      apply(with_routes("good-policy",
                        "  routes:\n    - {name: a, url: 'http://10.0.0.5:80', policy: {tools: "
                        "{allow: ['get_[a-z]*', '*'], deny: ['delete_*']}, rateLimit: "
                        "{requestsPerSecond: 1}}}\n"));
  EXPECT_EQ(good_policy.exit_code, 0) << good_policy.output;
  // The examples are accepted as written.
  for (const char* example : {"mcptunnel.yaml", "mcptunnel-manual.yaml", "mcptunnel-guard.yaml"}) {
    std::string yaml = read_file(source_dir() + "/examples/" + example);
    for (auto at = yaml.find("namespace: mcp\n"); at != std::string::npos;
         at = yaml.find("namespace: mcp\n")) {
      yaml.replace(at, 14, "namespace: " + ns_);
    }
    const std::string path = logs_->path() + "/" + example;
    std::ofstream(path) << yaml;
    const auto result =
        process::run_shell(kubectl_ + " apply --dry-run=server -f " + path + " 2>&1");
    EXPECT_EQ(result.exit_code, 0) << example << ": " << result.output;
  }
  // Immutable once set.
  const auto changed = process::run_shell(
      kubectl_ + " -n " + ns_ +
      " patch mcptunnel good --type merge -p '{\"spec\":{\"tunnel\":{\"create\":null,\"id\":"
      "\"tnl_other\"}}}' 2>&1");
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.output.find("immutable"), std::string::npos) << changed.output;
}

// Raising tokenVersion rotates the token at the service, puts the new one in the Secret and rolls
// the gateway; the old token no longer connects.
TEST_F(McpTunnelE2eTest, RaisingTokenVersionRotatesTheTokenAndRollsTheGateway) {
  ASSERT_EQ(apply(tunnel_yaml("rotate")).exit_code, 0);
  start_operator();
  ASSERT_TRUE(wait_ready("rotate"));
  auto secrets = client(kube::resources::secrets());
  auto deployments = client(kube::resources::deployments());
  const std::string old_token = secret_data(secrets->get(ns_, "rotate-token"), "token");
  const std::string old_hash = deployments->get(ns_, "rotate-gateway")["spec"]["template"]
                                   ["metadata"]["annotations"]["perimeter.dev/gateway-hash"];
  const std::string tunnel_id = tunnel("rotate")["status"]["tunnelId"];

  tunnels_->merge_patch(ns_, "rotate", {{"spec", {{"tokenVersion", 1}}}});
  ASSERT_TRUE(eventually(
      [&] { return tunnel("rotate")["status"].value("token", json::object()).value("version", 0) == 1; },
      seconds(60), "status.token.version 1"));
  const std::string new_token = secret_data(secrets->get(ns_, "rotate-token"), "token");
  EXPECT_NE(new_token, old_token);
  const json record = sim_tunnel(tunnel_id);
  EXPECT_EQ(record["token_version"], 2) << record.dump();  // one rotation, not two
  const auto connect = [&](const std::string& token) {
    return testing::http_call(sim_->url(), "POST", "/admin/tunnels/" + tunnel_id + "/connect",
                              json({{"tunnel_token", token}}).dump())
        .json()
        .value("accepted", false);
  };
  EXPECT_TRUE(connect(new_token));
  EXPECT_FALSE(connect(old_token));
  EXPECT_TRUE(eventually(
      [&] {
        return deployments->get(ns_, "rotate-gateway")["spec"]["template"]["metadata"]
                   ["annotations"]["perimeter.dev/gateway-hash"] != old_hash;
      },
      seconds(30), "the gateway's pod template to change"));
  ASSERT_TRUE(wait_ready("rotate"));
  // Level-triggered: nothing more happens while the spec stays.
  std::this_thread::sleep_for(seconds(3));
  EXPECT_EQ(sim_tunnel(tunnel_id)["token_version"], 2);
}

// Minute-scale lifetimes: the server certificate is renewed and the CA rotated with overlap; the
// simulator never sees more than two active CAs, and the replaced CA ends archived.
TEST_F(McpTunnelE2eTest, RenewalAndCaRotationKeepAtMostTwoActiveCas) {
  ASSERT_EQ(apply(tunnel_yaml("rotating",
                              "  certificate: {duration: 100s, renewBefore: 50s, caDuration: 120s, "
                              "caRenewBefore: 80s}\n"))
                .exit_code,
            0);
  start_operator();
  ASSERT_TRUE(wait_ready("rotating"));
  auto secrets = client(kube::resources::secrets());
  const std::string tunnel_id = tunnel("rotating")["status"]["tunnelId"];
  const std::string first_ca = tunnel("rotating")["status"]["certificate"]["caFingerprint"];
  std::set<std::string> serials = {
      pki::Certificate::from_pem(secret_data(secrets->get(ns_, "rotating-tls"), "tls.crt"))
          .serial_hex()};
  const auto pods_before = run_ok(kubectl_ + " -n " + ns_ +
                                  " get pods -l perimeter.dev/mcptunnel=rotating -o name");
  // The CA is due at 40 s of its 120 s life; the old one is archived 10 s after the gateway got a
  // certificate of the new one.
  std::string second_ca;
  ASSERT_TRUE(eventually(
      [&] {
        serials.insert(
            pki::Certificate::from_pem(secret_data(secrets->get(ns_, "rotating-tls"), "tls.crt"))
                .serial_hex());
        const json record = sim_tunnel(tunnel_id);
        int archived = 0;
        for (const auto& c : record["certificates"]) {
          if (!c["archived_at"].is_null()) ++archived;
        }
        second_ca = tunnel("rotating")["status"]["certificate"].value("caFingerprint", "");
        return archived >= 1 && second_ca != first_ca && record["active_certificates"] == 1;
      },
      seconds(150), "a CA rotation to complete"));
  const json record = sim_tunnel(tunnel_id);
  EXPECT_LE(record["max_active_certificates"].get<int>(), 2) << record.dump();
  EXPECT_EQ(record["max_active_certificates"].get<int>(), 2)
      << "the new CA was registered before the old one was archived: " << record.dump();
  for (const auto& c : record["certificates"]) {
    if (c["fingerprint"] == first_ca) {
      EXPECT_FALSE(c["archived_at"].is_null());
    }
    if (c["fingerprint"] == second_ca) {
      EXPECT_TRUE(c["archived_at"].is_null());
    }
  }
  // The Secret moved to certificates of the new CA, and renewals happened, without a pod restart.
  const auto leaf =
      pki::Certificate::from_pem(secret_data(secrets->get(ns_, "rotating-tls"), "tls.crt"));
  const auto ca =
      pki::Certificate::from_pem(secret_data(secrets->get(ns_, "rotating-ca"), "ca.crt"));
  EXPECT_EQ(ca.fingerprint_sha256(), second_ca);
  EXPECT_EQ(pki::verify_server_certificate(leaf, ca, "x." + tunnel("rotating")["status"]["domain"].get<std::string>()),
            std::nullopt);
  EXPECT_GE(serials.size(), 2u);
  EXPECT_EQ(run_ok(kubectl_ + " -n " + ns_ +
                   " get pods -l perimeter.dev/mcptunnel=rotating -o name"),
            pods_before);
  EXPECT_EQ(secret_data(secrets->get(ns_, "rotating-ca"), "retiring-ca.crt"), "");
}

// SIGKILL ten times around creation, with a slow API so kills land inside calls: each McpTunnel
// still ends with exactly one tunnel.
TEST_F(McpTunnelE2eTest, KilledTenTimesAroundCreationStillMakesOneTunnelPerResource) {
  set_faults({{"latency_ms", 150}});
  for (const char* name : {"alpha", "beta", "gamma"}) {
    ASSERT_EQ(apply(tunnel_yaml(name, "  gateway: {replicas: 1}\n")).exit_code, 0);
  }
  for (int kill = 0; kill < 10; ++kill) {
    start_operator();
    std::this_thread::sleep_for(milliseconds(300 + 120 * kill));
    operator_->kill9();
    operator_.reset();
  }
  set_faults({{"latency_ms", 0}});
  start_operator();
  for (const char* name : {"alpha", "beta", "gamma"}) ASSERT_TRUE(wait_ready(name));
  const json all = sim_tunnels();
  std::map<std::string, int> per_uid;
  for (const char* name : {"alpha", "beta", "gamma"}) {
    const std::string uid = tunnel(name)["metadata"]["uid"];
    for (const auto& t : all) {
      const json inner = t.contains("tunnel") ? t["tunnel"] : t;
      if (inner.value("display_name", "").find(uid) != std::string::npos) ++per_uid[name];
    }
  }
  EXPECT_EQ(all.size(), 3u) << all.dump();
  for (const char* name : {"alpha", "beta", "gamma"}) EXPECT_EQ(per_uid[name], 1) << name;
}

// One request in five answered 5xx or 429: every McpTunnel still reaches Ready, once, and one
// McpTunnel the operator refuses does not hold the others back. The run opens with every answer
// a 429 until the operator has metered a retry: left to the dice alone, a short run could draw no
// retryable answer at all (CI saw one), and the retry metric would be untested.
TEST_F(McpTunnelE2eTest, TwentyPercentServerErrorsStillReachReady) {
  set_faults({{"error_429_rate", 1.0}});
  for (const char* name : {"one", "two", "three"}) {
    ASSERT_EQ(apply(tunnel_yaml(name, "  gateway: {replicas: 1}\n")).exit_code, 0);
  }
  // A broken neighbour (an audience the operator refuses) disturbs none of them.
  std::string broken = tunnel_yaml("broken", "  gateway: {replicas: 1}\n");
  broken.replace(broken.find("serviceAccountId: svac_perimeter}"), 33,
                 "serviceAccountId: svac_perimeter, audience: https://kubernetes.default.svc}");
  ASSERT_EQ(apply(broken).exit_code, 0);
  start_operator();
  ASSERT_TRUE(eventually(
      [&] {
        try {
          return metric_sum(operator_->metrics(), "perimeter_agentapi_retries_total") > 0;
        } catch (const std::exception&) {
          return false;  // its metrics endpoint is not up yet
        }
      },
      seconds(60), "a metered retry of a 429"));
  set_faults({{"error_5xx_rate", 0.1}, {"error_429_rate", 0.1}});
  for (const char* name : {"one", "two", "three"}) ASSERT_TRUE(wait_ready(name, seconds(180)));
  EXPECT_EQ(sim_tunnels().size(), 3u);
  EXPECT_EQ(condition(tunnel("broken"), "CredentialsReady"), "False/AudienceNotAllowed");
}

// Deletion: Retain keeps the hosted tunnel (and says so), Archive archives it, and an unreachable
// API never keeps an McpTunnel (or its namespace) from going.
TEST_F(McpTunnelE2eTest, DeletionRetainsArchivesAndNeverHangs) {
  ASSERT_EQ(apply(tunnel_yaml("kept", "  gateway: {replicas: 1}\n")).exit_code, 0);
  ASSERT_EQ(apply(tunnel_yaml("archived", "  deletionPolicy: Archive\n  gateway: {replicas: 1}\n"))
                .exit_code,
            0);
  ASSERT_EQ(apply(tunnel_yaml("stranded", "  deletionPolicy: Archive\n  gateway: {replicas: 1}\n"))
                .exit_code,
            0);
  start_operator();
  for (const char* name : {"kept", "archived", "stranded"}) ASSERT_TRUE(wait_ready(name));
  std::map<std::string, std::string> ids;
  for (const char* name : {"kept", "archived", "stranded"}) {
    ids[name] = tunnel(name)["status"]["tunnelId"];
  }
  const auto gone = [&](const std::string& name) {
    try {
      tunnels_->get(ns_, name);
      return false;
    } catch (const kube::ApiError& e) {
      return e.kind() == kube::ErrorKind::kNotFound;
    }
  };
  tunnels_->remove(ns_, "kept");
  tunnels_->remove(ns_, "archived");
  ASSERT_TRUE(eventually([&] { return gone("kept") && gone("archived"); }, seconds(60),
                         "kept and archived to go"));
  EXPECT_TRUE(sim_tunnel(ids["kept"])["tunnel"]["archived_at"].is_null());
  EXPECT_FALSE(sim_tunnel(ids["archived"])["tunnel"]["archived_at"].is_null());
  EXPECT_TRUE(eventually(
      [&] {
        return run_ok(kubectl_ + " -n " + ns_ + " get events -o json").find("TunnelRetained") !=
               std::string::npos;
      },
      seconds(30), "the TunnelRetained Event"));

  // The API answers nothing but 503: deletion still completes after the deadline (8 s here), and a
  // Warning names the tunnel left active.
  set_faults({{"error_5xx_rate", 1.0}});
  tunnels_->remove(ns_, "stranded");
  ASSERT_TRUE(eventually([&] { return gone("stranded"); }, seconds(90), "stranded to go"));
  set_faults({{"error_5xx_rate", 0.0}});
  EXPECT_TRUE(sim_tunnel(ids["stranded"])["tunnel"]["archived_at"].is_null());
  EXPECT_TRUE(eventually(
      [&] {
        return run_ok(kubectl_ + " -n " + ns_ + " get events -o json").find("ArchiveAbandoned") !=
               std::string::npos;
      },
      seconds(30), "the ArchiveAbandoned Event"));
}

// Manual mode: the user's token and certificate Secrets, no API call at all.
TEST_F(McpTunnelE2eTest, ManualModeServesFromTheUsersSecretsWithoutCallingTheApi) {
  const std::string domain = "abc123.tunnels.example";
  const auto now = std::chrono::system_clock::now();
  const auto ca_key = pki::PrivateKey::generate_ec_p256();
  pki::CaRequest ca_request;
  ca_request.common_name = "user CA";
  ca_request.lifetime = std::chrono::hours(24);
  const auto ca = pki::issue_self_signed_ca(ca_request, ca_key, now);
  const auto key = pki::PrivateKey::generate_ec_p256();
  pki::CertificateRequest request;
  request.common_name = "*." + domain;
  request.dns_names = {"*." + domain};
  request.lifetime = std::chrono::hours(12);
  const auto leaf = pki::issue_certificate(request, key, ca, ca_key, now);
  auto secrets = client(kube::resources::secrets());
  secrets->create(ns_, {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", "tok"}}},
                        {"stringData", {{"token", "user-supplied-token"}}}});
  secrets->create(ns_, {{"apiVersion", "v1"}, {"kind", "Secret"}, {"type", "kubernetes.io/tls"},
                        {"metadata", {{"name", "cert"}}},
                        {"stringData", {{"tls.crt", leaf.pem()}, {"tls.key", key.pem()}}}});
  const std::string yaml = "apiVersion: perimeter.dev/v1alpha1\nkind: McpTunnel\nmetadata:\n"
                           "  name: manual\n  namespace: " + ns_ + "\nspec:\n"
                           "  credentials:\n    mode: Manual\n    manual:\n      domain: " + domain +
                           "\n      tokenSecretRef: {name: tok}\n      tlsSecretRef: {name: cert}\n"
                           "  routes:\n    - {name: docs, url: 'http://10.0.0.5:8080'}\n"
                           "  gateway: {replicas: 1}\n";
  ASSERT_EQ(apply(yaml).exit_code, 0);
  const auto requests_before = testing::http_call(sim_->url(), "GET", "/metrics").body;
  start_operator();
  ASSERT_TRUE(wait_ready("manual"));
  const json object = tunnel("manual");
  EXPECT_EQ(object["status"]["domain"], domain);
  EXPECT_EQ(object["status"]["certificate"]["serial"], leaf.serial_hex());
  EXPECT_FALSE(object["metadata"].contains("finalizers"));
  const json deployment = client(kube::resources::deployments())->get(ns_, "manual-gateway");
  const std::string pod = deployment["spec"]["template"]["spec"].dump();
  EXPECT_NE(pod.find("\"secretName\":\"tok\""), std::string::npos) << pod;
  EXPECT_NE(pod.find("\"secretName\":\"cert\""), std::string::npos) << pod;
  EXPECT_EQ(operator_->metrics().find("operation=\"tunnels."), std::string::npos);

  // A certificate for another domain is named in a condition; the gateway keeps running.
  request.dns_names = {"*.other.example"};
  const auto wrong = pki::issue_certificate(request, key, ca, ca_key, now);
  secrets->merge_patch(ns_, "cert", {{"stringData", {{"tls.crt", wrong.pem()}}}});
  tunnels_->merge_patch(ns_, "manual", {{"metadata", {{"annotations", {{"touch", "1"}}}}}});
  ASSERT_TRUE(eventually(
      [&] { return condition(tunnel("manual"), "CredentialsReady") == "False/SecretInvalid"; },
      seconds(60), "CredentialsReady False for a certificate of another domain"));
  EXPECT_NE(condition(tunnel("manual"), "Ready"), "True/GatewayReady");
  EXPECT_NO_THROW(client(kube::resources::deployments())->get(ns_, "manual-gateway"));
}

// A route with a policy puts perimeter-mcp-guard in the gateway: a third container admitted under
// PodSecurity restricted, its config next to the proxy's, the proxy's route pointing at it. A
// policy edit reaches the ConfigMap without rolling the pods (the guard reloads it).
TEST_F(McpTunnelE2eTest, APolicyPutsTheGuardInTheGatewayAndPolicyEditsRollNoPod) {
  const std::string routes_with =
      "  routes:\n"
      "    - {name: docs, url: 'http://10.0.0.5:8080'}\n"
      "    - name: tickets\n"
      "      url: 'http://10.0.0.6:8080'\n"
      "      policy:\n"
      "        tools: {allow: ['tickets_*'], deny: [DENY]}\n"
      "        rateLimit: {requestsPerSecond: 20, burst: 40}\n";
  auto with_deny = [&](const std::string& deny) {
    std::string routes = routes_with;
    routes.replace(routes.find("DENY"), 4, deny);
    return tunnel_yaml("guarded", "  gateway: {replicas: 1}\n  guard: {audit: {level: full}}\n",
                       routes);
  };
  ASSERT_EQ(apply(with_deny("'tickets_delete*'")).exit_code, 0);
  start_operator();
  ASSERT_TRUE(wait_ready("guarded"));
  ASSERT_TRUE(
      eventually([&] { return condition(tunnel("guarded"), "GuardEnforced") == "True/Enforced"; },
                 seconds(30), "GuardEnforced True"));

  auto deployments = client(kube::resources::deployments());
  const json deployment = deployments->get(ns_, "guarded-gateway");
  // Admitted under restricted: the pod exists and is available.
  EXPECT_EQ(deployment["status"].value("availableReplicas", 0), 1) << deployment["status"].dump();
  const json pod = deployment["spec"]["template"]["spec"];
  ASSERT_EQ(pod["containers"].size(), 3u) << pod.dump();
  const json guard = pod["containers"][2];
  EXPECT_EQ(guard["name"], "mcp-guard");
  EXPECT_EQ(guard["image"], "localhost/perimeter/perimeter-mcp-guard:0.1.0");
  EXPECT_EQ(guard["args"], json::array({"--config", "/etc/perimeter-mcp-guard/config/guard.yaml"}));
  EXPECT_EQ(guard["ports"][0]["name"], "guard-metrics");
  EXPECT_EQ(guard["ports"][0]["containerPort"], 9464);
  EXPECT_EQ(guard["readinessProbe"]["httpGet"]["path"], "/metrics");
  EXPECT_EQ(guard["securityContext"]["readOnlyRootFilesystem"], true);
  EXPECT_EQ(guard["securityContext"]["capabilities"]["drop"], json::array({"ALL"}));
  const std::string pods =
      run_ok(kubectl_ + " -n " + ns_ + " get pods -l perimeter.dev/mcptunnel=guarded -o json");
  const json pod_list = json::parse(pods);
  ASSERT_EQ(pod_list["items"].size(), 1u) << pods;
  EXPECT_EQ(pod_list["items"][0]["spec"]["containers"].size(), 3u);

  auto config_maps = client(kube::resources::config_maps());
  json config_map = config_maps->get(ns_, "guarded-gateway-config");
  const YAML::Node proxy = YAML::Load(config_map["data"]["config.yaml"].get<std::string>());
  EXPECT_EQ(proxy["routes"]["docs"].as<std::string>(), "http://127.0.0.1:9100");
  EXPECT_EQ(proxy["routes"]["tickets"].as<std::string>(), "http://127.0.0.1:9101");
  EXPECT_EQ(proxy["upstream"]["allowed_ips"].as<std::vector<std::string>>(),
            std::vector<std::string>{"127.0.0.1/32"});
  const YAML::Node config = YAML::Load(config_map["data"]["guard.yaml"].get<std::string>());
  EXPECT_EQ(config["metrics_listen"].as<std::string>(), "0.0.0.0:9464");
  EXPECT_EQ(config["audit"]["level"].as<std::string>(), "full");
  ASSERT_EQ(config["routes"].size(), 2u);
  EXPECT_EQ(config["routes"][1]["name"].as<std::string>(), "tickets");
  EXPECT_EQ(config["routes"][1]["listen"].as<std::string>(), "127.0.0.1:9101");
  EXPECT_EQ(config["routes"][1]["upstream"].as<std::string>(), "http://10.0.0.6:8080");
  EXPECT_EQ(config["routes"][1]["allowed_cidrs"].size(), 3u);
  EXPECT_EQ(config["routes"][1]["tools"]["deny"][0].as<std::string>(), "tickets_delete*");
  EXPECT_EQ(config["routes"][1]["rate_limit"]["burst"].as<int>(), 40);
  EXPECT_FALSE(config["routes"][0]["tools"]);

  // A policy edit: the ConfigMap changes, the pod template does not.
  const std::string hash =
      deployment["spec"]["template"]["metadata"]["annotations"]["perimeter.dev/gateway-hash"];
  const auto generation = deployment["metadata"]["generation"].get<std::int64_t>();
  ASSERT_EQ(apply(with_deny("'tickets_delete*', '*_admin'")).exit_code, 0);
  ASSERT_TRUE(eventually(
      [&] {
        config_map = config_maps->get(ns_, "guarded-gateway-config");
        return config_map["data"]["guard.yaml"].get<std::string>().find("*_admin") !=
               std::string::npos;
      },
      seconds(30), "the new deny glob in guard.yaml"));
  ASSERT_TRUE(eventually(
      [&] {
        const json object = tunnel("guarded");
        return object["status"].value("observedGeneration", 0) ==
                   object["metadata"]["generation"].get<int>() &&
               condition(object, "GuardEnforced") == "True/Enforced";
      },
      seconds(30), "the edit observed, the guard still enforced"));
  const json after = deployments->get(ns_, "guarded-gateway");
  EXPECT_EQ(after["metadata"]["generation"].get<std::int64_t>(), generation);
  EXPECT_EQ(after["spec"]["template"]["metadata"]["annotations"]["perimeter.dev/gateway-hash"],
            hash);
}

}  // namespace
}  // namespace perimeter::e2e
