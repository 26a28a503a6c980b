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

// --- the guard: routes[].policy and spec.guard ----------------------------------------------

TEST(ParseMcpTunnelGuardTest, IsOffWithoutAPolicyOrAudit) {
  const McpTunnel tunnel = parse_mcp_tunnel(minimal_object());
  EXPECT_FALSE(tunnel.guard_enabled());
  EXPECT_FALSE(tunnel.has_policy());
  EXPECT_FALSE(tunnel.routes[0].policy.has_value());
  EXPECT_TRUE(tunnel.guard.image.empty());
  EXPECT_FALSE(tunnel.guard.audit_set);

  // An image or resources alone do not turn it on.
  json object = minimal_object();
  object["spec"]["guard"] = {{"image", "mirror/guard:1"}, {"resources", json::object()}};
  EXPECT_FALSE(parse_mcp_tunnel(object).guard_enabled());
}

TEST(ParseMcpTunnelGuardTest, ReadsAPolicyAndTurnsTheGuardOn) {
  json object = minimal_object();
  object["spec"]["routes"][0]["policy"] = json::parse(R"({
      "tools": {"allow": ["search_*", "get_[a-z]*"], "deny": ["delete_*", "admin_*"]},
      "rateLimit": {"requestsPerSecond": 20, "burst": 40}})");
  object["spec"]["routes"][1]["policy"] = json::parse(R"({"rateLimit": {"requestsPerSecond": 5}})");
  const McpTunnel tunnel = parse_mcp_tunnel(object);
  EXPECT_TRUE(tunnel.has_policy());
  EXPECT_TRUE(tunnel.guard_enabled());
  const auto& policy = *tunnel.routes[0].policy;
  EXPECT_EQ(policy.allow, (std::vector<std::string>{"search_*", "get_[a-z]*"}));
  EXPECT_EQ(policy.deny, (std::vector<std::string>{"delete_*", "admin_*"}));
  ASSERT_TRUE(policy.rate_limit.has_value());
  EXPECT_EQ(policy.rate_limit->requests_per_second, 20);
  EXPECT_EQ(policy.rate_limit->burst, 40);
  // burst defaults to one second's worth.
  const auto& second = *tunnel.routes[1].policy;
  EXPECT_TRUE(second.allow.empty());
  EXPECT_TRUE(second.deny.empty());
  EXPECT_EQ(second.rate_limit->burst, 5);
  EXPECT_EQ(tunnel.guard.audit_level, AuditLevel::kMetadata);
}

TEST(ParseMcpTunnelGuardTest, AnEmptyPolicyOrAnAuditBlockTurnsItOnAndEnabledFalseWins) {
  json object = minimal_object();
  object["spec"]["routes"][1]["policy"] = json::object();  // audit only, every tool allowed
  EXPECT_TRUE(parse_mcp_tunnel(object).guard_enabled());

  json audit = minimal_object();
  audit["spec"]["guard"] = json::parse(
      R"({"audit": {"level": "full", "redactKeys": ["ssn", "*card*"]}, "image": "mirror/g:1",
          "resources": {"limits": {"memory": "512Mi"}}})");
  const McpTunnel audited = parse_mcp_tunnel(audit);
  EXPECT_TRUE(audited.guard_enabled());
  EXPECT_FALSE(audited.has_policy());
  EXPECT_TRUE(audited.guard.audit_set);
  EXPECT_EQ(audited.guard.audit_level, AuditLevel::kFull);
  EXPECT_EQ(audited.guard.redact_keys, (std::vector<std::string>{"ssn", "*card*"}));
  EXPECT_EQ(audited.guard.image, "mirror/g:1");
  EXPECT_EQ(audited.guard.resources["limits"]["memory"], "512Mi");

  object["spec"]["guard"] = {{"enabled", false}};
  const McpTunnel off = parse_mcp_tunnel(object);
  EXPECT_FALSE(off.guard_enabled());
  EXPECT_TRUE(off.has_policy());  // reported as not enforced (GuardEnforced=False/GuardDisabled)

  json on = minimal_object();
  on["spec"]["guard"] = {{"enabled", true}};
  EXPECT_TRUE(parse_mcp_tunnel(on).guard_enabled());
}

