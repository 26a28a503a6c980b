#include "controllers/agentenvironment/egress_gateway.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "controllers/agentenvironment/egress_gateway_controller.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/base64.h"
#include "core/golden_file.h"
#include "gateway/credentials.h"
#include "gateway/gateway_config.h"
#include "kube/fake_api_server.h"
#include "kube/resource.h"
#include "pki/hmac.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

constexpr const char* kTestdata = "tests/unit/controllers/agentenvironment/testdata";

kube::ResourceType agent_environments() {
  return {"perimeter.dev", "v1alpha1", "agentenvironments", "AgentEnvironment", true};
}

json environment_object(const std::string& ns, const std::string& name, const json& spec_extra) {
  json spec = {{"environmentId", "env_" + name},
               {"environmentKeySecretRef", {{"name", name + "-key"}}},
               {"apiBaseUrl", "https://api.anthropic.com"},
               {"runner", {{"image", "perimeter-runner:1"}}}};
  spec.merge_patch(spec_extra);
  return {{"apiVersion", "perimeter.dev/v1alpha1"},
          {"kind", "AgentEnvironment"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"generation", 1}}},
          {"spec", spec}};
}

EgressGatewaySettings gateway_settings() {
  EgressGatewaySettings gateway;
  gateway.namespace_ = "perimeter-system";
  gateway.image = "registry.example/perimeter-egress-gateway:0.1.0";
  return gateway;
}

std::vector<AgentEnvironment> two_environments() {
  return {parse_agent_environment(environment_object(
              "team-b", "agents",
              {{"egress",
                {{"allowedHosts",
                  {{{"host", "*.pypi.org"}},
                   {{"host", "files.example.com"}, {"ports", {443, 8443}}}}}}}})),
          // An API given as an address is reached directly: the gateway lists no host for it.
          parse_agent_environment(
              environment_object("team-a", "lab", {{"apiBaseUrl", "http://10.0.0.5:8080"}}))};
}

// The configuration is the contract between the operator and the gateway: it is parsed here by
// the gateway's own parser, and what it allows is asked of the gateway's own matcher.
TEST(EgressGatewayConfigTest, TheGatewayAcceptsTheRenderedConfigAndAllowsWhatTheResourcesSay) {
  const std::string config = render_egress_gateway_config(gateway_settings(), two_environments());
  testing::expect_golden(kTestdata, "egress-gateway-config.yaml", config);

  const auto parsed = egressgateway::parse_gateway_config(config, /*testing_allowed=*/false);
  ASSERT_TRUE(parsed.config) << parsed.error;
  EXPECT_EQ(parsed.config->listen, "0.0.0.0:3128");
  EXPECT_EQ(parsed.config->credentials_key_file, "/var/run/perimeter-egress/key/key");
  ASSERT_EQ(parsed.config->environments.size(), 2u);
  const auto* agents = parsed.config->find_environment("team-b/agents");
  const auto* lab = parsed.config->find_environment("team-a/lab");
  ASSERT_NE(agents, nullptr);
  ASSERT_NE(lab, nullptr);
  EXPECT_TRUE(egressgateway::environment_allows(*agents, "api.anthropic.com", 443));
  EXPECT_FALSE(egressgateway::environment_allows(*agents, "api.anthropic.com", 80));
  EXPECT_TRUE(egressgateway::environment_allows(*agents, "files.pythonhosted.pypi.org", 443));
  EXPECT_FALSE(egressgateway::environment_allows(*agents, "pypi.org", 443));
  EXPECT_TRUE(egressgateway::environment_allows(*agents, "files.example.com", 8443));
  EXPECT_FALSE(egressgateway::environment_allows(*agents, "example.com", 443));
  EXPECT_TRUE(lab->allow.empty());
}

TEST(EgressGatewayConfigTest, NoEnvironmentStillRendersAConfigTheGatewayAccepts) {
  const std::string config = render_egress_gateway_config(gateway_settings(), {});
  const auto parsed = egressgateway::parse_gateway_config(config, false);
  ASSERT_TRUE(parsed.config) << parsed.error << "\n" << config;
  EXPECT_TRUE(parsed.config->environments.empty());
}

// The credential the operator puts in a session's HTTPS_PROXY is the one the gateway accepts for
// that session and environment, and only under the same key.
TEST(EgressGatewayConfigTest, TheGatewayVerifiesTheCredentialTheOperatorSigns) {
  RunnerEgress egress;
  egress.mode = EgressMode::kGateway;
  point_runners_at(gateway_settings(), egress);
  egress.credentials_key = pki::random_key_hex();
  ASSERT_EQ(egress.credentials_key.size(), 64u);
  const auto env = two_environments()[0];
  const std::string url = egress_proxy_url(egress, env, "sesn_1");
  ASSERT_EQ(url.rfind("http://", 0), 0u);
  const std::string userinfo = url.substr(7, url.find('@') - 7);
  EXPECT_EQ(url.substr(url.find('@') + 1),
            "perimeter-egress-gateway.perimeter-system.svc.cluster.local:3128");

  const auto check = egressgateway::verify_proxy_authorization("Basic " + base64_encode(userinfo),
                                                               egress.credentials_key);
  ASSERT_TRUE(check.identity) << check.failure;
  EXPECT_EQ(check.identity->environment, "team-b/agents");
  EXPECT_EQ(check.identity->session, "sesn_1");
  EXPECT_FALSE(egressgateway::verify_proxy_authorization("Basic " + base64_encode(userinfo),
                                                         pki::random_key_hex())
                   .identity);
}

