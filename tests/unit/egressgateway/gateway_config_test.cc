#include "gateway/gateway_config.h"

#include <gtest/gtest.h>

#include <string>

namespace perimeter::egressgateway {
namespace {

constexpr const char* kHead =
    "listen: \"0.0.0.0:3128\"\n"
    "metrics_listen: \"0.0.0.0:9090\"\n"
    "credentials_key_file: /var/run/perimeter-egress/key/key\n";

std::string with_environments(const std::string& environments) {
  return std::string(kHead) + environments;
}

TEST(GatewayConfig, ParsesTheContractExample) {
  const auto parsed = parse_gateway_config(
      std::string(kHead) +
          "connect_timeout_ms: 2000\nclient_hello_timeout_ms: 3000\nidle_timeout_ms: 4000\n"
          "max_connections: 10\n"
          "environments:\n"
          "  - name: team-a/agents\n"
          "    allow:\n"
          "      - host: API.Anthropic.com.\n"
          "        ports: [443, 8443]\n"
          "      - host: \"*.pypi.org\"\n",
      false);
  ASSERT_TRUE(parsed.config) << parsed.error;
  const auto& config = *parsed.config;
  EXPECT_EQ(config.listen, "0.0.0.0:3128");
  EXPECT_EQ(config.metrics_listen, "0.0.0.0:9090");
  EXPECT_EQ(config.credentials_key_file, "/var/run/perimeter-egress/key/key");
  EXPECT_EQ(config.connect_timeout.count(), 2000);
  EXPECT_EQ(config.client_hello_timeout.count(), 3000);
  EXPECT_EQ(config.idle_timeout.count(), 4000);
  EXPECT_EQ(config.max_connections, 10);
  EXPECT_FALSE(config.testing_allow_loopback_upstreams);
  ASSERT_EQ(config.environments.size(), 1u);
  const auto* environment = config.find_environment("team-a/agents");
  ASSERT_NE(environment, nullptr);
  ASSERT_EQ(environment->allow.size(), 2u);
  EXPECT_EQ(environment->allow[0].host, "api.anthropic.com");
  EXPECT_EQ(environment->allow[0].ports, (std::vector<std::uint16_t>{443, 8443}));
  EXPECT_TRUE(environment->allow[1].wildcard);
  EXPECT_EQ(environment->allow[1].suffix, ".pypi.org");
  EXPECT_EQ(environment->allow[1].ports, (std::vector<std::uint16_t>{443}));
  EXPECT_EQ(config.find_environment("team-b/agents"), nullptr);
}

TEST(GatewayConfig, DefaultsForTheOptionalFields) {
  const auto parsed = parse_gateway_config(with_environments("environments: []\n"), false);
  ASSERT_TRUE(parsed.config) << parsed.error;
  EXPECT_EQ(parsed.config->connect_timeout.count(), 10000);
  EXPECT_EQ(parsed.config->client_hello_timeout.count(), 10000);
  EXPECT_EQ(parsed.config->idle_timeout.count(), 300000);
  EXPECT_EQ(parsed.config->max_connections, 4096);
  EXPECT_EQ(parsed.config->metrics_listen, "0.0.0.0:9090");
}

struct Rejection {
  std::string yaml;
  std::string message;  // a part of the error
};

class GatewayConfigRejection : public ::testing::TestWithParam<Rejection> {};

TEST_P(GatewayConfigRejection, SaysWhatIsWrong) {
  const auto parsed = parse_gateway_config(GetParam().yaml, false);
  ASSERT_FALSE(parsed.config);
  EXPECT_NE(parsed.error.find(GetParam().message), std::string::npos) << parsed.error;
}

std::string one_rule(const std::string& rule) {
  return with_environments("environments:\n  - name: a/b\n    allow:\n      - " + rule + "\n");
}

INSTANTIATE_TEST_SUITE_P(
    Table, GatewayConfigRejection,
    ::testing::Values(
        Rejection{"[1, 2]", "must be a YAML map"}, Rejection{"listen: [", "not YAML"},
        Rejection{"credentials_key_file: k\nenvironments: []\n", "listen is required"},
        Rejection{"listen: 3128\ncredentials_key_file: k\nenvironments: []\n",
                  "listen must be host:port"},
        Rejection{"listen: a:b\ncredentials_key_file: k\nenvironments: []\n",
                  "listen must be host:port"},
        Rejection{"listen: 0.0.0.0:1\nenvironments: []\n", "credentials_key_file is required"},
        Rejection{"listen: 0.0.0.0:1\ncredentials_key_file: k\n", "environments is required"},
        Rejection{with_environments("environments: []\nextra: 1\n"), "unknown field \"extra\""},
        Rejection{with_environments("environments: []\nconnect_timeout_ms: 0\n"),
                  "connect_timeout_ms must be a whole number"},
        Rejection{with_environments("environments: []\nidle_timeout_ms: soon\n"),
                  "idle_timeout_ms must be a whole number"},
        Rejection{with_environments("environments: []\nmax_connections: -1\n"),
                  "max_connections must be a whole number"},
        Rejection{with_environments("environments: {}\n"), "environments must be a list"},
        Rejection{with_environments("environments:\n  - name: agents\n    allow: []\n"),
                  "must be \"<namespace>/<AgentEnvironment name>\""},
        Rejection{with_environments("environments:\n  - name: a/b/c\n    allow: []\n"),
                  "must be \"<namespace>/<AgentEnvironment name>\""},
        Rejection{with_environments("environments:\n  - name: a/b\n"), "allow is required"},
        Rejection{with_environments("environments:\n  - name: a/b\n    allow: []\n"
                                    "  - name: a/b\n    allow: []\n"),
                  "listed twice"},
        Rejection{with_environments("environments:\n  - name: a/b\n    allow: []\n    x: 1\n"),
                  "environments[0]: unknown field \"x\""},
        Rejection{one_rule("{ports: [443]}"), "environments[0].allow[0]: host is required"},
        Rejection{one_rule("{host: 10.0.0.1}"), "is an IP address"},
        Rejection{one_rule("{host: \"[::1]\"}"), "is an IP address"},
        Rejection{one_rule("{host: \"*.com\"}"), "is too wide"},
        Rejection{one_rule("{host: \"*\"}"), "is not a DNS name"},
        Rejection{one_rule("{host: \"a.*.example.com\"}"), "is not a DNS name"},
        Rejection{one_rule("{host: \"exa mple.com\"}"), "is not a DNS name"},
        Rejection{one_rule("{host: \"-a.example.com\"}"), "is not a DNS name"},
        Rejection{one_rule("{host: \"2130706433\"}"), "is not a DNS name"},
        Rejection{one_rule("{host: a.com, ports: []}"), "ports must be a non-empty list"},
        Rejection{one_rule("{host: a.com, ports: [0]}"), "is not a number from 1 to 65535"},
        Rejection{one_rule("{host: a.com, ports: [65536]}"), "is not a number from 1 to 65535"},
        Rejection{one_rule("{host: a.com, ports: [https]}"), "is not a number from 1 to 65535"},
        Rejection{one_rule("{host: a.com, via: x}"), "unknown field \"via\""},
        Rejection{with_environments("environments: []\ntesting_allow_loopback_upstreams: true\n"),
                  "refused unless PERIMETER_EGRESS_TESTING=1"}));

TEST(GatewayConfig, TheTestingFieldOnlyWhenTestsAreAllowed) {
  const auto yaml = with_environments("environments: []\ntesting_allow_loopback_upstreams: true\n");
  EXPECT_FALSE(parse_gateway_config(yaml, false).config);
  const auto parsed = parse_gateway_config(yaml, true);
  ASSERT_TRUE(parsed.config) << parsed.error;
  EXPECT_TRUE(parsed.config->testing_allow_loopback_upstreams);
}

struct Match {
  std::string rule;
  std::string host;  // as a client writes it
  bool matches;
};

class HostMatching : public ::testing::TestWithParam<Match> {};

TEST_P(HostMatching, Table) {
  const auto parsed = parse_gateway_config(one_rule("{host: \"" + GetParam().rule + "\"}"), false);
  ASSERT_TRUE(parsed.config) << parsed.error;
  const auto& rule = parsed.config->environments[0].allow[0];
  EXPECT_EQ(host_matches(rule, normalize_host(GetParam().host)), GetParam().matches)
      << GetParam().rule << " vs " << GetParam().host;
}

INSTANTIATE_TEST_SUITE_P(
    Table, HostMatching,
    ::testing::Values(
        Match{"api.anthropic.com", "api.anthropic.com", true},
        Match{"api.anthropic.com", "API.Anthropic.COM", true},
        Match{"api.anthropic.com", "api.anthropic.com.", true},
        Match{"api.anthropic.com.", "api.anthropic.com", true},
        Match{"api.anthropic.com", "anthropic.com", false},
        Match{"api.anthropic.com", "x.api.anthropic.com", false},
        Match{"api.anthropic.com", "api.anthropic.com.evil.net", false},
        Match{"api.anthropic.com", "evilapi.anthropic.com", false},
        Match{"*.pypi.org", "files.pypi.org", true}, Match{"*.pypi.org", "a.b.pypi.org", true},
        Match{"*.pypi.org", "FILES.PYPI.ORG.", true}, Match{"*.pypi.org", "pypi.org", false},
        Match{"*.pypi.org", ".pypi.org", false}, Match{"*.pypi.org", "evilpypi.org", false},
        Match{"*.pypi.org", "pypi.org.evil.net", false},
        Match{"*.Example.COM", "a.example.com", true}));

TEST(HostMatching, PortsArePartOfTheRule) {
  const auto parsed =
      parse_gateway_config(with_environments("environments:\n  - name: a/b\n    allow:\n"
                                             "      - {host: a.example.com, ports: [8443]}\n"
                                             "      - {host: \"*.example.com\"}\n"),
                           false);
  ASSERT_TRUE(parsed.config) << parsed.error;
  const auto& environment = parsed.config->environments[0];
  EXPECT_TRUE(environment_allows(environment, "a.example.com", 8443));
  EXPECT_TRUE(environment_allows(environment, "a.example.com", 443));  // by the wildcard
  EXPECT_FALSE(environment_allows(environment, "b.example.com", 8443));
  EXPECT_FALSE(environment_allows(environment, "example.com", 443));
  EXPECT_FALSE(environment_allows(environment, "a.example.com", 80));
}

TEST(HostNames, CONNECTTargetsThatAreNotNames) {
  EXPECT_TRUE(valid_dns_name("api.anthropic.com"));
  EXPECT_TRUE(valid_dns_name("allowed.test"));
  EXPECT_FALSE(valid_dns_name("127.0.0.1"));
  EXPECT_FALSE(valid_dns_name("0x7f.1"));
  EXPECT_FALSE(valid_dns_name("a..b"));
  EXPECT_FALSE(valid_dns_name(""));
  EXPECT_FALSE(valid_dns_name(std::string(64, 'a') + ".com"));
  EXPECT_FALSE(valid_dns_name("a.com\x01"));
}

}  // namespace
}  // namespace perimeter::egressgateway
