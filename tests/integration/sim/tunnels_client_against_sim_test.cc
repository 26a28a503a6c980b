// The Tunnels API client (real cpprestsdk transport) against perimeter-sim as a separate process,
// over loopback: the workload identity exchange with a JWT signed here (its issuer registered
// with the simulator's key set), then a tunnel's whole life: create, retrieve, list, reveal,
// rotate, certificates (a CA made with lib/pki, checked by the simulator's rules), archive. Then
// a revoked access token, an assertion the rule refuses, and faults: every repeatable call
// survives 5xx, 429 and resets, and create never makes a tunnel the caller did not get.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "agentapi/api_error.h"
#include "agentapi/cpprest_transport.h"
#include "agentapi/mock_agent_api.h"
#include "agentapi/sim_process.h"
#include "core/capturing_log_sink.h"
#include "pki/pki.h"
#include "test_jwt.h"  // tests/unit/sim: signing keys and JWTs made in the test
#include "tunnelsapi/tunnels_api_client.h"
#include "tunnelsapi/workload_identity.h"

namespace perimeter::tunnelsapi {
namespace {

using agentapi::ApiError;
using nlohmann::json;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kIssuer = "https://issuer.perimeter.test";
constexpr const char* kAudience = "https://api.anthropic.com/perimeter";
constexpr const char* kSubject = "system:serviceaccount:perimeter-system:perimeter-operator";

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class TunnelsClientAgainstSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    admin("POST", "/admin/federation_issuers",
          {{"issuer", kIssuer}, {"jwks", sim::jwt_test::jwks_of({&key_})}}, 201);
    organization_ = admin("POST", "/admin/organizations", {{"name", "perimeter-it"}}, 201)["id"];
    const json rule = admin("POST", "/admin/federation_rules",
                            {{"issuer", kIssuer},
                             {"audience", kAudience},
                             {"subject", kSubject},
                             {"organization_id", organization_}},
                            201);
    rule_id_ = rule["id"];
    service_account_id_ = rule["service_account_id"];
    write_assertion(kAudience);
  }

  json admin(const std::string& method, const std::string& path, const json& body,
             int expected_status) {
    const auto reply = testing::http_call(sim_.url(), method, path, body.dump());
    EXPECT_EQ(reply.status, expected_status) << method << " " << path << ": " << reply.body;
    return reply.json();
  }

  // What the kubelet would project: a fresh ServiceAccount token for `audience`.
  void write_assertion(const std::string& audience) {
    const std::int64_t now = unix_now();
    std::ofstream(assertion_path_, std::ios::trunc) << key_.sign({{"iss", kIssuer},
                                                                  {"aud", json::array({audience})},
                                                                  {"sub", kSubject},
                                                                  {"iat", now},
                                                                  {"nbf", now},
                                                                  {"exp", now + 600}});
  }

  void make_client(int max_retries = 2) {
    WorkloadIdentityConfig wif;
    wif.base_url = sim_.url();
    wif.federation_rule_id = rule_id_;
    wif.organization_id = organization_;
    wif.service_account_id = service_account_id_;
    wif.assertion_file = assertion_path_;
    wif.max_retries = max_retries;
    wif.retry_backoff.initial = milliseconds(5);
    wif.retry_backoff.max = milliseconds(20);
    tokens_ = std::make_unique<WorkloadIdentityTokenSource>(
        wif, std::make_unique<agentapi::CpprestTransport>(), SystemClock::instance(),
        SystemRandom::instance(), sleeper_, &metrics_, Logger("tunnelsapi.wif", sink_));
    TunnelsClientConfig config;
    config.base_url = sim_.url();
    config.max_retries = max_retries;
    config.retry_backoff = wif.retry_backoff;
    client_ = std::make_unique<TunnelsApiClient>(
        config, *tokens_, std::make_unique<agentapi::CpprestTransport>(), SystemRandom::instance(),
        sleeper_, &metrics_, Logger("tunnelsapi", sink_));
  }

  void set_faults(const json& faults) { admin("POST", "/admin/faults", faults, 200); }

  std::string logs() const {
    std::string all;
    for (const auto& line : sink_->lines()) all += line + "\n";
    return all;
  }

