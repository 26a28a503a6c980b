#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/proxy_env.h"
#include "runner/audit_log.h"

namespace perimeter::runner {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The runner pod's env contract (docs/design.md), resolved as the official worker's handleItem()
// resolves it. Holds the credential: never log this struct.
struct RunnerConfig {
  std::string work_id;
  std::string environment_id;
  std::string session_id;
  std::string base_url = "https://api.anthropic.com";
  // The sessions token from the work secret, or the environment key when the secret has none.
  std::string credential;
  // "work_secret" or "environment_key": safe to log.
  std::string credential_source;
  // Set when a secret was given but yielded no token and the key was used instead.
  bool secret_unusable = false;
  std::string workdir;
  std::chrono::milliseconds max_idle{60'000};
  // PERIMETER_MEMORY_SYNC_INTERVAL_MS: the SDK's memorySyncIntervalMs (15 s, at least 5 s);
  // nullopt (`off`) turns memory stores off, as `memorySyncIntervalMs: null`.
  std::optional<std::chrono::milliseconds> memory_sync_interval{15'000};
  AuditLevel audit_level = AuditLevel::kMetadata;
  // The API calls' proxies (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY). The variables stay in
  // the environment: the agent's tools (curl, git) go through the same proxy.
  ProxyEnvironment proxies;
  // PERIMETER_API_CA_FILE: PEM certificates trusted for the API besides the system's CA store
  // (the AgentEnvironment's apiCAConfigMapRef, mounted by the operator); empty for none.
  std::string api_ca_file;
};

using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

// Reads ANTHROPIC_WORK_ID, ANTHROPIC_ENVIRONMENT_ID, ANTHROPIC_SESSION_ID, ANTHROPIC_WORK_SECRET,
// ANTHROPIC_ENVIRONMENT_KEY, ANTHROPIC_BASE_URL, and PERIMETER_WORKDIR / PERIMETER_MAX_IDLE_MS /
// PERIMETER_AUDIT_LEVEL / PERIMETER_API_CA_FILE (which must be readable), and the proxy variables
// (load_proxy_environment). An empty value reads as absent. Throws ConfigError naming the first
// missing or bad value, and when there is neither a sessions token nor an environment key. Messages
// never hold a secret.
RunnerConfig load_runner_config(const EnvLookup& env, const std::string& default_workdir);

// The process environment.
std::optional<std::string> process_env(const char* name);

}  // namespace perimeter::runner
