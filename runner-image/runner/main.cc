// perimeter-runner: serves the one claimed work item its pod was started for (docs/runner.md).
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>

#include "agentapi/agent_api_client.h"
#include "agentapi/beast_transport.h"
#include "core/log.h"
#include "core/random.h"
#include "core/shutdown_signal.h"
#include "runner/audit_log.h"
#include "runner/item_flow.h"
#include "runner/process_hardening.h"
#include "runner/runner_config.h"
#include "runner/warm_assignment.h"
#include "tools/agent_toolset.h"

namespace {

perimeter::LogLevel log_level() {
  perimeter::LogLevel level = perimeter::LogLevel::kInfo;
  if (auto text = perimeter::runner::process_env("PERIMETER_LOG_LEVEL")) {
    perimeter::parse_log_level(*text, &level);
  }
  return level;
}

}  // namespace

int main() {
  using namespace perimeter;
  // The first act: the agent's processes share our uid, and until this they may read our
  // environment (the work secret) and memory through /proc, ptrace or process_vm_readv.
  std::optional<std::string> hardening_error;
  try {
    runner::make_non_dumpable();
  } catch (const std::system_error& error) {
    hardening_error = error.what();
  }
  // Before any thread starts, so every thread inherits the blocked SIGTERM/SIGINT.
  ShutdownSignal shutdown;
  Logger logger("runner", StderrSink::instance(), log_level());
  if (hardening_error) {
    logger.error("cannot start: the runner cannot be made non-dumpable",
                 {{"error", *hardening_error}});
    return runner::kExitInternal;
  }

  // Every form of the credential the audit lines must never hold, read before the scrub.
  std::vector<std::string> secrets;
  std::map<std::string, std::string, std::less<>> credentials;
  for (const std::string& name : runner::credential_variables()) {
    if (auto value = runner::process_env(name.c_str())) {
      secrets.push_back(*value);
      credentials[name] = *value;
    }
  }
  // The environment as it was before the scrub: the configuration is resolved after it, once a
  // warm runner holds its assignment.
  runner::EnvLookup env = [credentials = std::move(credentials)](const char* name) {
    auto it = credentials.find(std::string_view(name));
    if (it != credentials.end()) return std::optional<std::string>(it->second);
    return runner::process_env(name);
  };
  std::optional<runner::WarmConfig> warm;
  std::optional<std::string> warm_error;
  try {
    warm = runner::load_warm_config(runner::process_env);
  } catch (const runner::ConfigError& error) {
    warm_error = error.what();
  }
  // Read once, then gone from the environment and from the block /proc/1/environ shows.
  runner::scrub_environment(runner::credential_variables());
  if (warm_error) {
    logger.error("cannot start", {{"error", *warm_error}});
    return runner::kExitConfig;
  }

  runner::RunnerMetrics metrics;
  runner::StopSource stop;
  // SIGTERM (pod deletion) and SIGINT end the item gracefully: the same teardown as a normal end.
  // Started before a warm runner's wait, which a deleted warm pod must cut short.
  runner::StopSource signal_watch_done;
  std::thread signal_watch([&] {
    while (!signal_watch_done.requested()) {
      const int signal = shutdown.wait_for(200);
      if (signal != 0) {
        logger.info("shutdown signal received; stopping gracefully", {{"signal", signal}});
        stop.request();
        return;
      }
    }
  });
  struct JoinOnExit {
    runner::StopSource& done;
    std::thread& thread;
    ~JoinOnExit() {
      done.request();
      thread.join();
    }
  } join_signal_watch{signal_watch_done, signal_watch};

  if (warm) {
    secrets.push_back(warm->token);
    logger.info("warm: waiting for an assignment",
                {{"assignment_url", warm->assignment_url}, {"pid", static_cast<int>(getpid())}});
    std::optional<runner::WarmAssignment> assignment;
    try {
      agentapi::BeastTransportOptions assignment_tls;
      // The operator's CA alone: no public CA can vouch for the assignment service.
      assignment_tls.ca_pem = warm->ca_pem;
      agentapi::BeastTransport assignment_transport(std::move(assignment_tls));
      runner::RealStoppableSleeper assignment_sleeper;
      runner::WarmAssignmentClient client(*warm, assignment_transport, assignment_sleeper,
                                          SystemRandom::instance(), logger.child("assignment"),
                                          &metrics);
      assignment = client.wait(stop);
    } catch (const runner::AssignmentRefused& error) {
      logger.error("cannot start: no assignment", {{"error", error.what()}});
      return runner::kExitConfig;
    } catch (const std::exception& error) {
      logger.error("cannot start", {{"error", error.what()}});
      return runner::kExitConfig;
    }
    if (!assignment) {
      logger.info("stopped before an assignment arrived: no work item was served");
      return runner::kExitServed;
    }
    secrets.push_back(assignment->work_secret);
    env = runner::with_assignment(std::move(env), std::move(*assignment));
  }

  runner::RunnerConfig config;
  try {
    std::error_code ignored;
    config = runner::load_runner_config(env, std::filesystem::current_path(ignored).string());
  } catch (const runner::ConfigError& error) {
    logger.error("cannot start", {{"error", error.what()}});
    return runner::kExitConfig;
  }
  secrets.push_back(config.credential);
  // The proxy's password stays out of the log.
  const std::string https_proxy =
      config.proxies.https ? config.proxies.https->redacted() : std::string("none");
  logger.info("serving work item", {{"work_id", config.work_id},
                                    {"environment_id", config.environment_id},
                                    {"session_id", config.session_id},
                                    {"credential_source", config.credential_source},
                                    {"workdir", config.workdir},
                                    {"audit_level", runner::to_string(config.audit_level)},
                                    {"https_proxy", https_proxy},
                                    {"api_ca_file", config.api_ca_file},
                                    {"pid", static_cast<int>(getpid())}});

  agentapi::ClientConfig client_config;
  client_config.base_url = config.base_url;
  client_config.environment_id = config.environment_id;
  client_config.credential = config.credential;
  agentapi::RealSleeper api_sleeper;
  std::unique_ptr<agentapi::BeastTransport> transport;
  try {
    agentapi::BeastTransportOptions transport_options;
    transport_options.proxies = config.proxies;
    transport_options.extra_ca_file = config.api_ca_file;
    transport = std::make_unique<agentapi::BeastTransport>(std::move(transport_options));
  } catch (const std::exception& error) {
    logger.error("cannot start", {{"error", error.what()}});
    return runner::kExitConfig;
  }
  agentapi::AgentApiClient api(client_config, std::move(transport), SystemRandom::instance(),
                               api_sleeper, nullptr, logger.child("agentapi"));

  runner::RealStoppableSleeper sleeper;
  runner::ItemFlowOptions options;
  options.session.max_idle = config.max_idle;
  if (config.memory_sync_interval) {
    options.memory_api = &api;
    options.memory_sync_interval = *config.memory_sync_interval;
  }
  // The audit trail on stdout, apart from these logs on stderr (docs/audit.md).
  runner::StdoutAuditSink audit_sink;
  runner::AuditLog audit(audit_sink, config.audit_level,
                         {config.session_id, config.work_id, config.environment_id},
                         std::move(secrets), SystemClock::instance());
  options.session.audit = &audit;

  const std::string workdir = config.workdir;
  runner::SpawnArchiveCommand archive(
      workdir, runner::process_env("PATH").value_or("/usr/local/bin:/usr/bin:/bin"));
  runner::ItemFlow flow(
      config, api,
      [&](const runner::ToolRoots& roots) {
        tools::AgentToolsetOptions tool_options;
        tool_options.workdir = workdir;
        tool_options.allowed_roots = roots.allowed;
        tool_options.read_only_roots = roots.read_only;
        return std::make_unique<tools::AgentToolset>(tool_options, SystemClock::instance(),
                                                     logger.child("tools"), metrics.registry());
      },
      archive, stop, SystemClock::instance(), sleeper, SystemRandom::instance(), logger, &metrics,
      options);
  const runner::ExitCode code = flow.run();
  logger.info("summary", {{"exit_code", static_cast<int>(code)},
                          {"heartbeats_ok", metrics.heartbeats("ok")},
                          {"heartbeats_transient", metrics.heartbeats("transient")},
                          {"stream_reconnects", metrics.stream_reconnects()},
                          {"result_send_retries", metrics.result_send_retries()},
                          {"tool_calls_ok", metrics.tool_calls("ok")},
                          {"tool_calls_error", metrics.tool_calls("error")},
                          {"tool_calls_denied", metrics.tool_calls("denied")},
                          {"assignment_retries", metrics.assignment_retries()}});
  return code;
}
