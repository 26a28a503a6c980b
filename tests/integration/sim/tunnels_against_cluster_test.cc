// The simulator's Tunnels API as a process, with its workload identity federation checked against
// a real kube-apiserver: a ServiceAccount token from the TokenRequest API (`kubectl create token
// --audience`) is exchanged at /v1/oauth/token (the simulator fetches the apiserver's OIDC
// discovery document and JWKS to verify it), then the access token creates a tunnel, registers a
// CA made with lib/pki and rotates the connector token. The same ServiceAccount's token for
// another audience, and another ServiceAccount's, are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "localcluster/tools.h"
#include "pki/pki.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;
using perimeter::testing::http_call;
using perimeter::testing::HttpResult;

constexpr const char* kServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local";
constexpr const char* kAudience = "https://api.anthropic.com/perimeter-tunnels-test";

// Runs a shell command; its stdout, or a test failure with the exit status.
std::string run(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) {
    ADD_FAILURE() << "cannot run: " << command;
    return output;
  }
  std::array<char, 4096> buffer{};
  while (std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) {
    output.append(buffer.data(), n);
  }
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << command << "\n" << output;
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
  return output;
}

std::vector<std::pair<std::string, std::string>> tunnel_headers(const std::string& token) {
  return {{"Authorization", "Bearer " + token},
          {"anthropic-beta", "mcp-tunnels-2026-06-22,oauth-2025-04-20"},
          {"anthropic-version", "2023-06-01"}};
}

class TunnelsAgainstClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& cluster = perimeter::testing::shared_cluster();
    kubectl_ = localcluster::require_tool(localcluster::tools_bin_dir(), "kubectl") +
               " --kubeconfig " + cluster.kubeconfig_path();
    namespace_ = "tunnels-" + std::to_string(::getpid());
    run(kubectl_ + " create namespace " + namespace_);
    run(kubectl_ + " -n " + namespace_ + " create serviceaccount tunnel-operator");
    run(kubectl_ + " -n " + namespace_ + " create serviceaccount someone-else");
    // The issuer's discovery document and keys are public, as for any OIDC provider: the
    // Kubernetes documentation's binding of the discovery role to unauthenticated callers.
    run(kubectl_ + " create clusterrolebinding " + namespace_ +
        "-oidc-discovery --clusterrole=system:service-account-issuer-discovery "
        "--group=system:unauthenticated");
    sim_ = new perimeter::testing::SimProcess({"--oidc-issuer-url", cluster.apiserver_url(),
                                               "--oidc-issuer", kServiceAccountIssuer,
                                               "--oidc-ca-file", cluster.ca_file()});
  }
  static void TearDownTestSuite() {
    delete sim_;
    sim_ = nullptr;
  }

  void SetUp() override {
    const HttpResult organization =
        http_call(sim_->url(), "POST", "/admin/organizations", json({{"name", "acme"}}).dump());
    ASSERT_EQ(organization.status, 201) << organization.body;
    organization_ = organization.json()["id"];
    const HttpResult rule =
        http_call(sim_->url(), "POST", "/admin/federation_rules",
                  json({{"issuer", kServiceAccountIssuer},
                        {"audience", kAudience},
                        {"subjects", {"system:serviceaccount:" + namespace_ + ":tunnel-operator"}},
                        {"organization_id", organization_},
                        {"service_account_id", "svac_perimeter"}})
                      .dump());
    ASSERT_EQ(rule.status, 201) << rule.body;
    rule_ = rule.json()["id"];
  }

  std::string service_account_token(const std::string& account, const std::string& audience) {
    return run(kubectl_ + " -n " + namespace_ + " create token " + account + " --audience " +
               audience + " --duration 10m");
  }

  HttpResult exchange(const std::string& assertion) {
    return http_call(sim_->url(), "POST", "/v1/oauth/token",
                     json({{"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"},
                           {"assertion", assertion},
                           {"federation_rule_id", rule_},
                           {"organization_id", organization_},
                           {"service_account_id", "svac_perimeter"}})
                         .dump(),
                     {{"anthropic-beta", "oauth-2025-04-20,oidc-federation-2026-04-01"}});
  }

  static std::string kubectl_;
  static std::string namespace_;
  static perimeter::testing::SimProcess* sim_;
  std::string organization_, rule_;
};

std::string TunnelsAgainstClusterTest::kubectl_;
std::string TunnelsAgainstClusterTest::namespace_;
perimeter::testing::SimProcess* TunnelsAgainstClusterTest::sim_ = nullptr;

