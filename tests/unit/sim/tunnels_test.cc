#include "sim/tunnels.h"

#include <gtest/gtest.h>

#include <set>

#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "pki/pki.h"
#include "sim/pki_ca_inspector.h"
#include "sim/router.h"
#include "test_jwt.h"

namespace perimeter::sim {
namespace {

using jwt_test::jwks_of;
using jwt_test::TestKey;
using nlohmann::json;

constexpr const char* kIssuer = "https://kubernetes.default.svc.cluster.local";
constexpr const char* kAudience = "https://api.anthropic.com";
constexpr const char* kSubject = "system:serviceaccount:tunnels:perimeter";

json body_of(const ApiReply& reply) {
  return json::parse(reply.body);
}

std::string ca_pem(pki::TimePoint now, int rsa_bits = 0) {
  const pki::PrivateKey key =
      rsa_bits ? pki::PrivateKey::generate_rsa(rsa_bits) : pki::PrivateKey::generate_ec_p256();
  return pki::issue_self_signed_ca({.common_name = "tunnel ca",
                                    .lifetime = std::chrono::hours(24 * 365 * 5),
                                    .max_path_length = 0},
                                   key, now)
      .pem();
}

class TunnelServiceTest : public ::testing::Test {
 protected:
  TunnelServiceTest() : service_(TunnelOptions{}, clock_, random_, inspector_) {
    service_.register_issuer(kIssuer, std::make_shared<StaticKeySource>(jwks_of({&key_})));
    organization_ = body_of(service_.create_organization({{"name", "acme"}}))["id"];
    const ApiReply rule = service_.create_federation_rule({{"issuer", kIssuer},
                                                           {"audience", kAudience},
                                                           {"subjects", {kSubject}},
                                                           {"organization_id", organization_},
                                                           {"service_account_id", "svac_1"}});
    EXPECT_EQ(rule.status, 201) << rule.body;
    rule_ = body_of(rule)["id"];
  }

  std::int64_t now() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_.wall_now().time_since_epoch())
        .count();
  }
  std::string assertion(const std::string& subject = kSubject,
                        const std::string& audience = kAudience) const {
    return key_.sign({{"iss", kIssuer},
                      {"sub", subject},
                      {"aud", json::array({audience})},
                      {"iat", now()},
                      {"exp", now() + 600}});
  }
  json exchange_body(const std::string& jwt) const {
    return {{"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"},
            {"assertion", jwt},
            {"federation_rule_id", rule_},
            {"organization_id", organization_},
            {"service_account_id", "svac_1"}};
  }
  TunnelService::Caller login() {
    const ApiReply reply = service_.exchange_token(exchange_body(assertion()));
    EXPECT_EQ(reply.status, 200) << reply.body;
    return {body_of(reply)["access_token"], std::nullopt};
  }
  std::string create_tunnel(const TunnelService::Caller& caller) {
    const ApiReply reply = service_.create_tunnel(caller, json::object());
    EXPECT_EQ(reply.status, 200) << reply.body;
    return body_of(reply)["id"];
  }

  testing::FakeClock clock_;
  testing::FakeRandom random_;
  PkiCaInspector inspector_;
  TunnelService service_;
  TestKey key_ = TestKey::ec("sa-key");
  std::string organization_, rule_;
};

// ---- the token exchange ----

TEST_F(TunnelServiceTest, ExchangesAValidAssertionForAnAccessToken) {
  const ApiReply reply = service_.exchange_token(exchange_body(assertion()));
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json token = body_of(reply);
  EXPECT_EQ(token["access_token"].get<std::string>().rfind("sk-ant-oat01-", 0), 0u);
  EXPECT_EQ(token["token_type"], "Bearer");
  EXPECT_EQ(token["expires_in"], 3600);
  EXPECT_EQ(token["scope"], "workspace:manage_tunnels");
}