TEST(EgressGatewayObjectsTest, TheGatewayObjectsAreAsReviewed) {
  const auto gateway = gateway_settings();
  const json objects = {{"deployment", build_egress_gateway_deployment(gateway)},
                        {"service", build_egress_gateway_service(gateway)},
                        {"networkPolicy", build_egress_gateway_network_policy(gateway)}};
  testing::expect_golden(kTestdata, "egress-gateway-objects.json", objects.dump(2) + "\n");
}

// What the runner pods' policy allows is the gateway's pods, on the port its Service serves.
TEST(EgressGatewayObjectsTest, TheRunnerPolicySelectsTheGatewayPodsOnTheProxyPort) {
  const auto gateway = gateway_settings();
  RunnerEgress egress;
  egress.mode = EgressMode::kGateway;
  point_runners_at(gateway, egress);
  const json policy = build_network_policy(two_environments()[0], egress);
  const json pod_labels =
      build_egress_gateway_deployment(gateway)["spec"]["template"]["metadata"]["labels"];
  bool found = false;
  for (const auto& rule : policy["spec"]["egress"]) {
    for (const auto& peer : rule.value("to", json::array())) {
      if (!peer.contains("podSelector") ||
          peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] !=
              "perimeter-system") {
        continue;
      }
      for (const auto& [label, value] : peer["podSelector"]["matchLabels"].items()) {
        EXPECT_EQ(pod_labels.value(label, ""), value) << label;
      }
      EXPECT_EQ(rule["ports"][0]["port"], gateway.port);
      found = true;
    }
  }
  EXPECT_TRUE(found) << policy.dump(2);
}

