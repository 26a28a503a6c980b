#include "runner/runner_config.h"

#include <cstdlib>
#include <fstream>

#include "agentapi/work_secret.h"

namespace perimeter::runner {

std::optional<std::string> process_env(const char* name) {
  // Read by main() before any thread starts; nothing in the process sets variables.
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

RunnerConfig load_runner_config(const EnvLookup& env, const std::string& default_workdir) {
  auto read = [&env](const char* name) -> std::string {
    std::optional<std::string> value = env(name);
    return value.value_or("");
  };
  RunnerConfig config;
  config.work_id = read("ANTHROPIC_WORK_ID");
  config.environment_id = read("ANTHROPIC_ENVIRONMENT_ID");
  config.session_id = read("ANTHROPIC_SESSION_ID");
  if (config.work_id.empty()) throw ConfigError("ANTHROPIC_WORK_ID is required");
  if (config.environment_id.empty()) throw ConfigError("ANTHROPIC_ENVIRONMENT_ID is required");
  if (config.session_id.empty()) throw ConfigError("ANTHROPIC_SESSION_ID is required");

  const std::string secret = read("ANTHROPIC_WORK_SECRET");
  const std::string key = read("ANTHROPIC_ENVIRONMENT_KEY");
  if (secret.empty() && key.empty()) {
    throw ConfigError(
        "neither ANTHROPIC_WORK_SECRET nor ANTHROPIC_ENVIRONMENT_KEY is set: refusing to run "
        "unauthenticated");
  }
  std::optional<agentapi::WorkSecret> decoded;
  if (!secret.empty()) {
    try {
      decoded = agentapi::decode_work_secret(secret);
      if (decoded->sessions_token.empty()) decoded.reset();
    } catch (const agentapi::SecretError&) {
      decoded.reset();
    }
  }
  if (decoded) {
    config.credential = decoded->sessions_token;
    config.credential_source = "work_secret";
  } else if (!key.empty()) {
    config.credential = key;
    config.credential_source = "environment_key";
    config.secret_unusable = !secret.empty();
  } else {
    throw ConfigError(
        "ANTHROPIC_WORK_SECRET yields no sessions token and ANTHROPIC_ENVIRONMENT_KEY is not set: "
        "refusing to run unauthenticated");
  }

  const std::string base_url = read("ANTHROPIC_BASE_URL");
  if (!base_url.empty()) config.base_url = base_url;
  while (config.base_url.size() > 1 && config.base_url.back() == '/') config.base_url.pop_back();

  const std::string workdir = read("PERIMETER_WORKDIR");
  config.workdir = workdir.empty() ? default_workdir : workdir;

  const std::string max_idle = read("PERIMETER_MAX_IDLE_MS");
  if (!max_idle.empty()) {
    char* end = nullptr;
    const long long value = std::strtoll(max_idle.c_str(), &end, 10);
    if (end == max_idle.c_str() || *end != '\0') {
      throw ConfigError("PERIMETER_MAX_IDLE_MS must be an integer number of milliseconds, got '" +
                        max_idle + "'");
    }
    config.max_idle = std::chrono::milliseconds(value);
  }

  const std::string memory_interval = read("PERIMETER_MEMORY_SYNC_INTERVAL_MS");
  if (memory_interval == "off") {
    config.memory_sync_interval.reset();
  } else if (!memory_interval.empty()) {
    char* end = nullptr;
    const long long value = std::strtoll(memory_interval.c_str(), &end, 10);
    if (end == memory_interval.c_str() || *end != '\0') {
      throw ConfigError(
          "PERIMETER_MEMORY_SYNC_INTERVAL_MS must be an integer number of milliseconds or 'off', "
          "got '" +
          memory_interval + "'");
    }
    // The SDK's checkMemorySyncInterval.
    if (value < 5000) {
      throw ConfigError("PERIMETER_MEMORY_SYNC_INTERVAL_MS must be at least 5000ms (got " +
                        memory_interval + "); to run without memory sync, set it to 'off'");
    }
    config.memory_sync_interval = std::chrono::milliseconds(value);
  }

  // A level nobody meant must not silently log less (or more) than asked: refuse it.
  const std::string audit_level = read("PERIMETER_AUDIT_LEVEL");
  if (!audit_level.empty()) {
    const auto level = parse_audit_level(audit_level);
    if (!level) {
      throw ConfigError("PERIMETER_AUDIT_LEVEL must be 'metadata' or 'full', got '" + audit_level +
                        "'");
    }
    config.audit_level = *level;
  }

  // A CA file the pod was promised but cannot read stops the start, not the first call.
  config.api_ca_file = read("PERIMETER_API_CA_FILE");
  if (!config.api_ca_file.empty() && !std::ifstream(config.api_ca_file).good()) {
    throw ConfigError("PERIMETER_API_CA_FILE: cannot read " + config.api_ca_file);
  }

  // A proxy URL that does not parse stops the start, not the first call.
  try {
    config.proxies = load_proxy_environment(env);
  } catch (const ProxyConfigError& error) {
    throw ConfigError(error.what());
  }
  return config;
}

}  // namespace perimeter::runner