TEST_F(TunnelServiceTest, RefusesMalformedExchangesAsInvalidRequest) {
  json body = exchange_body(assertion());
  body["grant_type"] = "client_credentials";
  ApiReply reply = service_.exchange_token(body);
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(body_of(reply)["error"], "unsupported_grant_type");
  for (const char* field :
       {"grant_type", "assertion", "federation_rule_id", "organization_id", "service_account_id"}) {
    body = exchange_body(assertion());
    body.erase(field);
    reply = service_.exchange_token(body);
    EXPECT_EQ(reply.status, 400) << field;
    EXPECT_EQ(body_of(reply)["error"], "invalid_request") << field;
  }
  body = exchange_body(std::string(17 * 1024, 'a'));
  EXPECT_EQ(body_of(service_.exchange_token(body))["error"], "invalid_request");
}

TEST_F(TunnelServiceTest, RefusesAssertionsTheRuleDoesNotMatchWithReasons) {
  struct Case {
    std::string name;
    json body;
    std::string reason;
  };
  const TestKey stranger = TestKey::ec("sa-key");
  json expired_claims = {
      {"iss", kIssuer}, {"sub", kSubject}, {"aud", kAudience}, {"exp", now() - 3600}};
  std::vector<Case> cases = {
      {"wrong audience", exchange_body(assertion(kSubject, "https://other")), "audience"},
      {"wrong subject", exchange_body(assertion("system:serviceaccount:x:y")), "subject"},
      {"bad signature",
       exchange_body(stranger.sign(
           {{"iss", kIssuer}, {"sub", kSubject}, {"aud", kAudience}, {"exp", now() + 600}})),
       "signature"},
      {"expired", exchange_body(key_.sign(expired_claims)), "expired"},
      {"wrong issuer",
       exchange_body(key_.sign(
           {{"iss", "https://evil"}, {"sub", kSubject}, {"aud", kAudience}, {"exp", now() + 600}})),
       "issuer"},
  };
  json unknown_rule = exchange_body(assertion());
  unknown_rule["federation_rule_id"] = "fdrl_nope";
  cases.push_back({"unknown rule", unknown_rule, "fdrl_nope"});
  json other_account = exchange_body(assertion());
  other_account["service_account_id"] = "svac_2";
  cases.push_back({"other service account", other_account, "svac_2"});
  json other_workspace = exchange_body(assertion());
  other_workspace["workspace_id"] = "wrkspc_x";
  cases.push_back({"workspace not enabled", other_workspace, "wrkspc_x"});
  for (const Case& c : cases) {
    const ApiReply reply = service_.exchange_token(c.body);
    EXPECT_EQ(reply.status, 401) << c.name << ": " << reply.body;
    EXPECT_EQ(body_of(reply)["error"], "invalid_grant") << c.name;
    EXPECT_NE(body_of(reply)["error_description"].get<std::string>().find(c.reason),
              std::string::npos)
        << c.name << ": " << reply.body;
  }
}

TEST_F(TunnelServiceTest, ASubjectPatternWithAStarMatchesByPrefix) {
  const ApiReply rule = service_.create_federation_rule({{"issuer", kIssuer},
                                                         {"audience", kAudience},
                                                         {"subject", "system:serviceaccount:ns:*"},
                                                         {"organization_id", organization_}});
  ASSERT_EQ(rule.status, 201) << rule.body;
  json body = exchange_body(assertion("system:serviceaccount:ns:anyone"));
  body["federation_rule_id"] = body_of(rule)["id"];
  body["service_account_id"] = body_of(rule)["service_account_id"];
  EXPECT_EQ(service_.exchange_token(body).status, 200);
  body["assertion"] = assertion("system:serviceaccount:other:anyone");
  EXPECT_EQ(service_.exchange_token(body).status, 401);
}

TEST_F(TunnelServiceTest, RulesNameOnlyRegisteredIssuersAndKnownOrganizations) {
  EXPECT_EQ(service_
                .create_federation_rule({{"issuer", "https://unknown"},
                                         {"audience", kAudience},
                                         {"subject", kSubject},
                                         {"organization_id", organization_}})
                .status,
            400);
  EXPECT_EQ(service_
                .create_federation_rule({{"issuer", kIssuer},
                                         {"audience", kAudience},
                                         {"subject", kSubject},
                                         {"organization_id", "nope"}})
                .status,
            404);
}