class EgressGatewayReconcilerTest : public ::testing::Test {
 protected:
  void given_environment(const json& object) {
    environments_.upsert(std::make_shared<const json>(object));
  }
  // What the informers would show after the writes so far.
  void sync_caches() {
    const std::string ns = "/namespaces/perimeter-system/";
    const std::vector<std::pair<runtime::Store*, std::string>> paths = {
        {&config_maps_, "/api/v1" + ns + "configmaps/perimeter-egress-gateway"},
        {&secrets_, "/api/v1" + ns + "secrets/perimeter-egress-gateway-key"},
        {&deployments_, "/apis/apps/v1" + ns + "deployments/perimeter-egress-gateway"},
        {&services_, "/api/v1" + ns + "services/perimeter-egress-gateway"},
        {&policies_,
         "/apis/networking.k8s.io/v1" + ns + "networkpolicies/perimeter-egress-gateway"}};
    for (const auto& [store, path] : paths) {
      const auto object = server_.object_at(path);
      if (object) {
        store->upsert(std::make_shared<const json>(*object));
      } else {
        store->remove("perimeter-system/" + path.substr(path.rfind('/') + 1));
      }
    }
  }
  std::unique_ptr<EgressGatewayReconciler> make_reconciler(const std::string& key,
                                                           EgressGatewayScope scope = {}) {
    return std::make_unique<EgressGatewayReconciler>(
        EgressGatewayStores{environments_, config_maps_, secrets_, deployments_, services_,
                            policies_},
        EgressGatewayClients{environment_client_, config_map_client_, secret_client_,
                             deployment_client_, service_client_, policy_client_},
        gateway_settings(), key, std::move(scope),
        Logger("test", StderrSink::instance(), LogLevel::kError));
  }
  std::string stored_config() {
    return server_
        .object_at("/api/v1/namespaces/perimeter-system/configmaps/perimeter-egress-gateway")
        .value_or(json::object())
        .value("data", json::object())
        .value("gateway.yaml", "");
  }
  size_t writes() {
    size_t count = 0;
    for (const auto& request : server_.requests()) {
      if (request.rfind("GET", 0) != 0) ++count;
    }
    return count;
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  kube::ResourceClient environment_client_{server_, agent_environments(), client_metrics_};
  kube::ResourceClient config_map_client_{server_, kube::resources::config_maps(), client_metrics_};
  kube::ResourceClient secret_client_{server_, kube::resources::secrets(), client_metrics_};
  kube::ResourceClient deployment_client_{server_, kube::resources::deployments(), client_metrics_};
  kube::ResourceClient service_client_{server_, kube::resources::services(), client_metrics_};
  kube::ResourceClient policy_client_{server_, kube::resources::network_policies(),
                                      client_metrics_};
  runtime::Store environments_, config_maps_, secrets_, deployments_, services_, policies_;
};

TEST_F(EgressGatewayReconcilerTest, APassWritesWhatDriftedAndNothingWhenNothingDid) {
  given_environment(environment_object("team-b", "agents", json::object()));
  const std::string key = pki::random_key_hex();
  auto reconciler = make_reconciler(key);
  reconciler->reconcile({"perimeter-system", "perimeter-egress-gateway"});
  EXPECT_EQ(writes(), 5u);  // ConfigMap, Secret, NetworkPolicy, Service, Deployment
  EXPECT_NE(stored_config().find("team-b/agents"), std::string::npos);
  sync_caches();

  // A pass woken by an environment's status write finds nothing to write.
  reconciler->reconcile({"perimeter-system", "perimeter-egress-gateway"});
  EXPECT_EQ(writes(), 5u);

  // A new host on an environment: only the configuration is written again.
  given_environment(environment_object("team-b", "agents",
                                       {{"egress", {{"allowedHosts", {{{"host", "pypi.org"}}}}}}}));
  reconciler->reconcile({"perimeter-system", "perimeter-egress-gateway"});
  EXPECT_EQ(writes(), 6u);
  EXPECT_NE(stored_config().find("pypi.org"), std::string::npos);
}

// The key Secret deleted or replaced by hand is put back with the key this process signs with:
// a new key would make the gateway refuse every running session at its next reload.
TEST_F(EgressGatewayReconcilerTest, AKeySecretDeletedOrChangedByHandIsPutBackWithTheSigningKey) {
  const std::string key = pki::random_key_hex();
  auto reconciler = make_reconciler(key);
  reconciler->reconcile({"perimeter-system", "perimeter-egress-gateway"});
  sync_caches();
  const std::string path =
      "/api/v1/namespaces/perimeter-system/secrets/perimeter-egress-gateway-key";
  const auto stored_key = [&] {
    std::string decoded;
    const auto secret = server_.object_at(path);
    if (!secret || !base64_decode_any((*secret)["data"].value("key", ""), &decoded))
      return std::string();
    return decoded;
  };
  ASSERT_EQ(stored_key(), key);

  secret_client_.merge_patch("perimeter-system", "perimeter-egress-gateway-key",
                             {{"data", {{"key", base64_encode(pki::random_key_hex())}}}});
  sync_caches();
  reconciler->reconcile({"perimeter-system", "perimeter-egress-gateway"});
  EXPECT_EQ(stored_key(), key);

  secret_client_.remove("perimeter-system", "perimeter-egress-gateway-key");
  sync_caches();
  reconciler->reconcile({"perimeter-system", "perimeter-egress-gateway"});
  EXPECT_EQ(stored_key(), key);
}

TEST_F(EgressGatewayReconcilerTest, OnlyEnvironmentsThatCanRunSessionsAreListed) {
  given_environment(environment_object("team-a", "agents", json::object()));
  given_environment(environment_object("elsewhere", "agents", json::object()));
  given_environment(
      environment_object("team-a", "own-api", {{"apiBaseUrl", "https://api.attacker.example"}}));
  given_environment(environment_object("team-a", "broken", {{"runner", {{"image", 7}}}}));
  EgressGatewayScope scope;
  scope.session_namespaces = std::set<std::string>{"team-a"};
  auto reconciler = make_reconciler(pki::random_key_hex(), scope);
  const std::string config = reconciler->desired_config();
  EXPECT_NE(config.find("team-a/agents"), std::string::npos) << config;
  EXPECT_EQ(config.find("elsewhere/agents"), std::string::npos) << config;
  EXPECT_EQ(config.find("own-api"), std::string::npos) << config;
  EXPECT_EQ(config.find("attacker"), std::string::npos) << config;
  EXPECT_EQ(config.find("broken"), std::string::npos) << config;
}

TEST_F(EgressGatewayReconcilerTest, TheKeyIsMadeOnceAndAKeyTheGatewayWouldRefuseStopsTheStart) {
  const auto gateway = gateway_settings();
  const std::string made = load_or_create_egress_gateway_key(secret_client_, gateway);
  EXPECT_EQ(made.size(), 64u);
  EXPECT_EQ(load_or_create_egress_gateway_key(secret_client_, gateway), made);

  secret_client_.merge_patch("perimeter-system", "perimeter-egress-gateway-key",
                             {{"data", {{"key", base64_encode("short")}}}});
  try {
    load_or_create_egress_gateway_key(secret_client_, gateway);
    FAIL() << "a 5-byte key was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("perimeter-system/perimeter-egress-gateway-key"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace perimeter::agentenvironment
