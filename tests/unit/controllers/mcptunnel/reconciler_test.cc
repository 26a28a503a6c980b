// The McpTunnel reconciler against an in-memory apiserver and a mocked Tunnels API: the decisions
// that must hold across crashes (never two tunnels, never two rotations) and the refusals that
// keep the operator's identity from going where the administrator did not allow, checked call by
// call. The e2e test (e2e/mcptunnel) runs the same code against the real apiserver and simulator.
#include "controllers/mcptunnel/reconciler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "core/base64.h"
#include "core/fake_clock.h"
#include "core/time_format.h"
#include "kube/fake_api_server.h"
#include "kube/metric_value.h"
#include "pki/pki.h"
#include "runtime/metrics.h"
#include "tunnelsapi/mock_tunnels_api.h"

namespace perimeter::mcptunnel {
namespace {

using nlohmann::json;
using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;

constexpr const char* kNamespace = "team-a";

// Hands out clients that forward to one mock, and counts how often credentials were used.
class ForwardingApi final : public tunnelsapi::TunnelsApi {
 public:
  explicit ForwardingApi(tunnelsapi::TunnelsApi& to) : to_(to) {}
  tunnelsapi::Tunnel create_tunnel(const std::string& n) override { return to_.create_tunnel(n); }
  tunnelsapi::Tunnel retrieve_tunnel(const std::string& id) override {
    return to_.retrieve_tunnel(id);
  }
  tunnelsapi::TunnelPage list_tunnels(bool a, int l, const std::string& p) override {
    return to_.list_tunnels(a, l, p);
  }
  tunnelsapi::TunnelToken reveal_token(const std::string& id) override {
    return to_.reveal_token(id);
  }
  tunnelsapi::TunnelToken rotate_token(const std::string& id, const std::string& r) override {
    return to_.rotate_token(id, r);
  }
  tunnelsapi::Tunnel archive_tunnel(const std::string& id) override {
    return to_.archive_tunnel(id);
  }
  tunnelsapi::TunnelCertificate create_certificate(const std::string& id,
                                                   const std::string& pem) override {
    return to_.create_certificate(id, pem);
  }
  tunnelsapi::TunnelCertificatePage list_certificates(const std::string& id, bool a, int l,
                                                      const std::string& p) override {
    return to_.list_certificates(id, a, l, p);
  }
  tunnelsapi::TunnelCertificate retrieve_certificate(const std::string& id,
                                                     const std::string& c) override {
    return to_.retrieve_certificate(id, c);
  }
  tunnelsapi::TunnelCertificate archive_certificate(const std::string& id,
                                                    const std::string& c) override {
    return to_.archive_certificate(id, c);
  }

 private:
  tunnelsapi::TunnelsApi& to_;
};

class CountingFactory final : public TunnelsApiFactory {
 public:
  explicit CountingFactory(tunnelsapi::TunnelsApi& api) : api_(api) {}
  std::unique_ptr<tunnelsapi::TunnelsApi> make(const McpTunnel&) override {
    ++made;
    return std::make_unique<ForwardingApi>(api_);
  }
  int made = 0;

 private:
  tunnelsapi::TunnelsApi& api_;
};

// The metrics the operator exports, in the fixture's registry, with the actions listed too.
class RecordingMetrics final : public TunnelMetrics {
 public:
  explicit RecordingMetrics(prometheus::Registry& registry) : exported_(registry) {}
  void on_action(const std::string& tunnel, const std::string& kind) override {
    actions.push_back(kind);
    exported_.on_action(tunnel, kind);
  }
  void on_failure(const std::string& tunnel, const std::string& step) override {
    exported_.on_failure(tunnel, step);
  }
  void on_status(const std::string& tunnel, const TunnelStatusFigures& figures) override {
    exported_.on_status(tunnel, figures);
  }
  void on_deleted(const std::string& tunnel) override { exported_.on_deleted(tunnel); }
  std::vector<std::string> actions;