TEST_F(TunnelServiceTest, AccessTokensExpireAndAdminKeysAreRefused) {
  const TunnelService::Caller caller = login();
  EXPECT_EQ(service_.list_tunnels(caller, false, 0, "").status, 200);
  clock_.advance(std::chrono::seconds(3599));
  EXPECT_EQ(service_.list_tunnels(caller, false, 0, "").status, 200);
  clock_.advance(std::chrono::seconds(1));
  const ApiReply expired = service_.list_tunnels(caller, false, 0, "");
  EXPECT_EQ(expired.status, 401);
  EXPECT_NE(expired.body.find("expired"), std::string::npos);

  const ApiReply admin = service_.list_tunnels({"sk-ant-admin01-abc", std::nullopt}, false, 0, "");
  EXPECT_EQ(admin.status, 401);
  EXPECT_NE(admin.body.find("Admin API keys"), std::string::npos);
  EXPECT_EQ(service_.list_tunnels({"made-up", std::nullopt}, false, 0, "").status, 401);
}

TEST_F(TunnelServiceTest, ATokenWithoutTheTunnelsScopeIsForbidden) {
  const ApiReply minted =
      service_.mint_access_token({{"organization_id", organization_}, {"scope", "user:inference"}});
  ASSERT_EQ(minted.status, 200);
  const ApiReply reply =
      service_.list_tunnels({body_of(minted)["access_token"], std::nullopt}, false, 0, "");
  EXPECT_EQ(reply.status, 403);
  EXPECT_EQ(body_of(reply)["error"]["type"], "permission_error");
}

TEST_F(TunnelServiceTest, TheWorkspaceHeaderCannotSelectAnotherWorkspace) {
  TunnelService::Caller caller = login();
  caller.workspace_header = "default";
  EXPECT_EQ(service_.list_tunnels(caller, false, 0, "").status, 200);
  caller.workspace_header = "wrkspc_other";
  EXPECT_EQ(service_.list_tunnels(caller, false, 0, "").status, 403);
}

// ---- tunnels ----

TEST_F(TunnelServiceTest, CreateIsNotIdempotentAndAllocatesAFreshDomainEachTime) {
  const TunnelService::Caller caller = login();
  std::set<std::string> ids, domains;
  for (int i = 0; i < 3; ++i) {
    const ApiReply reply = service_.create_tunnel(caller, {{"display_name", "same"}});
    ASSERT_EQ(reply.status, 200) << reply.body;
    const json tunnel = body_of(reply);
    EXPECT_EQ(tunnel["type"], "tunnel");
    EXPECT_EQ(tunnel["id"].get<std::string>().rfind("tnl_", 0), 0u);
    EXPECT_EQ(tunnel["display_name"], "same");
    EXPECT_TRUE(tunnel["archived_at"].is_null());
    EXPECT_NE(tunnel["domain"].get<std::string>().find(".tunnels.sim.local"), std::string::npos);
    ids.insert(tunnel["id"]);
    domains.insert(tunnel["domain"]);
  }
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(domains.size(), 3u);
  EXPECT_TRUE(body_of(service_.create_tunnel(caller, json::object()))["display_name"].is_null());
  EXPECT_EQ(service_.create_tunnel(caller, {{"display_name", ""}}).status, 400);
  EXPECT_EQ(service_.create_tunnel(caller, {{"display_name", std::string(256, 'x')}}).status, 400);
  EXPECT_EQ(service_.create_tunnel(caller, {{"display_name", 7}}).status, 400);
}