TEST(ParseMcpTunnelGuardTest, NamesTheFieldOfABadPolicyOrGuard) {
  struct Case {
    const char* what;
    std::function<void(json&)> mutate;
    const char* field;
  };
  auto policy = [](json p) { return [p](json& o) { o["spec"]["routes"][1]["policy"] = p; }; };
  const std::vector<Case> cases = {
      {"an empty deny glob", policy({{"tools", {{"deny", {"delete_*", ""}}}}}),
       "spec.routes[1].policy.tools.deny[1] must not be empty"},
      {"an empty allow glob", policy({{"tools", {{"allow", {""}}}}}),
       "spec.routes[1].policy.tools.allow[0]"},
      {"a glob with surrounding whitespace", policy({{"tools", {{"deny", {" delete_*"}}}}}),
       "spec.routes[1].policy.tools.deny[0] must not start or end with whitespace"},
      {"an unclosed [", policy({{"tools", {{"deny", {"admin_[a-z"}}}}}),
       "spec.routes[1].policy.tools.deny[0] 'admin_[a-z' has a [ that no ] closes"},
      {"a glob that is not a string", policy({{"tools", {{"allow", {7}}}}}),
       "spec.routes[1].policy.tools.allow"},
      {"a zero rate", policy({{"rateLimit", {{"requestsPerSecond", 0}}}}),
       "spec.routes[1].policy.rateLimit.requestsPerSecond"},
      {"a zero burst", policy({{"rateLimit", {{"requestsPerSecond", 3}, {"burst", 0}}}}),
       "spec.routes[1].policy.rateLimit.burst"},
      {"a policy that is not an object", policy("strict"), "spec.routes[1].policy"},
      {"an invalid audit level",
       [](json& o) {
         o["spec"]["guard"] = {{"audit", {{"level", "loud"}}}};
       },
       "spec.guard.audit.level must be metadata or full, not 'loud'"},
      {"an empty redact key",
       [](json& o) {
         o["spec"]["guard"] = {{"audit", {{"redactKeys", {"ssn", ""}}}}};
       },
       "spec.guard.audit.redactKeys[1]"},
      {"an empty image",
       [](json& o) {
         o["spec"]["guard"] = {{"image", ""}};
       },
       "spec.guard.image"},
      {"enabled that is not a boolean",
       [](json& o) {
         o["spec"]["guard"] = {{"enabled", "yes"}};
       },
       "spec.guard.enabled"},
      // The guard verifies https upstreams: with no CA to trust its pods could never start.
      {"an https URL route behind the guard, trusting no CA",
       [](json& o) {
         o["spec"]["routes"][1]["url"] = "https://10.0.0.5:8443";
         o["spec"]["routes"][0]["policy"] = json::object();
       },
       "spec.routes[1]: an https upstream behind perimeter-mcp-guard needs a CA"},
      {"an https Service route behind the guard, trusting no CA",
       [](json& o) {
         o["spec"]["routes"][0]["service"]["scheme"] = "https";
         o["spec"]["guard"] = {{"audit", {{"level", "full"}}}};
       },
       "spec.routes[0]: an https upstream behind perimeter-mcp-guard needs a CA"},
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

TEST(ParseMcpTunnelGuardTest, AcceptsHttpsRoutesBehindTheGuardWithACaToTrust) {
  for (const json& upstream :
       {json{{"caSecretRef", {{"name", "corp-ca"}}}}, json{{"includeSystemCAs", true}}}) {
    json object = minimal_object();
    object["spec"]["routes"][1]["url"] = "https://10.0.0.5:8443";
    object["spec"]["routes"][0]["policy"] = json::object();
    object["spec"]["upstream"] = upstream;
    EXPECT_TRUE(parse_mcp_tunnel(object).guard_enabled()) << upstream.dump();
  }
}

TEST(ParseMcpTunnelGuardTest, AcceptsTheGlobsFnmatchReads) {
  json object = minimal_object();
  object["spec"]["routes"][0]["policy"] = {
      {"tools", {{"allow", {"*", "get_?", "[]x]y", "[!a]*", "[^a]*", "files/read_*", "a]b"}}}}};
  EXPECT_EQ(parse_mcp_tunnel(object).routes[0].policy->allow.size(), 7u);
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