TEST_F(TunnelsAgainstClusterTest, AServiceAccountTokenBuysATunnelACaAndARotation) {
  const HttpResult exchanged = exchange(service_account_token("tunnel-operator", kAudience));
  ASSERT_EQ(exchanged.status, 200) << exchanged.body << "\n" << sim_->log();
  const json access = exchanged.json();
  EXPECT_EQ(access["token_type"], "Bearer");
  EXPECT_EQ(access["scope"], "workspace:manage_tunnels");
  EXPECT_GT(access["expires_in"].get<int>(), 0);
  const std::string token = access["access_token"];

  const HttpResult created =
      http_call(sim_->url(), "POST", "/v1/tunnels", json({{"display_name", "payments"}}).dump(),
                tunnel_headers(token));
  ASSERT_EQ(created.status, 200) << created.body;
  const json tunnel = created.json();
  const std::string id = tunnel["id"];
  EXPECT_EQ(id.rfind("tnl_", 0), 0u);
  EXPECT_EQ(tunnel["display_name"], "payments");

  // A CA made the way the operator makes it, accepted by the service's rules.
  const auto now = std::chrono::system_clock::now();
  const pki::PrivateKey ca_key = pki::PrivateKey::generate_ec_p256();
  const pki::Certificate ca =
      pki::issue_self_signed_ca({.common_name = "perimeter tunnel CA",
                                 .lifetime = std::chrono::hours(24 * 365 * 5),
                                 .backdate = std::chrono::minutes(5),
                                 .max_path_length = 0},
                                ca_key, now);
  const HttpResult registered =
      http_call(sim_->url(), "POST", "/v1/tunnels/" + id + "/certificates",
                json({{"ca_certificate_pem", ca.pem()}}).dump(), tunnel_headers(token));
  ASSERT_EQ(registered.status, 200) << registered.body;
  EXPECT_EQ(registered.json()["fingerprint"], ca.fingerprint_sha256());
  EXPECT_EQ(registered.json()["tunnel_id"], id);

  // A leaf is not a CA: refused with the rule's reason.
  const pki::Certificate leaf =
      pki::issue_certificate({.common_name = "gateway",
                              .dns_names = {"*." + tunnel["domain"].get<std::string>()},
                              .lifetime = std::chrono::hours(24)},
                             pki::PrivateKey::generate_ec_p256(), ca, ca_key, now);
  const HttpResult refused =
      http_call(sim_->url(), "POST", "/v1/tunnels/" + id + "/certificates",
                json({{"ca_certificate_pem", leaf.pem()}}).dump(), tunnel_headers(token));
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_EQ(refused.json()["error"]["type"], "invalid_request_error");

  const HttpResult revealed = http_call(sim_->url(), "POST", "/v1/tunnels/" + id + "/reveal_token",
                                        "{}", tunnel_headers(token));
  ASSERT_EQ(revealed.status, 200) << revealed.body;
  const HttpResult rotated =
      http_call(sim_->url(), "POST", "/v1/tunnels/" + id + "/rotate_token",
                json({{"reason", "integration test"}}).dump(), tunnel_headers(token));
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  EXPECT_NE(rotated.json()["tunnel_token"], revealed.json()["tunnel_token"]);

  const HttpResult old_connects =
      http_call(sim_->url(), "POST", "/admin/tunnels/" + id + "/connect",
                json({{"tunnel_token", revealed.json()["tunnel_token"]}}).dump());
  ASSERT_EQ(old_connects.status, 200) << old_connects.body;
  EXPECT_FALSE(old_connects.json()["accepted"]);
  const HttpResult view = http_call(sim_->url(), "GET", "/admin/tunnels/" + id);
  ASSERT_EQ(view.status, 200) << view.body;
  EXPECT_EQ(view.json()["token_version"], 2);
  EXPECT_EQ(view.json()["active_certificates"], 1);
  EXPECT_EQ(view.json()["max_active_certificates"], 1);

  // Admin API keys are not credentials here.
  const HttpResult admin_key = http_call(sim_->url(), "GET", "/v1/tunnels", "",
                                         tunnel_headers("sk-ant-admin01-not-accepted"));
  EXPECT_EQ(admin_key.status, 401) << admin_key.body;
}

TEST_F(TunnelsAgainstClusterTest, TheSameServiceAccountWithAnotherAudienceIsRefused) {
  const HttpResult refused =
      exchange(service_account_token("tunnel-operator", "https://some-other-audience"));
  EXPECT_EQ(refused.status, 401) << refused.body;
  EXPECT_EQ(refused.json()["error"], "invalid_grant");
  EXPECT_NE(refused.json()["error_description"].get<std::string>().find("audience"),
            std::string::npos)
      << refused.body;
}

TEST_F(TunnelsAgainstClusterTest, AnotherServiceAccountIsRefused) {
  const HttpResult refused = exchange(service_account_token("someone-else", kAudience));
  EXPECT_EQ(refused.status, 401) << refused.body;
  EXPECT_EQ(refused.json()["error"], "invalid_grant");
  EXPECT_NE(refused.json()["error_description"].get<std::string>().find("subject"),
            std::string::npos)
      << refused.body;
}

TEST_F(TunnelsAgainstClusterTest, ATamperedServiceAccountTokenIsRefused) {
  std::string token = service_account_token("tunnel-operator", kAudience);
  // Flip one character of the signature.
  char& last = token[token.size() - 2];
  last = last == 'A' ? 'B' : 'A';
  const HttpResult refused = exchange(token);
  EXPECT_EQ(refused.status, 401) << refused.body;
  EXPECT_NE(refused.json()["error_description"].get<std::string>().find("signature"),
            std::string::npos)
      << refused.body;
}

TEST_F(TunnelsAgainstClusterTest, FaultKnobsHitTheTunnelsApiToo) {
  const HttpResult exchanged = exchange(service_account_token("tunnel-operator", kAudience));
  ASSERT_EQ(exchanged.status, 200) << exchanged.body;
  const std::string token = exchanged.json()["access_token"];
  ASSERT_EQ(http_call(sim_->url(), "POST", "/admin/faults", R"({"error_429_rate":1.0})").status,
            200);
  const HttpResult limited =
      http_call(sim_->url(), "POST", "/v1/tunnels", "{}", tunnel_headers(token));
  ASSERT_EQ(http_call(sim_->url(), "POST", "/admin/faults", R"({"error_429_rate":0})").status, 200);
  EXPECT_EQ(limited.status, 429) << limited.body;
  const HttpResult tunnels =
      http_call(sim_->url(), "GET", "/admin/tunnels?organization_id=" + organization_);
  ASSERT_EQ(tunnels.status, 200);
  EXPECT_EQ(tunnels.json()["data"].size(), 0u);
}

}  // namespace
}  // namespace perimeter::sim