TEST_F(TunnelServiceTest, AnOrganizationHasAtMostTenActiveTunnels) {
  const TunnelService::Caller caller = login();
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(create_tunnel(caller));
  const ApiReply refused = service_.create_tunnel(caller, json::object());
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(body_of(refused)["error"]["type"], "invalid_request_error");
  EXPECT_NE(refused.body.find("10 active tunnels"), std::string::npos) << refused.body;
  // Archived tunnels do not count.
  ASSERT_EQ(service_.archive_tunnel(caller, ids[3]).status, 200);
  EXPECT_EQ(service_.create_tunnel(caller, json::object()).status, 200);
  // Another organization has its own ten.
  const std::string other = body_of(service_.create_organization(json::object()))["id"];
  const ApiReply minted = service_.mint_access_token({{"organization_id", other}});
  EXPECT_EQ(service_.create_tunnel({body_of(minted)["access_token"], std::nullopt}, json::object())
                .status,
            200);
}

TEST_F(TunnelServiceTest, ListsNewestFirstInCursorPages) {
  const TunnelService::Caller caller = login();
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(create_tunnel(caller));
  ASSERT_EQ(service_.archive_tunnel(caller, ids[6]).status, 200);  // the newest

  std::vector<std::string> seen;
  std::string page;
  int pages = 0;
  do {
    const ApiReply reply = service_.list_tunnels(caller, false, 4, page);
    ASSERT_EQ(reply.status, 200) << reply.body;
    const json body = body_of(reply);
    for (const json& tunnel : body["data"]) seen.push_back(tunnel["id"]);
    page = body["next_page"].is_null() ? "" : body["next_page"].get<std::string>();
    ++pages;
  } while (!page.empty());
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(seen, (std::vector<std::string>{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}));

  const json all = body_of(service_.list_tunnels(caller, true, 0, ""));
  ASSERT_EQ(all["data"].size(), 7u);
  EXPECT_EQ(all["data"][0]["id"], ids[6]);
  EXPECT_FALSE(all["data"][0]["archived_at"].is_null());
  EXPECT_TRUE(all["next_page"].is_null());

  EXPECT_EQ(service_.list_tunnels(caller, false, 0, "tnl_unknown").status, 400);
  EXPECT_EQ(service_.list_tunnels(caller, false, 1001, "").status, 400);
  // The default page is 20.
  EXPECT_EQ(body_of(service_.list_tunnels(caller, true, 0, ""))["data"].size(), 7u);
}

TEST_F(TunnelServiceTest, OrganizationsDoNotSeeEachOthersTunnels) {
  const TunnelService::Caller caller = login();
  const std::string id = create_tunnel(caller);
  const std::string other = body_of(service_.create_organization(json::object()))["id"];
  const TunnelService::Caller stranger{
      body_of(service_.mint_access_token({{"organization_id", other}}))["access_token"],
      std::nullopt};
  EXPECT_EQ(service_.retrieve_tunnel(stranger, id).status, 404);
  EXPECT_EQ(service_.reveal_token(stranger, id).status, 404);
  EXPECT_EQ(body_of(service_.list_tunnels(stranger, true, 0, ""))["data"].size(), 0u);
  EXPECT_EQ(service_.retrieve_tunnel(caller, id).status, 200);
}

TEST_F(TunnelServiceTest, RotationRetiresTheOldTokenForNewConnections) {
  const TunnelService::Caller caller = login();
  const std::string id = create_tunnel(caller);
  const json first = body_of(service_.reveal_token(caller, id));
  EXPECT_EQ(first["type"], "tunnel_token");
  EXPECT_EQ(body_of(service_.reveal_token(caller, id)), first);  // stable until rotated

  const ApiReply rotated = service_.rotate_token(caller, id, {{"reason", "tokenVersion 2"}});
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  const json second = body_of(rotated);
  EXPECT_NE(second["id"], first["id"]);
  EXPECT_NE(second["tunnel_token"], first["tunnel_token"]);
  EXPECT_EQ(body_of(service_.reveal_token(caller, id)), second);

  const json old_connect =
      body_of(service_.admin_connect(id, {{"tunnel_token", first["tunnel_token"]}}));
  EXPECT_FALSE(old_connect["accepted"]);
  EXPECT_EQ(old_connect["version"], 1);
  EXPECT_TRUE(
      body_of(service_.admin_connect(id, {{"tunnel_token", second["tunnel_token"]}}))["accepted"]);

  const json view = body_of(service_.admin_tunnel(id));
  EXPECT_EQ(view["token_version"], 2);
  ASSERT_EQ(view["token_versions"].size(), 2u);
  EXPECT_EQ(view["token_versions"][0]["retired_because"], "rotated");
  EXPECT_EQ(view["token_versions"][1]["rotation_reason"], "tokenVersion 2");
  EXPECT_TRUE(view["token_versions"][1]["retired_at"].is_null());
  EXPECT_EQ(service_.rotate_token(caller, id, {{"reason", 5}}).status, 400);
}