  testing::SimProcess sim_;
  testing::TempDir dir_;
  std::string assertion_path_ = dir_.path() + "/token";
  sim::jwt_test::TestKey key_ = sim::jwt_test::TestKey::ec("perimeter-it-1");
  std::string organization_, rule_id_, service_account_id_;
  agentapi::RealSleeper sleeper_;
  testing::RecordingApiMetrics metrics_;
  std::shared_ptr<testing::CapturingLogSink> sink_ = std::make_shared<testing::CapturingLogSink>();
  std::unique_ptr<WorkloadIdentityTokenSource> tokens_;
  std::unique_ptr<TunnelsApiClient> client_;
};

pki::Certificate make_ca(const pki::PrivateKey& key) {
  pki::CaRequest request;
  request.common_name = "perimeter tunnel CA";
  request.lifetime = std::chrono::hours(24 * 365 * 5);
  request.backdate = std::chrono::minutes(5);
  request.max_path_length = 0;
  return pki::issue_self_signed_ca(request, key, std::chrono::system_clock::now());
}

TEST_F(TunnelsClientAgainstSimTest, ATunnelsWholeLifeThroughTheClient) {
  make_client();
  // Create, and find it again the ways the controller will.
  const Tunnel tunnel = client_->create_tunnel("perimeter-uid-1");
  EXPECT_EQ(tokens_->exchanges(), 1);
  EXPECT_THAT(tunnel.id, ::testing::StartsWith("tnl_"));
  EXPECT_EQ(tunnel.display_name, "perimeter-uid-1");
  EXPECT_FALSE(tunnel.domain.empty());
  EXPECT_FALSE(tunnel.archived());
  EXPECT_EQ(client_->retrieve_tunnel(tunnel.id), tunnel);
  const Tunnel other = client_->create_tunnel("");
  EXPECT_FALSE(other.display_name.has_value());
  EXPECT_NE(other.domain, tunnel.domain);
  const TunnelPage first = client_->list_tunnels(false, 1, "");
  ASSERT_EQ(first.data.size(), 1u);
  EXPECT_EQ(first.data[0].id, other.id);  // newest first
  EXPECT_TRUE(first.next_page.has_value());
  const std::vector<Tunnel> all = list_all_tunnels(*client_, false, 1);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1], tunnel);

  // The connector token: the same until rotated; after a rotation only the new one connects.
  const TunnelToken revealed = client_->reveal_token(tunnel.id);
  EXPECT_EQ(client_->reveal_token(tunnel.id), revealed);
  const TunnelToken rotated = client_->rotate_token(tunnel.id, "tokenVersion 2");
  EXPECT_NE(rotated.id, revealed.id);
  EXPECT_NE(rotated.tunnel_token, revealed.tunnel_token);
  EXPECT_EQ(client_->reveal_token(tunnel.id), rotated);
  EXPECT_EQ(admin("POST", "/admin/tunnels/" + tunnel.id + "/connect",
                  {{"tunnel_token", revealed.tunnel_token.expose()}}, 200)["accepted"],
            false);
  EXPECT_EQ(admin("POST", "/admin/tunnels/" + tunnel.id + "/connect",
                  {{"tunnel_token", rotated.tunnel_token.expose()}}, 200)["accepted"],
            true);
  const json history = admin("GET", "/admin/tunnels/" + tunnel.id, json::object(), 200);
  EXPECT_EQ(history["token_versions"].back()["rotation_reason"], "tokenVersion 2");

  // Certificates: a CA made with lib/pki is accepted and reported with its fingerprint.
  const pki::PrivateKey ca_key = pki::PrivateKey::generate_ec_p256();
  const pki::Certificate ca = make_ca(ca_key);
  const TunnelCertificate registered = client_->create_certificate(tunnel.id, ca.pem());
  EXPECT_THAT(registered.id, ::testing::StartsWith("tcrt_"));
  EXPECT_EQ(registered.tunnel_id, tunnel.id);
  EXPECT_EQ(registered.fingerprint, ca.fingerprint_sha256());
  EXPECT_TRUE(registered.expires_at.has_value());
  EXPECT_EQ(client_->retrieve_certificate(tunnel.id, registered.id), registered);
  // The same CA twice is the service's answer, not a transient failure.
  try {
    client_->create_certificate(tunnel.id, ca.pem());
    ADD_FAILURE() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 409) << e.what();
  }
  // A certificate that breaks a rule is refused with the reason, in the typed error.
  const pki::PrivateKey weak_key = pki::PrivateKey::generate_rsa(1024);
  try {
    client_->create_certificate(tunnel.id, make_ca(weak_key).pem());
    ADD_FAILURE() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.error_type(), "invalid_request_error");
    EXPECT_FALSE(e.api_message().empty());
  }
  const pki::PrivateKey second_key = pki::PrivateKey::generate_ec_p256();
  const TunnelCertificate second =
      client_->create_certificate(tunnel.id, make_ca(second_key).pem());
  EXPECT_EQ(list_all_certificates(*client_, tunnel.id, false, 1).size(), 2u);

  // Archiving a certificate, twice: the same end state.
  const TunnelCertificate archived_certificate =
      client_->archive_certificate(tunnel.id, registered.id);
  EXPECT_TRUE(archived_certificate.archived());
  EXPECT_EQ(client_->archive_certificate(tunnel.id, registered.id), archived_certificate);
  EXPECT_EQ(client_->list_certificates(tunnel.id, false, 0, "").data.size(), 1u);
  EXPECT_EQ(client_->list_certificates(tunnel.id, true, 0, "").data.size(), 2u);

  // Archiving the tunnel, twice: irreversible, the token gone, the certificates archived.
  const Tunnel archived = client_->archive_tunnel(tunnel.id);
  EXPECT_TRUE(archived.archived());
  EXPECT_EQ(client_->archive_tunnel(tunnel.id), archived);
  EXPECT_TRUE(client_->retrieve_certificate(tunnel.id, second.id).archived());
  EXPECT_EQ(list_all_tunnels(*client_, false).size(), 1u);
  EXPECT_EQ(list_all_tunnels(*client_, true).size(), 2u);
  try {
    client_->reveal_token(tunnel.id);
    ADD_FAILURE() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 409) << e.what();
  }
  client_->archive_tunnel(other.id);

  // One exchange served the whole flow; no credential reached the logs.
  EXPECT_EQ(tokens_->exchanges(), 1);
  const std::string all_logs = logs();
  EXPECT_THAT(all_logs, Not(HasSubstr(revealed.tunnel_token.expose())));
  EXPECT_THAT(all_logs, Not(HasSubstr(rotated.tunnel_token.expose())));
  EXPECT_THAT(all_logs, Not(HasSubstr(tokens_->access_token().expose())));
}