 private:
  PrometheusTunnelMetrics exported_;
};

tunnelsapi::Tunnel a_tunnel(const std::string& id, const std::string& display_name) {
  return {id, display_name, "d" + id.substr(4) + ".tunnels.example", "2026-11-30T00:00:00Z",
          std::nullopt};
}

class McpTunnelReconcilerTest : public ::testing::Test {
 protected:
  McpTunnelReconcilerTest() {
    // Whatever a step needs that the test does not look at: an empty certificate list, a
    // registration that echoes the CA's fingerprint.
    ON_CALL(api_, list_certificates(_, _, _, _))
        .WillByDefault(Return(tunnelsapi::TunnelCertificatePage{}));
    ON_CALL(api_, create_certificate(_, _))
        .WillByDefault([](const std::string& id, const std::string& pem) {
          return tunnelsapi::TunnelCertificate{
              "tcrt_1", id, pki::Certificate::from_pem(pem).fingerprint_sha256(),
              "2026-11-30T00:00:00Z", std::nullopt, std::nullopt};
        });
    ON_CALL(api_, reveal_token(_))
        .WillByDefault(Return(tunnelsapi::TunnelToken{"tntok_1", tunnelsapi::Secret("t-1")}));
  }

  ReconcilerOptions options() {
    ReconcilerOptions o;
    o.allowed_api_hosts = runtime::ApiHostAllowList::parse("https://api.anthropic.com");
    return o;
  }

  json object(const json& spec_overrides = json::object(), const json& status = json()) {
    json spec = {
        {"tunnel", {{"create", json::object()}}},
        {"credentials",
         {{"mode", "WorkloadIdentity"},
          {"workloadIdentity",
           {{"federationRuleId", "fdrl_1"}, {"organizationId", "org"},
            {"serviceAccountId", "svac_1"}}}}},
        {"routes", {{{"name", "docs"}, {"url", "http://10.0.0.5:8080"}}}}};
    spec.merge_patch(spec_overrides);
    json o = {{"apiVersion", "perimeter.dev/v1alpha1"},
              {"kind", "McpTunnel"},
              {"metadata",
               {{"name", "tickets"},
                {"namespace", kNamespace},
                {"generation", 1},
                {"finalizers", {kFinalizer}}}},
              {"spec", spec}};
    if (!status.is_null()) o["status"] = status;
    return o;
  }

  // Stores the object in the fake apiserver and the cache, as an informer would have.
  // Returns the uid the server gave it.
  std::string given(const json& tunnel_object) {
    const auto stored = server_.seed(
        "/apis/perimeter.dev/v1alpha1/namespaces/team-a/mcptunnels", tunnel_object);
    tunnels_.upsert(std::make_shared<const json>(stored));
    return stored["metadata"].value("uid", "");
  }

  std::unique_ptr<McpTunnelReconciler> make_reconciler(ReconcilerOptions o) {
    return std::make_unique<McpTunnelReconciler>(
        ReconcilerDependencies{tunnels_, services_, deployments_, tunnel_client_, secret_client_,
                               config_map_client_, deployment_client_, network_policy_client_,
                               budget_client_, events_, factory_, metrics_, clock_,
                               Logger("test", StderrSink::instance(), LogLevel::kError)},
        std::move(o));
  }
  runtime::ReconcileResult reconcile(ReconcilerOptions o) {
    return make_reconciler(std::move(o))->reconcile({kNamespace, "tickets"});
  }
  // The cache catches up with what the server holds (as the informer would).
  void refresh_cache() { tunnels_.upsert(std::make_shared<const json>(stored_tunnel())); }

