#include "proxy/guard_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace perimeter::mcpguard {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr const char* kMinimal = R"(
routes:
  - name: tickets
    listen: 127.0.0.1:9101
    upstream: http://tickets.mcp.svc.cluster.local:8080
)";

std::string error_of(const std::string& yaml) {
  const auto result = parse_guard_config(yaml);
  EXPECT_FALSE(result.config) << yaml;
  return result.error;
}

TEST(GuardConfig, MinimalFileTakesTheDocumentedDefaults) {
  const auto result = parse_guard_config(kMinimal);
  ASSERT_TRUE(result.config) << result.error;
  const auto& config = *result.config;
  EXPECT_EQ(config.metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(config.audit.level, AuditLevel::kMetadata);
  EXPECT_EQ(config.audit.redact_keys,
            (std::vector<std::string>{"password", "*token*", "*secret*", "authorization"}));
  EXPECT_EQ(config.limits.max_request_body_bytes, 4194304u);
  EXPECT_EQ(config.limits.max_json_reply_bytes, 16777216u);
  EXPECT_EQ(config.limits.max_sse_event_bytes, 16777216u);
  EXPECT_EQ(config.limits.header_timeout, std::chrono::seconds(30));
  EXPECT_EQ(config.limits.upstream_connect_timeout, std::chrono::seconds(10));
  EXPECT_EQ(config.limits.upstream_reply_timeout, std::chrono::seconds(600));
  EXPECT_EQ(config.limits.stream_idle_timeout, std::chrono::seconds(0));
  EXPECT_EQ(config.limits.shutdown_grace, std::chrono::seconds(25));
  ASSERT_EQ(config.routes.size(), 1u);
  const auto& route = config.routes[0];
  EXPECT_EQ(route.name, "tickets");
  EXPECT_EQ(route.listen_host, "127.0.0.1");
  EXPECT_EQ(route.listen_port, "9101");
  EXPECT_EQ(route.upstream.host, "tickets.mcp.svc.cluster.local");
  EXPECT_EQ(route.upstream.port, "8080");
  EXPECT_EQ(route.upstream.authority, "tickets.mcp.svc.cluster.local:8080");
  EXPECT_EQ(route.host_header, HostHeaderMode::kUpstream);
  ASSERT_EQ(route.allowed_cidrs.size(), 3u);
  EXPECT_TRUE(route.allowed_cidrs[0].contains("10.1.2.3"));
  EXPECT_EQ(route.tools.allow, std::vector<std::string>{"*"});
  EXPECT_TRUE(route.tools.deny.empty());
  EXPECT_FALSE(route.rate_limit);
}

TEST(GuardConfig, FullFileIsRead) {
  const auto result = parse_guard_config(R"(
metrics_listen: ""
audit:
  level: full
  redact_keys: ["*key*"]
limits:
  max_request_body_bytes: 1024
  stream_idle_timeout_seconds: 60
routes:
  - name: a
    listen: "[::1]:0"
    upstream: http://[fd00::1]:80/
    host_header: preserve
    allowed_cidrs: ["fd00::/8", "127.0.0.1"]
    tools:
      allow: ["read_*"]
      deny: ["read_secret"]
    rate_limit:
      requests_per_second: 2.5
      burst: 5
)");
  ASSERT_TRUE(result.config) << result.error;
  const auto& config = *result.config;
  EXPECT_EQ(config.metrics_listen, "");
  EXPECT_EQ(config.audit.level, AuditLevel::kFull);
  EXPECT_EQ(config.limits.max_request_body_bytes, 1024u);
  EXPECT_EQ(config.limits.stream_idle_timeout, std::chrono::seconds(60));
  const auto& route = config.routes[0];
  EXPECT_EQ(route.listen_host, "::1");
  EXPECT_EQ(route.upstream.host, "fd00::1");
  EXPECT_EQ(route.upstream.authority, "[fd00::1]:80");
  EXPECT_EQ(route.host_header, HostHeaderMode::kPreserve);
  EXPECT_EQ(route.tools.deny, std::vector<std::string>{"read_secret"});
  ASSERT_TRUE(route.rate_limit);
  EXPECT_DOUBLE_EQ(route.rate_limit->requests_per_second, 2.5);
  EXPECT_DOUBLE_EQ(route.rate_limit->burst, 5);
}

TEST(GuardConfig, ErrorsNameTheField) {
  EXPECT_THAT(error_of(std::string(kMinimal) + "    tool:\n      deny: [x]\n"),
              StartsWith("routes[0].tool: unknown field"));
  EXPECT_THAT(error_of("limits:\n  max_body: 1\n" + std::string(kMinimal)),
              StartsWith("limits.max_body: unknown field"));
  EXPECT_THAT(error_of("auditing: {}\n" + std::string(kMinimal)),
              StartsWith("auditing: unknown field"));
  EXPECT_THAT(error_of(std::string(kMinimal) + R"(  - name: second
    listen: 127.0.0.1:0
    upstream: http://b:1
    tools:
      deny: [""]
)"),
              StartsWith("routes[1].tools.deny[0]: "));
  EXPECT_THAT(error_of(std::string(kMinimal) + "    allowed_cidrs: [\"10.0.0.1/8\"]\n"),
              StartsWith("routes[0].allowed_cidrs[0]: "));
  EXPECT_THAT(error_of("limits:\n  header_timeout_seconds: soon\n" + std::string(kMinimal)),
              StartsWith("limits.header_timeout_seconds: must be an integer"));
  EXPECT_THAT(error_of("audit:\n  level: everything\n" + std::string(kMinimal)),
              StartsWith("audit.level: "));
  EXPECT_THAT(error_of(std::string(kMinimal) + "    rate_limit:\n      burst: 0\n"),
              StartsWith("routes[0].rate_limit.burst: "));
}

TEST(GuardConfig, RouteFieldsAreChecked) {
  EXPECT_THAT(error_of("routes: []\n"), StartsWith("routes: "));
  EXPECT_THAT(error_of("routes:\n  - listen: 127.0.0.1:1\n    upstream: http://a:1\n"),
              StartsWith("routes[0].name: required"));
  EXPECT_THAT(error_of("routes:\n  - name: Tickets\n    listen: 127.0.0.1:1\n    upstream: "
                       "http://a:1\n"),
              StartsWith("routes[0].name: must be a DNS label"));
  EXPECT_THAT(error_of("routes:\n  - name: a\n    listen: nowhere\n    upstream: http://a:1\n"),
              StartsWith("routes[0].listen: "));
  EXPECT_THAT(error_of("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: http://a\n"),
              StartsWith("routes[0].upstream: "));
  EXPECT_THAT(
      error_of("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: http://a:1/mcp\n"),
      StartsWith("routes[0].upstream: "));
  EXPECT_THAT(
      error_of("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: ftp://a:443\n"),
      StartsWith("routes[0].upstream: must be http(s)://host:port"));
  EXPECT_THAT(error_of("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: http://a:80\n"
                       "    upstream_ca_file: /etc/ca.crt\n"),
              StartsWith("routes[0].upstream_ca_file: only for an https upstream"));
  EXPECT_THAT(error_of(std::string(kMinimal) +
                       "  - name: tickets\n    listen: 127.0.0.1:2\n    upstream: http://a:1\n"),
              StartsWith("routes[1].name: "));
  EXPECT_THAT(error_of("routes: [\n"), StartsWith("(document): not YAML"));
}

TEST(GuardConfig, AnHttpsUpstreamKeepsItsHostPortAndCaFile) {
  const auto parsed = parse_guard_config(
      "routes:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: https://tickets.corp:8443/\n"
      "    upstream_ca_file: /etc/perimeter-mcp-guard/upstream-ca/ca.crt\n");
  ASSERT_TRUE(parsed.config) << parsed.error;
  const auto& route = parsed.config->routes.at(0);
  EXPECT_TRUE(route.upstream.tls);
  EXPECT_EQ(route.upstream.host, "tickets.corp");
  EXPECT_EQ(route.upstream.port, "8443");
  EXPECT_EQ(route.upstream.authority, "tickets.corp:8443");
  EXPECT_EQ(route.upstream_ca_file, "/etc/perimeter-mcp-guard/upstream-ca/ca.crt");
  EXPECT_FALSE(route.upstream_system_cas) << "a named CA file alone is trusted";
  const auto plain = parse_guard_config(kMinimal);
  ASSERT_TRUE(plain.config);
  EXPECT_FALSE(plain.config->routes.at(0).upstream.tls);
}

TEST(GuardConfig, AnHttpsUpstreamTrustsTheSystemCasUnlessToldOtherwise) {
  const std::string route =
      "routes:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: https://a:443\n";
  const auto defaulted = parse_guard_config(route);
  ASSERT_TRUE(defaulted.config) << defaulted.error;
  EXPECT_TRUE(defaulted.config->routes.at(0).upstream_system_cas);
  const auto both =
      parse_guard_config(route + "    upstream_ca_file: /ca.crt\n    upstream_system_cas: true\n");
  ASSERT_TRUE(both.config) << both.error;
  EXPECT_TRUE(both.config->routes.at(0).upstream_system_cas);
  EXPECT_THAT(error_of(route + "    upstream_system_cas: false\n"),
              StartsWith("routes[0].upstream_system_cas: an https upstream must trust some CA"));
  EXPECT_THAT(error_of(route + "    upstream_system_cas: maybe\n"),
              StartsWith("routes[0].upstream_system_cas: must be true or false"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "    upstream_system_cas: true\n"),
              StartsWith("routes[0].upstream_system_cas: only for an https upstream"));
}

TEST(GuardConfig, ReloadMayNotChangeListenersOrRoutes) {
  const auto base = parse_guard_config(kMinimal);
  ASSERT_TRUE(base.config);
  auto policy_change = parse_guard_config(std::string(kMinimal) + "    tools:\n      deny: [x]\n");
  ASSERT_TRUE(policy_change.config);
  EXPECT_FALSE(reload_refusal(*base.config, *policy_change.config));

  auto moved = parse_guard_config(R"(
routes:
  - name: tickets
    listen: 127.0.0.1:9102
    upstream: http://tickets.mcp.svc.cluster.local:8080
)");
  ASSERT_TRUE(moved.config);
  EXPECT_THAT(reload_refusal(*base.config, *moved.config).value_or(""),
              HasSubstr("routes[0].listen changed"));

  auto added = parse_guard_config(
      std::string(kMinimal) + "  - name: b\n    listen: 127.0.0.1:2\n    upstream: http://a:1\n");
  ASSERT_TRUE(added.config);
  EXPECT_TRUE(reload_refusal(*base.config, *added.config));
}

}  // namespace
}  // namespace perimeter::mcpguard