TEST_F(TunnelServiceTest, ArchiveIsIrreversibleAndRetriesReturnTheSameRecord) {
  const TunnelService::Caller caller = login();
  const std::string id = create_tunnel(caller);
  const std::string token = body_of(service_.reveal_token(caller, id))["tunnel_token"];
  ASSERT_EQ(
      service_.create_certificate(caller, id, {{"ca_certificate_pem", ca_pem(clock_.wall_now())}})
          .status,
      200);
  const ApiReply archived = service_.archive_tunnel(caller, id);
  ASSERT_EQ(archived.status, 200);
  EXPECT_FALSE(body_of(archived)["archived_at"].is_null());
  clock_.advance(std::chrono::seconds(5));
  EXPECT_EQ(body_of(service_.archive_tunnel(caller, id)), body_of(archived));

  EXPECT_EQ(service_.reveal_token(caller, id).status, 409);
  EXPECT_EQ(service_.rotate_token(caller, id, json::object()).status, 409);
  EXPECT_EQ(
      service_.create_certificate(caller, id, {{"ca_certificate_pem", ca_pem(clock_.wall_now())}})
          .status,
      409);
  EXPECT_FALSE(body_of(service_.admin_connect(id, {{"tunnel_token", token}}))["accepted"]);
  const json certificates = body_of(service_.list_certificates(caller, id, true, 0, ""));
  ASSERT_EQ(certificates["data"].size(), 1u);
  EXPECT_FALSE(certificates["data"][0]["archived_at"].is_null());
  EXPECT_EQ(body_of(service_.list_certificates(caller, id, false, 0, ""))["data"].size(), 0u);
  EXPECT_EQ(body_of(service_.admin_tunnel(id))["active_certificates"], 0);
  EXPECT_EQ(service_.retrieve_tunnel(caller, id).status, 200);
}

// ---- certificates ----