  // Gone, or kept only by finalizers other than the operator's.
  bool released() {
    const auto stored =
        server_.object_at("/apis/perimeter.dev/v1alpha1/namespaces/team-a/mcptunnels/tickets");
    if (!stored) return true;
    const json finalizers = (*stored)["metadata"].value("finalizers", json::array());
    return std::find(finalizers.begin(), finalizers.end(), kFinalizer) == finalizers.end();
  }
  json stored_tunnel() {
    return *server_.object_at("/apis/perimeter.dev/v1alpha1/namespaces/team-a/mcptunnels/tickets");
  }
  std::string condition(const std::string& type) {
    for (const auto& c : stored_tunnel()["status"].value("conditions", json::array())) {
      if (c["type"] == type) return c["status"].get<std::string>() + "/" + c["reason"].get<std::string>();
    }
    return "";
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics client_metrics_{registry_};
  runtime::RuntimeMetrics runtime_metrics_{registry_};
  kube::ResourceClient tunnel_client_{server_, mcp_tunnels(), client_metrics_};
  kube::ResourceClient secret_client_{server_, kube::resources::secrets(), client_metrics_};
  kube::ResourceClient config_map_client_{server_, kube::resources::config_maps(), client_metrics_};
  kube::ResourceClient deployment_client_{server_, kube::resources::deployments(), client_metrics_};
  kube::ResourceClient network_policy_client_{server_, kube::resources::network_policies(),
                                              client_metrics_};
  kube::ResourceClient budget_client_{server_, kube::resources::pod_disruption_budgets(),
                                      client_metrics_};
  kube::ResourceClient event_client_{server_, kube::resources::events(), client_metrics_};
  runtime::EventRecorder events_{event_client_, {}, runtime_metrics_,
                                 Logger("events", StderrSink::instance(), LogLevel::kError)};
  runtime::Store tunnels_, services_, deployments_;
  NiceMock<testing::MockTunnelsApi> api_;
  CountingFactory factory_{api_};
  RecordingMetrics metrics_{registry_};
  testing::FakeClock clock_;
};

TEST_F(McpTunnelReconcilerTest, AdoptsTheTunnelAnInterruptedPassCreatedInsteadOfCreatingAnother) {
  const std::string uid = given(object());
  EXPECT_CALL(api_, list_tunnels(false, _, _))
      .WillOnce(Return(tunnelsapi::TunnelPage{
          {a_tunnel("tnl_other", "team-b/tickets [another-uid]"),
           a_tunnel("tnl_ours", "renamed [" + uid + "]")},
          std::nullopt}));
  EXPECT_CALL(api_, create_tunnel(_)).Times(0);
  reconcile(options());
  EXPECT_EQ(stored_tunnel()["status"]["tunnelId"], "tnl_ours");
  EXPECT_EQ(condition("TunnelProvisioned"), "True/Created");
}

TEST_F(McpTunnelReconcilerTest, CreatesOneTunnelNamedAfterTheUidWhenNoneIsFound) {
  const std::string uid = given(object());
  ASSERT_FALSE(uid.empty());
  EXPECT_CALL(api_, list_tunnels(false, _, _)).WillOnce(Return(tunnelsapi::TunnelPage{}));
  EXPECT_CALL(api_, create_tunnel("team-a/tickets [" + uid + "]"))
      .WillOnce(Return(a_tunnel("tnl_new", "x")));
  reconcile(options());
  EXPECT_EQ(stored_tunnel()["status"]["tunnelId"], "tnl_new");
}

TEST_F(McpTunnelReconcilerTest, APassWokenByTheGatewayDoesNotAskTheApiAgainUntilTheResync) {
  given(object());
  EXPECT_CALL(api_, list_tunnels(false, _, _)).WillOnce(Return(tunnelsapi::TunnelPage{}));
  EXPECT_CALL(api_, create_tunnel(_)).WillOnce(Return(a_tunnel("tnl_1", "x")));
  EXPECT_CALL(api_, list_certificates(_, _, _, _)).Times(2);  // the first pass, the resync
  EXPECT_CALL(api_, retrieve_tunnel("tnl_1"))
      .WillOnce(Return(a_tunnel("tnl_1", "x")));  // the resync only
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, "tickets"});
  ASSERT_EQ(stored_tunnel()["status"]["tunnelId"], "tnl_1");
  // Woken three times by the Deployment's status: nothing asked of the API.
  for (int i = 0; i < 3; ++i) {
    refresh_cache();
    clock_.advance(std::chrono::seconds(10));
    reconciler->reconcile({kNamespace, "tickets"});
  }
  // After the resync interval the tunnel and its CA registration are verified again.
  refresh_cache();
  clock_.advance(options().resync);
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(condition("CertificateRegistered"), "True/Registered");
}

TEST_F(McpTunnelReconcilerTest, ARecordedTunnelIsReadByIdAndNeverRecreatedWhenItIsGone) {
  given(object(json::object(), {{"tunnelId", "tnl_gone"}}));
  EXPECT_CALL(api_, retrieve_tunnel("tnl_gone"))
      .WillOnce([](const std::string&) -> tunnelsapi::Tunnel {
        throw agentapi::ApiError("tunnels.retrieve", 404,
                                 R"({"type":"error","error":{"type":"not_found_error"}})", "r");
      });
  EXPECT_CALL(api_, list_tunnels(_, _, _)).Times(0);
  EXPECT_CALL(api_, create_tunnel(_)).Times(0);
  reconcile(options());
  EXPECT_EQ(condition("TunnelProvisioned"), "False/TunnelNotFound");
  EXPECT_EQ(condition("Ready"), "False/TunnelNotFound");
}

TEST_F(McpTunnelReconcilerTest, ARotationAnInterruptedPassAlreadyMadeIsTakenNotRepeated) {
  // The recorded token is tntok_1 at version 0; the spec asks for version 1; the service already
  // shows tntok_2 (a pass rotated and stopped before recording it).
  given(object({{"tokenVersion", 1}},
               {{"tunnelId", "tnl_1"}, {"token", {{"id", "tntok_1"}, {"version", 0}}}}));
  EXPECT_CALL(api_, retrieve_tunnel("tnl_1")).WillOnce(Return(a_tunnel("tnl_1", "x")));
  EXPECT_CALL(api_, reveal_token("tnl_1"))
      .WillOnce(Return(tunnelsapi::TunnelToken{"tntok_2", tunnelsapi::Secret("t-2")}));
  EXPECT_CALL(api_, rotate_token(_, _)).Times(0);
  reconcile(options());
  EXPECT_EQ(stored_tunnel()["status"]["token"], json({{"id", "tntok_2"}, {"version", 1}}));
  const auto secret = server_.object_at("/api/v1/namespaces/team-a/secrets/tickets-token");
  ASSERT_TRUE(secret);
  std::string token;
  ASSERT_TRUE(base64_decode_any((*secret)["data"]["token"].get<std::string>(), &token));
  EXPECT_EQ(token, "t-2");
}

TEST_F(McpTunnelReconcilerTest, RotatesOnceWhenTheServiceStillShowsTheRecordedToken) {
  given(object({{"tokenVersion", 1}},
               {{"tunnelId", "tnl_1"}, {"token", {{"id", "tntok_1"}, {"version", 0}}}}));
  EXPECT_CALL(api_, retrieve_tunnel("tnl_1")).WillOnce(Return(a_tunnel("tnl_1", "x")));
  EXPECT_CALL(api_, reveal_token("tnl_1"))
      .WillOnce(Return(tunnelsapi::TunnelToken{"tntok_1", tunnelsapi::Secret("t-1")}));
  EXPECT_CALL(api_, rotate_token("tnl_1", _))
      .WillOnce(Return(tunnelsapi::TunnelToken{"tntok_2", tunnelsapi::Secret("t-2")}));
  reconcile(options());
  EXPECT_EQ(stored_tunnel()["status"]["token"], json({{"id", "tntok_2"}, {"version", 1}}));
}

TEST_F(McpTunnelReconcilerTest, AHostNotAllowedGetsNoTokenAndNoCall) {
  given(object({{"credentials", {{"apiBaseUrl", "https://tunnels.attacker.example"}}}}));
  reconcile(options());
  EXPECT_EQ(factory_.made, 0);
  EXPECT_EQ(condition("CredentialsReady"), "False/ApiHostNotAllowed");
}

TEST_F(McpTunnelReconcilerTest, AnAudienceNotAllowedGetsNoTokenAndNoCall) {
  // An audience the apiserver accepts would make the operator's token a Kubernetes credential.
  given(object({{"credentials",
                 {{"workloadIdentity", {{"audience", "https://kubernetes.default.svc"}}}}}}));
  reconcile(options());
  EXPECT_EQ(factory_.made, 0);
  EXPECT_EQ(condition("CredentialsReady"), "False/AudienceNotAllowed");
}

TEST_F(McpTunnelReconcilerTest, DeletionWithArchiveNeverSendsTheIdentityToAHostChangedSince) {
  json doomed = object({{"deletionPolicy", "Archive"},
                        {"credentials", {{"apiBaseUrl", "https://tunnels.attacker.example"}}}},
                       {{"tunnelId", "tnl_1"}});
  doomed["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z";
  given(doomed);
  EXPECT_CALL(api_, archive_tunnel(_)).Times(0);
  reconcile(options());
  EXPECT_EQ(factory_.made, 0);
  EXPECT_TRUE(released());
}

TEST_F(McpTunnelReconcilerTest, DeletionWithArchiveArchivesTheRecordedTunnel) {
  json doomed = object({{"deletionPolicy", "Archive"}}, {{"tunnelId", "tnl_1"}});
  doomed["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z";
  given(doomed);
  EXPECT_CALL(api_, archive_tunnel("tnl_1")).WillOnce(Return(a_tunnel("tnl_1", "x")));
  reconcile(options());
  EXPECT_TRUE(released());
}

TEST_F(McpTunnelReconcilerTest, ANamespaceNotEnabledGetsNothing) {
  given(object());
  auto o = options();
  o.tunnel_namespaces = std::set<std::string>{"team-b"};
  reconcile(o);
  EXPECT_EQ(factory_.made, 0);
  EXPECT_EQ(condition("Ready"), "False/NamespaceNotEnabled");
  EXPECT_FALSE(server_.object_at("/apis/apps/v1/namespaces/team-a/deployments/tickets-gateway"));
}

// GuardEnforced: True only once every replica runs the pod template with the guard; a tunnel
// without a policy says it is not configured, and enabled: false says the policy is not enforced.
TEST_F(McpTunnelReconcilerTest, GuardEnforcedFollowsTheSpecAndTheRollout) {
  const json guarded_routes = json::parse(R"([{"name": "docs", "url": "http://10.0.0.5:8080",
      "policy": {"tools": {"deny": ["delete_*"]}}}])");
  given(object({{"routes", guarded_routes}}));
  EXPECT_CALL(api_, list_tunnels(false, _, _)).WillOnce(Return(tunnelsapi::TunnelPage{}));
  EXPECT_CALL(api_, create_tunnel(_)).WillOnce(Return(a_tunnel("tnl_1", "x")));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(condition("GuardEnforced"), "False/RollingOut");

  const auto config_map =
      server_.object_at("/api/v1/namespaces/team-a/configmaps/tickets-gateway-config");
  ASSERT_TRUE(config_map);
  ASSERT_TRUE((*config_map)["data"].contains("guard.yaml"));
  EXPECT_NE((*config_map)["data"]["guard.yaml"].get<std::string>().find("delete_*"),
            std::string::npos);
  EXPECT_NE((*config_map)["data"]["config.yaml"].get<std::string>().find("http://127.0.0.1:9100"),
            std::string::npos);
  auto deployment =
      *server_.object_at("/apis/apps/v1/namespaces/team-a/deployments/tickets-gateway");
  ASSERT_EQ(deployment["spec"]["template"]["spec"]["containers"].size(), 3u);

  // The Deployment, rolled out, as the informer would deliver it.
  deployment["metadata"]["generation"] = 1;
  deployment["status"] = {
      {"observedGeneration", 1}, {"replicas", 2}, {"updatedReplicas", 2}, {"readyReplicas", 2}};
  deployments_.upsert(std::make_shared<const json>(deployment));
  refresh_cache();
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(condition("GuardEnforced"), "True/Enforced");
  EXPECT_EQ(condition("Ready"), "True/GatewayReady");

  // One replica still runs the previous template: not in force.
  deployment["status"]["updatedReplicas"] = 1;
  deployments_.upsert(std::make_shared<const json>(deployment));
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(condition("GuardEnforced"), "False/RollingOut");
}

// A platform team pushes the guard's image to its own registry once (--mcp-guard-image, the
// chart's mcpGuard.image); an McpTunnel's spec.guard.image still wins.
TEST_F(McpTunnelReconcilerTest, TheGuardRunsTheOperatorsImageUnlessTheSpecNamesOne) {
  const json guarded_routes = json::parse(R"([{"name": "docs", "url": "http://10.0.0.5:8080",
      "policy": {"tools": {"deny": ["delete_*"]}}}])");
  given(object({{"routes", guarded_routes}}));
  // Each object given below is a new McpTunnel (a new uid), so each gets a tunnel of its own.
  EXPECT_CALL(api_, list_tunnels(false, _, _))
      .Times(2)
      .WillRepeatedly(Return(tunnelsapi::TunnelPage{}));
  EXPECT_CALL(api_, create_tunnel(_)).Times(2).WillRepeatedly(Return(a_tunnel("tnl_1", "x")));
  ReconcilerOptions o = options();
  o.default_guard_image = "registry.bank.example/perimeter/perimeter-mcp-guard:0.1.0";
  auto reconciler = make_reconciler(o);
  reconciler->reconcile({kNamespace, "tickets"});
  const auto guard_image = [&] {
    const auto deployment =
        *server_.object_at("/apis/apps/v1/namespaces/team-a/deployments/tickets-gateway");
    for (const auto& c : deployment["spec"]["template"]["spec"]["containers"])
      if (c["name"] == "mcp-guard") return c["image"].get<std::string>();
    return std::string("(no guard container)");
  };
  EXPECT_EQ(guard_image(), "registry.bank.example/perimeter/perimeter-mcp-guard:0.1.0");

  given(
      object({{"routes", guarded_routes}, {"guard", {{"image", "mirror.example/guard:pinned"}}}}));
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(guard_image(), "mirror.example/guard:pinned");
}