TEST_F(TunnelsClientAgainstSimTest, ARevokedAccessTokenIsReplacedByANewExchangeOnce) {
  make_client();
  EXPECT_TRUE(client_->list_tunnels(false, 0, "").data.empty());
  const Secret before = tokens_->access_token();
  // The simulator forgets every access token it issued (and every tunnel).
  admin("POST", "/admin/tunnels/reset", json::object(), 200);
  write_assertion(kAudience);  // the kubelet rotated the projected token meanwhile
  const Tunnel tunnel = client_->create_tunnel("perimeter-uid-2");
  EXPECT_EQ(tokens_->exchanges(), 2);
  EXPECT_NE(tokens_->access_token(), before);
  // Exactly one tunnel, though the create was sent twice (the first refused with 401).
  const json tunnels =
      admin("GET", "/admin/tunnels?organization_id=" + organization_, json::object(), 200);
  ASSERT_EQ(tunnels["data"].size(), 1u) << tunnels.dump();
  EXPECT_EQ(tunnels["data"][0]["id"], tunnel.id);
  const auto created = std::count(metrics_.responses.begin(), metrics_.responses.end(),
                                  std::make_pair(std::string("tunnels.create"), 401));
  EXPECT_EQ(created, 1);
}

TEST_F(TunnelsClientAgainstSimTest, AnAssertionTheRuleRefusesIsAnOAuthErrorWithTheReason) {
  write_assertion("https://someone-else.example");
  make_client();
  try {
    client_->list_tunnels(false, 0, "");
    FAIL() << "expected OAuthError";
  } catch (const OAuthError& e) {
    EXPECT_EQ(e.status(), 401);
    EXPECT_EQ(e.error(), "invalid_grant");
    EXPECT_THAT(e.error_description(), HasSubstr("aud"));
  }
  std::ifstream in(assertion_path_);
  const std::string assertion((std::istreambuf_iterator<char>(in)), {});
  EXPECT_THAT(logs(), Not(HasSubstr(assertion)));
}

