// perimeter-mcp-guard: an MCP-aware reverse proxy for MCP Streamable HTTP (docs/mcp-guard.md).

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/log.h"
#include "core/shutdown_signal.h"
#include "proxy/audit.h"
#include "proxy/config_reloader.h"
#include "proxy/guard_config.h"
#include "proxy/guard_metrics.h"
#include "proxy/guard_server.h"
#include "proxy/upstream_stream.h"

namespace {

using namespace perimeter;
using namespace perimeter::mcpguard;

constexpr int kReloadCheckMillis = 2000;

struct Options {
  std::string config_path;
  int threads = 2;
  bool check = false;
};

constexpr std::string_view kUsage =
    "usage: perimeter-mcp-guard --config FILE [--threads N] [--check]\n";

std::optional<Options> parse_options(int argc, char** argv, std::string* error) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](std::string_view flag) -> std::optional<std::string> {
      if (arg.starts_with(std::string(flag) + "=")) return std::string(arg.substr(flag.size() + 1));
      if (arg == flag && i + 1 < argc) return std::string(argv[++i]);
      return std::nullopt;
    };
    if (arg == "--check") {
      options.check = true;
    } else if (arg.starts_with("--config")) {
      auto path = value("--config");
      if (!path) {
        *error = "--config needs a file";
        return std::nullopt;
      }
      options.config_path = *path;
    } else if (arg.starts_with("--threads")) {
      const auto text = value("--threads");
      int threads = 0;
      if (!text ||
          std::from_chars(text->data(), text->data() + text->size(), threads).ec != std::errc() ||
          threads < 1 || threads > 256) {
        *error = "--threads needs a number from 1 to 256";
        return std::nullopt;
      }
      options.threads = threads;
    } else {
      *error = "unknown argument " + std::string(arg);
      return std::nullopt;
    }
  }
  if (options.config_path.empty()) {
    *error = "--config is required";
    return std::nullopt;
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  std::string error;
  const auto options = parse_options(argc, argv, &error);
  if (!options) {
    std::cerr << "perimeter-mcp-guard: " << error << "\n" << kUsage;
    return 2;
  }
  const auto text = read_config_file(options->config_path);
  if (!text) {
    std::cerr << options->config_path << ": cannot read\n";
    return 1;
  }
  auto parsed = parse_guard_config(*text);
  if (options->check) {
    if (!parsed.config) {
      std::cerr << options->config_path << ": " << parsed.error << "\n";
      return 1;
    }
    // What a start would read besides the file: each https upstream's CA file.
    for (const auto& route : parsed.config->routes) {
      try {
        if (route.upstream.tls) make_upstream_tls_context(route);
      } catch (const std::exception& tls_error) {
        std::cerr << options->config_path << ": " << tls_error.what() << "\n";
        return 1;
      }
    }
    std::cout << "config ok\n";
    return 0;
  }

  Logger logger("mcp-guard");
  if (!parsed.config) {
    logger.error("bad config", {{"config", options->config_path}, {"error", parsed.error}});
    return 1;
  }
  const GuardConfig& config = *parsed.config;

  // Before any thread starts: threads inherit the blocked mask. SIGHUP asks for a reload.
  ShutdownSignal signals(ShutdownSignal::Reload::kOnSighup);

  auto registry = std::make_shared<prometheus::Registry>();
  PrometheusGuardMetrics metrics(*registry);
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address;
  if (!config.metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(config.metrics_listen);
      exposer->RegisterCollectable(registry);
      std::string host;
      std::string port;
      split_host_port(config.metrics_listen, &host, &port);
      const auto ports = exposer->GetListeningPorts();
      metrics_address = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                        (ports.empty() ? port : std::to_string(ports.front()));
    } catch (const std::exception& exposer_error) {
      logger.error("cannot listen for metrics",
                   {{"address", config.metrics_listen}, {"error", exposer_error.what()}});
      return 1;
    }
  }

  StdoutAuditSink audit_sink;
  std::unique_ptr<GuardServer> server;
  try {
    server = std::make_unique<GuardServer>(config, metrics, audit_sink, SystemClock::instance(),
                                           logger, options->threads);
  } catch (const std::exception& route_error) {
    logger.error("bad config", {{"config", options->config_path}, {"error", route_error.what()}});
    return 1;
  }
  try {
    server->listen();
  } catch (const std::exception& listen_error) {
    logger.error("cannot listen", {{"error", listen_error.what()}});
    return 1;
  }
  nlohmann::json routes = nlohmann::json::object();
  for (const auto& [route, address] : server->bound_addresses()) {
    logger.info("listening", {{"route", route}, {"address", address}});
    routes[route] = address;
  }
  if (!metrics_address.empty()) {
    logger.info("listening", {{"metrics", true}, {"address", metrics_address}});
  }
  server->run();
  logger.info("ready", {{"routes", routes},
                        {"metrics", metrics_address.empty() ? nlohmann::json(nullptr)
                                                            : nlohmann::json(metrics_address)},
                        {"threads", options->threads}});

  ConfigReloader reloader(options->config_path, config, *text, *server, metrics, logger);
  for (;;) {
    const int signal = signals.wait_for(kReloadCheckMillis);
    if (signal == SIGINT || signal == SIGTERM) {
      logger.info("stopping", {{"signal", signal == SIGINT ? "SIGINT" : "SIGTERM"},
                               {"grace_seconds", config.limits.shutdown_grace.count()}});
      break;
    }
    reloader.check(signal == SIGHUP);
    server->expire_server_requests();
  }
  // The grace period in force is the one the process started with: a reload cannot shorten
  // the time a pod was promised.
  const bool drained = server->shut_down(config.limits.shutdown_grace);
  logger.info("stopped", {{"drained", drained}});
  // civetweb's shutdown waits out its poll interval (up to ~2 s) and serves nothing we need
  // any more: the process is exiting, so the exposer is left to the kernel to clean up.
  static_cast<void>(exposer.release());
  return 0;
}
