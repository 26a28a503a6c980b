#include "runner/runner_config.h"

#include <gtest/gtest.h>

#include <map>

namespace perimeter::runner {
namespace {

// base64url of {"sessions_token":"tok_abc","api_base_url":"http://127.0.0.1:1"}
const char* kSecretWithToken =
    "eyJzZXNzaW9uc190b2tlbiI6InRva19hYmMiLCJhcGlfYmFzZV91cmwiOiJodHRwOi8vMTI3LjAuMC4xOjEifQ";

EnvLookup env_of(std::map<std::string, std::string> values) {
  return [values](const char* name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

std::map<std::string, std::string> contract() {
  return {{"ANTHROPIC_WORK_ID", "work_1"},
          {"ANTHROPIC_ENVIRONMENT_ID", "env_1"},
          {"ANTHROPIC_SESSION_ID", "sess_1"},
          {"ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"}};
}

TEST(RunnerConfig, TakesTheSessionsTokenFromTheWorkSecret) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  env["ANTHROPIC_ENVIRONMENT_KEY"] = "key";
  const RunnerConfig config = load_runner_config(env_of(env), "/workspace");
  EXPECT_EQ(config.credential, "tok_abc");
  EXPECT_EQ(config.credential_source, "work_secret");
  EXPECT_EQ(config.base_url, "http://127.0.0.1:9");
  EXPECT_EQ(config.workdir, "/workspace");
  EXPECT_EQ(config.max_idle, std::chrono::milliseconds(60'000));
}

TEST(RunnerConfig, FallsBackToTheEnvironmentKeyOnlyWhenTheSecretHasNoToken) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = "not base64 json";
  env["ANTHROPIC_ENVIRONMENT_KEY"] = "key";
  const RunnerConfig config = load_runner_config(env_of(env), "/workspace");
  EXPECT_EQ(config.credential, "key");
  EXPECT_EQ(config.credential_source, "environment_key");
  EXPECT_TRUE(config.secret_unusable);
}

TEST(RunnerConfig, RefusesToRunUnauthenticated) {
  EXPECT_THROW(load_runner_config(env_of(contract()), "/w"), ConfigError);
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = "e30";  // {}: no token, and no key to fall back to
  try {
    load_runner_config(env_of(env), "/w");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("refusing to run unauthenticated"), std::string::npos);
    EXPECT_EQ(std::string(error.what()).find("e30"), std::string::npos) << "never echo the secret";
  }
}

TEST(RunnerConfig, NamesTheFirstMissingValue) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  env["ANTHROPIC_SESSION_ID"] = "";
  try {
    load_runner_config(env_of(env), "/w");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_STREQ(error.what(), "ANTHROPIC_SESSION_ID is required");
  }
}

TEST(RunnerConfig, ReadsTheWorkdirAndIdleOverrides) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  env["PERIMETER_WORKDIR"] = "/tmp/ws";
  env["PERIMETER_MAX_IDLE_MS"] = "1500";
  const RunnerConfig config = load_runner_config(env_of(env), "/workspace");
  EXPECT_EQ(config.workdir, "/tmp/ws");
  EXPECT_EQ(config.max_idle, std::chrono::milliseconds(1500));
  env["PERIMETER_MAX_IDLE_MS"] = "soon";
  EXPECT_THROW(load_runner_config(env_of(env), "/workspace"), ConfigError);
}

TEST(RunnerConfig, AnApiCaFileMustBeReadable) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  EXPECT_EQ(load_runner_config(env_of(env), "/w").api_ca_file, "");
  env["PERIMETER_API_CA_FILE"] = "/proc/self/status";  // any file the test can read
  EXPECT_EQ(load_runner_config(env_of(env), "/w").api_ca_file, "/proc/self/status");
  env["PERIMETER_API_CA_FILE"] = "/nonexistent/perimeter/ca.crt";
  try {
    load_runner_config(env_of(env), "/w");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("PERIMETER_API_CA_FILE"), std::string::npos);
  }
}

TEST(RunnerConfig, TheAuditLevelIsMetadataUnlessFullIsAskedAndAnythingElseRefusesToStart) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  EXPECT_EQ(load_runner_config(env_of(env), "/w").audit_level, AuditLevel::kMetadata);
  env["PERIMETER_AUDIT_LEVEL"] = "";
  EXPECT_EQ(load_runner_config(env_of(env), "/w").audit_level, AuditLevel::kMetadata);
  env["PERIMETER_AUDIT_LEVEL"] = "metadata";
  EXPECT_EQ(load_runner_config(env_of(env), "/w").audit_level, AuditLevel::kMetadata);
  env["PERIMETER_AUDIT_LEVEL"] = "full";
  EXPECT_EQ(load_runner_config(env_of(env), "/w").audit_level, AuditLevel::kFull);
  env["PERIMETER_AUDIT_LEVEL"] = "verbose";
  try {
    load_runner_config(env_of(env), "/w");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_STREQ(error.what(), "PERIMETER_AUDIT_LEVEL must be 'metadata' or 'full', got 'verbose'");
  }
}

TEST(RunnerConfig, ReadsTheProxyVariablesOnce) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  env["HTTPS_PROXY"] =
      "http://team-a~agents~sesn_01ABC:3f9a@perimeter-egress.perimeter-system.svc:3128";
  env["NO_PROXY"] = "localhost,127.0.0.1,::1,.svc,.cluster.local,10.20.0.0/16";
  const RunnerConfig config = load_runner_config(env_of(env), "/w");
  const ProxyUrl* proxy = config.proxies.proxy_for(true, "api.anthropic.com", "443");
  ASSERT_NE(proxy, nullptr);
  EXPECT_EQ(proxy->authority(), "perimeter-egress.perimeter-system.svc:3128");
  EXPECT_EQ(config.proxies.proxy_for(true, "sim.team-a.svc", "443"), nullptr);
  EXPECT_EQ(config.proxies.proxy_for(false, "api.anthropic.com", "80"), nullptr);
}

TEST(RunnerConfig, AProxyUrlThatDoesNotParseRefusesToStart) {
  auto env = contract();
  env["ANTHROPIC_WORK_SECRET"] = kSecretWithToken;
  env["HTTPS_PROXY"] = "http://team-a~agents~sesn_01ABC:3f9a@perimeter-egress:31x8";
  try {
    load_runner_config(env_of(env), "/w");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_STREQ(error.what(),
                 "HTTPS_PROXY: proxy URL 'http://<redacted>@perimeter-egress:31x8' has a "
                 "malformed host or port");
  }
}

}  // namespace
}  // namespace perimeter::runner