TEST_F(McpTunnelReconcilerTest, GuardEnforcedSaysWhyTheGuardIsOff) {
  given(object());
  EXPECT_CALL(api_, list_tunnels(false, _, _)).WillOnce(Return(tunnelsapi::TunnelPage{}));
  EXPECT_CALL(api_, create_tunnel(_)).WillOnce(Return(a_tunnel("tnl_1", "x")));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(condition("GuardEnforced"), "False/NotConfigured");
  const auto config_map =
      server_.object_at("/api/v1/namespaces/team-a/configmaps/tickets-gateway-config");
  ASSERT_TRUE(config_map);
  EXPECT_FALSE((*config_map)["data"].contains("guard.yaml"));

  // A policy switched off by hand is not enforced, and the condition names its route.
  EXPECT_CALL(api_, retrieve_tunnel("tnl_1")).WillRepeatedly(Return(a_tunnel("tnl_1", "x")));
  json off = stored_tunnel();
  off["metadata"]["generation"] = 2;
  off["spec"]["routes"][0]["policy"] = {{"tools", {{"deny", {"delete_*"}}}}};
  off["spec"]["guard"] = {{"enabled", false}};
  tunnels_.upsert(std::make_shared<const json>(off));
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(condition("GuardEnforced"), "False/GuardDisabled");
  for (const auto& c : stored_tunnel()["status"]["conditions"]) {
    if (c["type"] == "GuardEnforced") {
      EXPECT_NE(c["message"].get<std::string>().find("docs"), std::string::npos) << c.dump();
    }
  }
}