TEST_F(TunnelsClientAgainstSimTest, ACreateIsNeverSentAgainAfterA5xxOrAResetButAfterA429) {
  make_client(/*max_retries=*/3);
  const Tunnel kept = client_->create_tunnel("perimeter-kept");
  auto count = [&](const std::string& operation, int status) {
    return std::count(metrics_.responses.begin(), metrics_.responses.end(),
                      std::make_pair(operation, status));
  };

  set_faults({{"error_5xx_rate", 1.0}});
  try {
    client_->create_tunnel("perimeter-uid-3");
    ADD_FAILURE() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
  }
  EXPECT_EQ(count("tunnels.create", 503), 1);  // sent once: the caller must look, not resend
  EXPECT_THROW(client_->retrieve_tunnel(kept.id), ApiError);
  EXPECT_EQ(count("tunnels.retrieve", 503), 4);  // a read is retried max_retries times

  set_faults({{"error_5xx_rate", 0.0}, {"reset_rate", 1.0}});
  EXPECT_THROW(client_->create_tunnel("perimeter-uid-3"), agentapi::TransportError);
  EXPECT_EQ(count("tunnels.create", 0), 1);
  EXPECT_THROW(client_->rotate_token(kept.id, ""), agentapi::TransportError);
  EXPECT_EQ(count("tunnels.rotate_token", 0), 1);

  set_faults({{"reset_rate", 0.0}, {"error_429_rate", 1.0}});
  EXPECT_THROW(client_->create_tunnel("perimeter-uid-3"), ApiError);
  EXPECT_EQ(count("tunnels.create", 429), 4);  // refused before anything happened: retried
  for (const auto& [retry, delay] : metrics_.retries) {
    if (retry == "tunnels.create:429") {
      EXPECT_EQ(delay, milliseconds(200));  // the simulator's retry-after-ms
    }
  }

  set_faults({{"error_429_rate", 0.0}, {"non_json_rate", 1.0}});
  try {
    client_->retrieve_tunnel(kept.id);
    ADD_FAILURE() << "expected ProtocolError";
  } catch (const agentapi::ProtocolError& e) {
    EXPECT_EQ(e.operation(), "tunnels.retrieve");
    EXPECT_EQ(e.status(), 200);
    EXPECT_THAT(e.body_excerpt(), HasSubstr("502 Bad Gateway"));
  }
  EXPECT_EQ(metrics_.protocol_errors, (std::vector<std::string>{"tunnels.retrieve"}));

  set_faults({{"non_json_rate", 0.0}});
  // None of the refused creates made a tunnel: the one kept is the only one.
  const std::vector<Tunnel> listed = list_all_tunnels(*client_, true);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].id, kept.id);
}

TEST_F(TunnelsClientAgainstSimTest, UnderRandomFaultsRepeatableCallsSucceed) {
  make_client(/*max_retries=*/10);
  const Tunnel tunnel = client_->create_tunnel("perimeter-uid-4");
  const pki::PrivateKey ca_key = pki::PrivateKey::generate_ec_p256();
  const TunnelCertificate certificate =
      client_->create_certificate(tunnel.id, make_ca(ca_key).pem());
  set_faults({{"error_5xx_rate", 0.2}, {"error_429_rate", 0.1}, {"reset_rate", 0.05}});
  for (int round = 0; round < 5; ++round) {
    EXPECT_EQ(client_->retrieve_tunnel(tunnel.id).id, tunnel.id);
    EXPECT_EQ(list_all_tunnels(*client_, true).size(), 1u);
    EXPECT_FALSE(client_->reveal_token(tunnel.id).tunnel_token.empty());
    EXPECT_EQ(client_->retrieve_certificate(tunnel.id, certificate.id).id, certificate.id);
    EXPECT_EQ(list_all_certificates(*client_, tunnel.id, true).size(), 1u);
  }
  EXPECT_TRUE(client_->archive_certificate(tunnel.id, certificate.id).archived());
  EXPECT_TRUE(client_->archive_tunnel(tunnel.id).archived());
  set_faults({{"error_5xx_rate", 0.0}, {"error_429_rate", 0.0}, {"reset_rate", 0.0}});
  EXPECT_FALSE(metrics_.retries.empty());
}

}  // namespace
}  // namespace perimeter::tunnelsapi
