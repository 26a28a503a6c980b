// perimeter-egress-gateway: an HTTP CONNECT egress proxy with per-environment FQDN allow-lists
// and an SNI check (docs/egress-gateway.md).

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/audit_sink.h"
#include "core/log.h"
#include "core/shutdown_signal.h"
#include "gateway/config_reloader.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_metrics.h"
#include "gateway/gateway_server.h"

namespace {

using namespace perimeter;
using namespace perimeter::egressgateway;

constexpr int kReloadCheckMillis = 2000;

struct Options {
  std::string config_path;
  int threads = 2;
  int drain_seconds = 25;
  bool check = false;
};

constexpr std::string_view kUsage =
    "usage: perimeter-egress-gateway --config FILE [--threads N] [--drain-seconds S] [--check]\n";

std::optional<int> number_flag(const std::optional<std::string>& text, int min, int max) {
  int value = 0;
  if (!text ||
      std::from_chars(text->data(), text->data() + text->size(), value).ec != std::errc() ||
      value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

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
      const auto path = value("--config");
      if (!path) {
        *error = "--config needs a file";
        return std::nullopt;
      }
      options.config_path = *path;
    } else if (arg.starts_with("--threads")) {
      const auto threads = number_flag(value("--threads"), 1, 256);
      if (!threads) {
        *error = "--threads needs a number from 1 to 256";
        return std::nullopt;
      }
      options.threads = *threads;
    } else if (arg.starts_with("--drain-seconds")) {
      const auto seconds = number_flag(value("--drain-seconds"), 0, 3600);
      if (!seconds) {
        *error = "--drain-seconds needs a number from 0 to 3600";
        return std::nullopt;
      }
      options.drain_seconds = *seconds;
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
    std::cerr << "perimeter-egress-gateway: " << error << "\n" << kUsage;
    return 2;
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): before any thread starts
  const char* testing_env = std::getenv(kTestingEnvVar);
  const bool testing_allowed = testing_env != nullptr && std::string_view(testing_env) == "1";
  const auto text = read_whole_file(options->config_path);
  if (!text) {
    std::cerr << options->config_path << ": cannot read\n";
    return 1;
  }
  auto loaded = load_gateway_snapshot(*text, testing_allowed);
  if (options->check) {
    if (!loaded.snapshot) {
      std::cerr << options->config_path << ": " << loaded.error << "\n";
      return 1;
    }
    std::cout << "config ok\n";
    return 0;
  }

  Logger logger("egress-gateway");
  if (!loaded.snapshot) {
    logger.error("bad config", {{"config", options->config_path}, {"error", loaded.error}});
    return 1;
  }
  const auto initial = loaded.snapshot;
  const GatewayConfig& config = initial->config;
  if (config.testing_allow_loopback_upstreams) {
    logger.warn("testing_allow_loopback_upstreams is on: upstreams may resolve to loopback");
  }

  // Before any thread starts: threads inherit the blocked mask. SIGHUP asks for a reload.
  ShutdownSignal signals(ShutdownSignal::Reload::kOnSighup);

  auto registry = std::make_shared<prometheus::Registry>();
  PrometheusGatewayMetrics metrics(*registry);
  // /healthz: an empty exposition answered by the same server, 200 while the process serves.
  auto health = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address;
  if (!config.metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(config.metrics_listen);
      exposer->RegisterCollectable(registry);
      exposer->RegisterCollectable(health, "/healthz");
      std::string host;
      std::string port;
      split_host_port(config.metrics_listen, &host, &port);
      const auto ports = exposer->GetListeningPorts();
      metrics_address = host + ":" + (ports.empty() ? port : std::to_string(ports.front()));
    } catch (const std::exception& exposer_error) {
      logger.error("cannot listen for metrics",
                   {{"address", config.metrics_listen}, {"error", exposer_error.what()}});
      return 1;
    }
  }

  StdoutAuditSink audit_sink;
  GatewayServer server(initial, metrics, audit_sink, logger, options->threads);
  try {
    server.listen();
  } catch (const std::exception& listen_error) {
    logger.error("cannot listen", {{"error", listen_error.what()}});
    return 1;
  }
  server.run();
  logger.info("ready", {{"address", server.bound_address()},
                        {"metrics", metrics_address.empty() ? nlohmann::json(nullptr)
                                                            : nlohmann::json(metrics_address)},
                        {"environments", config.environments.size()},
                        {"threads", options->threads}});

  ConfigReloader reloader(options->config_path, *text, initial, testing_allowed, server, metrics,
                          logger);
  for (;;) {
    const int signal = signals.wait_for(kReloadCheckMillis);
    if (signal == SIGINT || signal == SIGTERM) {
      logger.info("stopping", {{"signal", signal == SIGINT ? "SIGINT" : "SIGTERM"},
                               {"drain_seconds", options->drain_seconds}});
      break;
    }
    reloader.check(signal == SIGHUP);
  }
  const bool drained = server.shut_down(std::chrono::seconds(options->drain_seconds));
  logger.info("stopped", {{"drained", drained}});
  // civetweb's shutdown waits out its poll interval and serves nothing we need any more.
  static_cast<void>(exposer.release());
  return 0;
}