// The gauges an alert reads say what the status says, per McpTunnel, and go with the McpTunnel:
// a deleted tunnel must not keep "not connected" or an old renewal time firing.
TEST_F(McpTunnelReconcilerTest, StatusGaugesFollowTheStatusAndGoWithTheTunnel) {
  using perimeter::testing::metric_value;
  const std::map<std::string, std::string> tickets = {{"mcptunnel", "team-a/tickets"}};
  const auto with = [&](std::map<std::string, std::string> labels) {
    labels.insert(tickets.begin(), tickets.end());
    return labels;
  };
  const auto unix_seconds = [](const json& text) {
    const auto at = parse_rfc3339(text.get<std::string>());
    EXPECT_TRUE(at) << text;
    return at ? std::chrono::duration<double>(at->time_since_epoch()).count() : -2.0;
  };
  given(object());
  EXPECT_CALL(api_, list_tunnels(false, _, _)).WillOnce(Return(tunnelsapi::TunnelPage{}));
  EXPECT_CALL(api_, create_tunnel(_)).WillOnce(Return(a_tunnel("tnl_1", "x")));
  auto reconciler = make_reconciler(options());
  reconciler->reconcile({kNamespace, "tickets"});

  // No gateway replica yet: not connected, and the certificate the pass issued.
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_connected_replicas", tickets), 0);
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_condition",
                         with({{"condition", "ConnectorConnected"}})),
            0);
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_condition",
                         with({{"condition", "TunnelProvisioned"}})),
            1);
  const json certificate = stored_tunnel()["status"]["certificate"];
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_certificate_not_after_timestamp_seconds",
                         with({{"certificate", "server"}})),
            unix_seconds(certificate["notAfter"]));
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_certificate_not_after_timestamp_seconds",
                         with({{"certificate", "ca"}})),
            unix_seconds(certificate["caNotAfter"]));
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_certificate_renew_at_timestamp_seconds",
                         with({{"certificate", "server"}})),
            unix_seconds(certificate["renewAt"]));
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_actions_total",
                         with({{"action", "tunnel_created"}})),
            1);

  // Two replicas hold an edge connection.
  auto deployment =
      *server_.object_at("/apis/apps/v1/namespaces/team-a/deployments/tickets-gateway");
  deployment["metadata"]["generation"] = 1;
  deployment["status"] = {
      {"observedGeneration", 1}, {"replicas", 2}, {"updatedReplicas", 2}, {"readyReplicas", 2}};
  deployments_.upsert(std::make_shared<const json>(deployment));
  refresh_cache();
  reconciler->reconcile({kNamespace, "tickets"});
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_connected_replicas", tickets), 2);
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_condition",
                         with({{"condition", "ConnectorConnected"}})),
            1);
  EXPECT_EQ(
      metric_value(registry_, "perimeter_mcptunnel_condition", with({{"condition", "Ready"}})), 1);

  // Being deleted (the archive is under way): every gauge of it goes, and stays gone.
  json doomed = stored_tunnel();
  doomed["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z";
  doomed["spec"]["deletionPolicy"] = "Retain";
  tunnels_.upsert(std::make_shared<const json>(doomed));
  reconciler->reconcile({kNamespace, "tickets"});
  for (const char* gauge :
       {"perimeter_mcptunnel_connected_replicas", "perimeter_mcptunnel_condition",
        "perimeter_mcptunnel_certificate_not_after_timestamp_seconds",
        "perimeter_mcptunnel_certificate_renew_at_timestamp_seconds"}) {
    EXPECT_EQ(metric_value(registry_, gauge, tickets), -1) << gauge;
  }
  EXPECT_EQ(metric_value(registry_, "perimeter_mcptunnel_actions_total",
                         with({{"action", "tunnel_created"}})),
            1);  // counters stay

  // Gone: nothing comes back.
  tunnels_.remove("team-a/tickets");
  reconciler->reconcile({kNamespace, "tickets"});
  for (const char* gauge :
       {"perimeter_mcptunnel_connected_replicas", "perimeter_mcptunnel_condition",
        "perimeter_mcptunnel_certificate_not_after_timestamp_seconds",
        "perimeter_mcptunnel_certificate_renew_at_timestamp_seconds"}) {
    EXPECT_EQ(metric_value(registry_, gauge, tickets), -1) << gauge;
  }
}

// A failing step is counted against its McpTunnel, so the alert can name it.
TEST_F(McpTunnelReconcilerTest, AFailedStepIsCountedForItsTunnel) {
  given(object());
  EXPECT_CALL(api_, list_tunnels(false, _, _))
      .WillOnce([](bool, int, const std::string&) -> tunnelsapi::TunnelPage {
        throw agentapi::ApiError("tunnels.list", 503, R"({"type":"error"})", "r");
      });
  EXPECT_THROW(reconcile(options()), std::exception);
  EXPECT_EQ(perimeter::testing::metric_value(registry_, "perimeter_mcptunnel_failures_total",
                                             {{"mcptunnel", "team-a/tickets"}, {"step", "tunnel"}}),
            1);
}

}  // namespace
}  // namespace perimeter::mcptunnel
