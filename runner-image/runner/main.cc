// perimeter-runner: serves the one claimed work item its pod was started for (docs/runner.md).
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <thread>

#include "agentapi/agent_api_client.h"
#include "core/log.h"
#include "core/random.h"
#include "core/shutdown_signal.h"
#include "runner/beast_transport.h"
#include "runner/item_flow.h"
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
  // Before any thread starts, so every thread inherits the blocked SIGTERM/SIGINT.
  ShutdownSignal shutdown;
  Logger logger("runner", StderrSink::instance(), log_level());

  runner::RunnerConfig config;
  try {
    std::error_code ignored;
    config = runner::load_runner_config(runner::process_env,
                                        std::filesystem::current_path(ignored).string());
  } catch (const runner::ConfigError& error) {
    logger.error("cannot start", {{"error", error.what()}});
    return runner::kExitConfig;
  }
  logger.info("serving work item", {{"work_id", config.work_id},
                                    {"environment_id", config.environment_id},
                                    {"session_id", config.session_id},
                                    {"credential_source", config.credential_source},
                                    {"workdir", config.workdir},
                                    {"pid", static_cast<int>(getpid())}});

  agentapi::ClientConfig client_config;
  client_config.base_url = config.base_url;
  client_config.environment_id = config.environment_id;
  client_config.credential = config.credential;
  agentapi::RealSleeper api_sleeper;
  agentapi::AgentApiClient api(client_config, std::make_unique<runner::BeastTransport>(),
                               SystemRandom::instance(), api_sleeper, nullptr,
                               logger.child("agentapi"));

  runner::RunnerMetrics metrics;
  runner::StopSource stop;
  runner::RealStoppableSleeper sleeper;
  runner::ItemFlowOptions options;
  options.session.max_idle = config.max_idle;

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
      [&] {
        tools::AgentToolsetOptions tool_options;
        tool_options.workdir = workdir;
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
