#include "controllers/mcptunnel/mcp_tunnel.h"

#include <gtest/gtest.h>

namespace perimeter::mcptunnel {
namespace {

using nlohmann::json;

json minimal_object() {
  return json::parse(R"({
    "metadata": {"name": "tickets", "namespace": "team-a", "uid": "u-1", "generation": 3},
    "spec": {
      "tunnel": {"create": {}},
      "credentials": {"mode": "WorkloadIdentity",
                      "workloadIdentity": {"federationRuleId": "fdrl_1", "organizationId": "org",
                                           "serviceAccountId": "svac_1"}},
      "routes": [{"name": "tickets", "service": {"name": "tickets", "port": 8080}},
                 {"name": "docs", "url": "http://10.0.0.5:8080"}]
    }})");
}

TEST(ParseMcpTunnelTest, AppliesTheSchemaDefaultsToAMinimalObject) {
  const McpTunnel tunnel = parse_mcp_tunnel(minimal_object());
  EXPECT_EQ(tunnel.name, "tickets");
  EXPECT_EQ(tunnel.generation, 3);
  EXPECT_TRUE(tunnel.create);
  EXPECT_EQ(tunnel.mode, CredentialsMode::kWorkloadIdentity);
  EXPECT_EQ(tunnel.api_base_url, "https://api.anthropic.com");
  EXPECT_EQ(tunnel.workload_identity.audience, "https://api.anthropic.com");
  ASSERT_EQ(tunnel.routes.size(), 2u);
  EXPECT_EQ(tunnel.routes[0].service->port, 8080);
  EXPECT_EQ(tunnel.routes[0].service->scheme, "http");
  EXPECT_EQ(tunnel.routes[1].url, "http://10.0.0.5:8080");
  EXPECT_EQ(tunnel.allowed_cidrs,
            (std::vector<std::string>{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}));
  EXPECT_EQ(tunnel.certificate.duration, std::chrono::hours(2160));
  EXPECT_EQ(tunnel.certificate.renew_before, std::chrono::hours(720));
  EXPECT_EQ(tunnel.deletion_policy, DeletionPolicy::kRetain);
  EXPECT_EQ(tunnel.gateway.replicas, 2);
}

TEST(ParseMcpTunnelTest, DisplayNameCarriesTheUidSoAnInterruptedCreateIsFoundAgain) {
  json object = minimal_object();
  McpTunnel tunnel = parse_mcp_tunnel(object);
  EXPECT_EQ(tunnel.display_name(), "team-a/tickets [u-1]");
  EXPECT_TRUE(tunnel.owns_display_name("team-a/tickets [u-1]"));
  EXPECT_TRUE(tunnel.owns_display_name("renamed in the console [u-1]"));
  EXPECT_FALSE(tunnel.owns_display_name("team-a/tickets [u-2]"));
  EXPECT_FALSE(tunnel.owns_display_name("team-a/tickets"));

  object["spec"]["tunnel"]["create"]["displayName"] = "Ticketing";
  EXPECT_EQ(parse_mcp_tunnel(object).display_name(), "Ticketing [u-1]");
}

TEST(ParseMcpTunnelTest, ReadsManualModeAndEveryOptionalBlock) {
  json object = minimal_object();
  object["spec"].erase("tunnel");
  object["spec"]["credentials"] = json::parse(R"({"mode": "Manual", "manual": {
      "domain": "abc.tunnel.example", "tokenSecretRef": {"name": "tok"},
      "tlsSecretRef": {"name": "tls"}}})");
  object["spec"]["upstream"] = json::parse(
      R"({"allowedCIDRs": ["10.1.0.0/16"], "caSecretRef": {"name": "ca"}, "includeSystemCAs": true})");
  object["spec"]["certificate"] = json::parse(
      R"({"duration": "3m", "renewBefore": "2m", "caDuration": "1h30m", "caRenewBefore": "90s"})");
  object["spec"]["deletionPolicy"] = "Archive";
  object["spec"]["gateway"] = json::parse(R"({"replicas": 1, "proxyImage": "mirror/proxy:1",
      "podLabels": {"team": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}]})");
  const McpTunnel tunnel = parse_mcp_tunnel(object);
  EXPECT_EQ(tunnel.mode, CredentialsMode::kManual);
  EXPECT_EQ(tunnel.manual.domain, "abc.tunnel.example");
  EXPECT_EQ(tunnel.manual.token_secret_key, "token");
  EXPECT_EQ(tunnel.manual.tls_secret_name, "tls");
  EXPECT_EQ(tunnel.allowed_cidrs, std::vector<std::string>{"10.1.0.0/16"});
  EXPECT_EQ(tunnel.upstream_ca_secret_name, "ca");
  EXPECT_EQ(tunnel.upstream_ca_secret_key, "ca.crt");
  EXPECT_TRUE(tunnel.include_system_cas);
  EXPECT_EQ(tunnel.certificate.duration, std::chrono::minutes(3));
  EXPECT_EQ(tunnel.certificate.ca_duration, std::chrono::minutes(90));
  EXPECT_EQ(tunnel.certificate.ca_renew_before, std::chrono::seconds(90));
  EXPECT_EQ(tunnel.deletion_policy, DeletionPolicy::kArchive);
  EXPECT_EQ(tunnel.gateway.replicas, 1);
  EXPECT_EQ(tunnel.gateway.proxy_image, "mirror/proxy:1");
  EXPECT_EQ(tunnel.gateway.pod_labels.at("team"), "a");
  EXPECT_EQ(tunnel.gateway.tolerations.size(), 1u);
}