TEST_F(TunnelServiceTest, RegistersAValidCaWithItsFingerprintAndExpiry) {
  const TunnelService::Caller caller = login();
  const std::string id = create_tunnel(caller);
  const std::string pem = ca_pem(clock_.wall_now());
  const ApiReply reply = service_.create_certificate(caller, id, {{"ca_certificate_pem", pem}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json certificate = body_of(reply);
  const pki::Certificate parsed = pki::Certificate::from_pem(pem);
  EXPECT_EQ(certificate["type"], "tunnel_certificate");
  EXPECT_EQ(certificate["id"].get<std::string>().rfind("tcrt_", 0), 0u);
  EXPECT_EQ(certificate["tunnel_id"], id);
  EXPECT_EQ(certificate["fingerprint"], parsed.fingerprint_sha256());
  EXPECT_TRUE(certificate["archived_at"].is_null());
  EXPECT_FALSE(certificate["expires_at"].is_null());
  EXPECT_EQ(body_of(service_.retrieve_certificate(caller, id, certificate["id"])), certificate);
  // The same CA twice is a conflict.
  EXPECT_EQ(service_.create_certificate(caller, id, {{"ca_certificate_pem", pem}}).status, 409);
}

TEST_F(TunnelServiceTest, RefusesCertificatesThatBreakTheRulesWithTheReason) {
  const TunnelService::Caller caller = login();
  const std::string id = create_tunnel(caller);
  const auto now = clock_.wall_now();
  const pki::PrivateKey ca_key = pki::PrivateKey::generate_ec_p256();
  const pki::Certificate ca = pki::issue_self_signed_ca(
      {.common_name = "ca", .lifetime = std::chrono::hours(24)}, ca_key, now);
  const pki::Certificate leaf = pki::issue_certificate(
      {.common_name = "leaf", .dns_names = {"x.example"}, .lifetime = std::chrono::hours(24)},
      pki::PrivateKey::generate_ec_p256(), ca, ca_key, now);
  struct Case {
    std::string name;
    std::string pem;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"not a CA", leaf.pem(), "not accepted"},
      {"RSA 1024", ca_pem(now, 1024), "not accepted"},
      {"two certificates", ca.pem() + ca.pem(), "exactly one"},
      {"a private key", ca.pem() + ca_key.pem(), "private-key"},
      {"not PEM", "hello", "exactly one"},
      {"too big", ca.pem() + std::string(9000, '\n'), "bytes"},
  };
  for (const Case& c : cases) {
    const ApiReply reply = service_.create_certificate(caller, id, {{"ca_certificate_pem", c.pem}});
    EXPECT_EQ(reply.status, 400) << c.name << ": " << reply.body;
    EXPECT_NE(reply.body.find(c.reason), std::string::npos) << c.name << ": " << reply.body;
  }
  // The violation text comes from the PKI rules.
  const auto violation = pki::tunnel_ca_violation(leaf.pem());
  ASSERT_TRUE(violation.has_value());
  EXPECT_NE(service_.create_certificate(caller, id, {{"ca_certificate_pem", leaf.pem()}})
                .body.find(*violation),
            std::string::npos);
  EXPECT_EQ(service_.create_certificate(caller, id, {{"ca_certificate_pem", 5}}).status, 400);
  EXPECT_EQ(body_of(service_.admin_tunnel(id))["certificates"].size(), 0u);
}

TEST_F(TunnelServiceTest, AThirdActiveCertificateIsRefusedAndTheHighWaterMarkIsKept) {
  const TunnelService::Caller caller = login();
  const std::string id = create_tunnel(caller);
  auto add = [&]() {
    return service_.create_certificate(caller, id,
                                       {{"ca_certificate_pem", ca_pem(clock_.wall_now())}});
  };
  const std::string first = body_of(add())["id"];
  const std::string second = body_of(add())["id"];
  const ApiReply third = add();
  EXPECT_EQ(third.status, 400);
  EXPECT_NE(third.body.find("at most 2"), std::string::npos) << third.body;

  // Rotation with overlap: archive the old one, then the new one fits.
  const ApiReply archived = service_.archive_certificate(caller, id, first);
  ASSERT_EQ(archived.status, 200);
  EXPECT_FALSE(body_of(archived)["archived_at"].is_null());
  clock_.advance(std::chrono::seconds(1));
  EXPECT_EQ(body_of(service_.archive_certificate(caller, id, first)), body_of(archived));
  const std::string fourth = body_of(add())["id"];

  const json active = body_of(service_.list_certificates(caller, id, false, 0, ""));
  ASSERT_EQ(active["data"].size(), 2u);
  EXPECT_EQ(active["data"][0]["id"], fourth);  // newest first
  EXPECT_EQ(active["data"][1]["id"], second);
  const json page = body_of(service_.list_certificates(caller, id, true, 2, ""));
  EXPECT_EQ(page["data"].size(), 2u);
  EXPECT_EQ(page["next_page"], first);

  const json view = body_of(service_.admin_tunnel(id));
  EXPECT_EQ(view["active_certificates"], 2);
  EXPECT_EQ(view["max_active_certificates"], 2);
  std::vector<int> counts;
  for (const json& change : view["active_certificate_history"]) counts.push_back(change["count"]);
  EXPECT_EQ(counts, (std::vector<int>{0, 1, 2, 1, 2}));

  EXPECT_EQ(service_.retrieve_certificate(caller, id, "tcrt_nope").status, 404);
  const std::string other = create_tunnel(caller);
  EXPECT_EQ(service_.retrieve_certificate(caller, other, second).status, 404);
  EXPECT_EQ(service_.archive_certificate(caller, other, second).status, 404);
}

// ---- through the router: headers, credentials, faults ----

class TunnelRouterTest : public TunnelServiceTest {
 protected:
  TunnelRouterTest()
      : simulator_(SimulatorOptions{}, clock_, random_),
        faults_(fault_random_),
        router_(simulator_, faults_, metrics_, &service_) {}

  ApiRequest api(const std::string& method, const std::string& path, const std::string& token) {
    ApiRequest request;
    request.method = method;
    request.path = path;
    request.headers = {{"authorization", "Bearer " + token},
                       {"anthropic-beta", "mcp-tunnels-2026-06-22,oauth-2025-04-20"},
                       {"anthropic-version", "2023-06-01"}};
    return request;
  }
  ApiRequest token_request(const json& body) {
    ApiRequest request;
    request.method = "POST";
    request.path = "/v1/oauth/token";
    request.headers = {{"anthropic-beta", "oauth-2025-04-20,oidc-federation-2026-04-01"},
                       {"content-type", "application/json"}};
    request.body = body.dump();
    return request;
  }

  testing::FakeRandom fault_random_{0.99};
  Simulator simulator_;
  Faults faults_;
  SimMetrics metrics_;
  ApiRouter router_;
};

TEST_F(TunnelRouterTest, TheWholeFlowOverTheRouter) {
  RouteDecision decision = router_.route(token_request(exchange_body(assertion())));
  ASSERT_EQ(decision.reply.status, 200) << decision.reply.body;
  EXPECT_EQ(decision.route, "oauth.token");
  const std::string token = body_of(decision.reply)["access_token"];

  ApiRequest create = api("POST", "/v1/tunnels", token);
  create.body = R"({"display_name":"payments"})";
  decision = router_.route(create);
  ASSERT_EQ(decision.reply.status, 200) << decision.reply.body;
  EXPECT_EQ(decision.route, "tunnels.create");
  const std::string id = body_of(decision.reply)["id"];

  ApiRequest list = api("GET", "/v1/tunnels", token);
  list.query = {{"include_archived", "true"}, {"limit", "1000"}};
  EXPECT_EQ(body_of(router_.route(list).reply)["data"][0]["id"], id);
  list.query = {{"limit", "1001"}};
  EXPECT_EQ(router_.route(list).reply.status, 400);
  list.query = {{"include_archived", "yes"}};
  EXPECT_EQ(router_.route(list).reply.status, 400);

  ApiRequest certificate = api("POST", "/v1/tunnels/" + id + "/certificates", token);
  certificate.body = json({{"ca_certificate_pem", ca_pem(clock_.wall_now())}}).dump();
  decision = router_.route(certificate);
  ASSERT_EQ(decision.reply.status, 200) << decision.reply.body;
  const std::string cid = body_of(decision.reply)["id"];
  EXPECT_EQ(router_.route(api("GET", "/v1/tunnels/" + id + "/certificates/" + cid, token)).route,
            "tunnels.certificates.retrieve");
  EXPECT_EQ(
      router_.route(api("POST", "/v1/tunnels/" + id + "/certificates/" + cid + "/archive", token))
          .reply.status,
      200);
  EXPECT_EQ(router_.route(api("POST", "/v1/tunnels/" + id + "/reveal_token", token)).reply.status,
            200);
  EXPECT_EQ(router_.route(api("POST", "/v1/tunnels/" + id + "/rotate_token", token)).reply.status,
            200);
  EXPECT_EQ(router_.route(api("POST", "/v1/tunnels/" + id + "/archive", token)).reply.status, 200);
  EXPECT_EQ(router_.route(api("DELETE", "/v1/tunnels/" + id, token)).reply.status, 404);

  ApiRequest admin;
  admin.method = "GET";
  admin.path = "/admin/tunnels/" + id;
  decision = router_.route(admin);
  ASSERT_EQ(decision.reply.status, 200);
  EXPECT_EQ(body_of(decision.reply)["token_versions"].size(), 2u);
}

TEST_F(TunnelRouterTest, HeadersAndCredentialsAreCheckedLikeTheApi) {
  const std::string token =
      body_of(service_.exchange_token(exchange_body(assertion())))["access_token"];
  ApiRequest request = api("GET", "/v1/tunnels", token);
  EXPECT_EQ(router_.route(request).reply.status, 200);

  request.headers["anthropic-beta"] = "managed-agents-2026-04-01";
  RouteDecision decision = router_.route(request);
  EXPECT_EQ(decision.reply.status, 400);
  EXPECT_EQ(body_of(decision.reply)["error"]["type"], "invalid_request_error");
  EXPECT_NE(decision.reply.body.find("mcp-tunnels-2026-06-22"), std::string::npos);

  request = api("GET", "/v1/tunnels", token);
  request.headers.erase("anthropic-version");
  EXPECT_EQ(router_.route(request).reply.status, 400);

  request = api("GET", "/v1/tunnels", token);
  request.headers.erase("authorization");
  request.headers["x-api-key"] = "sk-ant-admin01-key";
  decision = router_.route(request);
  EXPECT_EQ(decision.reply.status, 401);
  EXPECT_EQ(body_of(decision.reply)["error"]["type"], "authentication_error");

  // The token endpoint: the federation beta, JSON, OAuth-shaped errors.
  request = token_request(exchange_body(assertion()));
  request.headers["anthropic-beta"] = "oauth-2025-04-20";
  decision = router_.route(request);
  EXPECT_EQ(decision.reply.status, 400);
  EXPECT_EQ(body_of(decision.reply)["error"], "invalid_request");
  request = token_request(json::object());
  request.body = "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer";
  EXPECT_EQ(body_of(router_.route(request).reply)["error"], "invalid_request");
}

TEST_F(TunnelRouterTest, FaultsApplyAndNeverHalfHappen) {
  const std::string token =
      body_of(service_.exchange_token(exchange_body(assertion())))["access_token"];
  std::string error;
  ASSERT_TRUE(faults_.update({{"error_5xx_rate", 1.0}}, &error));
  ApiRequest create = api("POST", "/v1/tunnels", token);
  RouteDecision decision = router_.route(create);
  EXPECT_EQ(decision.reply.status, 503);
  EXPECT_EQ(decision.route, "tunnels.create");
  EXPECT_EQ(body_of(service_.admin_list_tunnels(""))["data"].size(), 0u);
  EXPECT_EQ(router_.route(token_request(exchange_body(assertion()))).reply.status, 503);

  ASSERT_TRUE(faults_.update({{"error_5xx_rate", 0.0}, {"error_429_rate", 1.0}}, &error));
  decision = router_.route(create);
  EXPECT_EQ(decision.reply.status, 429);
  ASSERT_TRUE(faults_.update({{"error_429_rate", 0.0}, {"reset_rate", 1.0}}, &error));
  EXPECT_EQ(router_.route(create).kind, RouteDecision::Kind::kReset);
  ASSERT_TRUE(faults_.update({{"reset_rate", 0.0}, {"non_json_rate", 1.0}}, &error));
  decision = router_.route(create);
  EXPECT_EQ(decision.reply.status, 200);
  EXPECT_TRUE(json::parse(decision.reply.body, nullptr, false).is_discarded());
  EXPECT_EQ(body_of(service_.admin_list_tunnels(""))["data"].size(), 0u);
  // The admin API is never faulted.
  ApiRequest admin;
  admin.method = "GET";
  admin.path = "/admin/tunnels";
  EXPECT_EQ(router_.route(admin).reply.status, 200);
}

}  // namespace
}  // namespace perimeter::sim
