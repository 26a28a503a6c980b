// perimeter-runner: serves the one claimed work item its pod was started for (docs/runner.md).
#include <unistd.h>

#include <filesystem>
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

  runner::RunnerConfig config;
  // Every form of the credential the audit lines must never hold, read before the scrub.
  std::vector<std::string> secrets;
  for (const std::string& name : runner::credential_variables()) {
    if (auto value = runner::process_env(name.c_str())) secrets.push_back(*value);
  }
  std::optional<std::string> config_error;
  try {
    std::error_code ignored;
    config = runner::load_runner_config(runner::process_env,
                                        std::filesystem::current_path(ignored).string());
  } catch (const runner::ConfigError& error) {
    config_error = error.what();
  }
  // Read once, then gone from the environment and from the block /proc/1/environ shows.
  runner::scrub_environment(runner::credential_variables());
  if (config_error) {
    logger.error("cannot start", {{"error", *config_error}});
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

  runner::RunnerMetrics metrics;
  runner::StopSource stop;
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

  // SIGTERM (pod deletion) and SIGINT end the item gracefully: the same teardown as a normal end.
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
  signal_watch_done.request();
  signal_watch.join();
  logger.info("summary", {{"exit_code", static_cast<int>(code)},
                          {"heartbeats_ok", metrics.heartbeats("ok")},
                          {"heartbeats_transient", metrics.heartbeats("transient")},
                          {"stream_reconnects", metrics.stream_reconnects()},
                          {"result_send_retries", metrics.result_send_retries()},
                          {"tool_calls_ok", metrics.tool_calls("ok")},
                          {"tool_calls_error", metrics.tool_calls("error")},
                          {"tool_calls_denied", metrics.tool_calls("denied")}});
  return code;
}