TEST(ParseMcpTunnelTest, NamesTheFieldOfWhatTheOperatorCannotActOn) {
  struct Case {
    const char* what;
    std::function<void(json&)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"no routes", [](json& o) { o["spec"]["routes"] = json::array(); }, "spec.routes"},
      {"a repeated route",
       [](json& o) { o["spec"]["routes"][1] = o["spec"]["routes"][0]; }, "spec.routes[1].name"},
      {"both service and url",
       [](json& o) { o["spec"]["routes"][0]["url"] = "http://a:1"; }, "spec.routes[0]"},
      {"both id and create", [](json& o) { o["spec"]["tunnel"]["id"] = "tnl_1"; }, "spec.tunnel"},
      {"an unknown mode", [](json& o) { o["spec"]["credentials"]["mode"] = "ApiKey"; },
       "spec.credentials.mode"},
      {"a bad duration", [](json& o) { o["spec"]["certificate"]["duration"] = "90d"; },
       "spec.certificate.duration"},
      {"renewal after expiry",
       [](json& o) { o["spec"]["certificate"] = {{"duration", "1h"}, {"renewBefore", "2h"}}; },
       "spec.certificate.renewBefore"},
      {"a wrong type", [](json& o) { o["spec"]["gateway"]["replicas"] = "two"; },
       "spec.gateway.replicas"},
  };
  for (const auto& c : cases) {
    json object = minimal_object();
    c.mutate(object);
    try {
      parse_mcp_tunnel(object);
      ADD_FAILURE() << c.what << ": accepted";
    } catch (const SpecError& e) {
      EXPECT_NE(std::string(e.what()).find(c.field), std::string::npos)
          << c.what << ": " << e.what();
    }
  }
}

TEST(ParseDurationTest, ReadsGoDurationsTheSchemaAllows) {
  EXPECT_EQ(parse_duration("2160h"), std::chrono::hours(2160));
  EXPECT_EQ(parse_duration("1h30m"), std::chrono::minutes(90));
  EXPECT_EQ(parse_duration("90s"), std::chrono::seconds(90));
  EXPECT_EQ(parse_duration("1500ms"), std::chrono::seconds(1));
  EXPECT_THROW(parse_duration(""), SpecError);
  EXPECT_THROW(parse_duration("h"), SpecError);
  EXPECT_THROW(parse_duration("5d"), SpecError);
  EXPECT_THROW(parse_duration("-5m"), SpecError);
}

}  // namespace
}  // namespace perimeter::mcptunnel
