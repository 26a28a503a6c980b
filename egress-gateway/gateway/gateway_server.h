#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/audit_sink.h"
#include "core/log.h"
#include "gateway/asio.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_metrics.h"
#include "gateway/tunnel.h"

namespace perimeter::egressgateway {

// The listener and its connections: accepts on `listen`, runs each connection on a strand of a
// shared io_context driven by `threads` threads, and swaps the config for new connections.
class GatewayServer final : public ConnectionHost {
 public:
  GatewayServer(std::shared_ptr<const GatewaySnapshot> snapshot, GatewayMetrics& metrics,
                AuditSink& audit, Logger logger, int threads);
  ~GatewayServer() override;

  // Binds the config's listen address; throws std::runtime_error with the reason.
  void listen();
  // "ip:port" actually bound (port 0 in the config picks one).
  std::string bound_address() const;
  // Starts accepting on the I/O threads.
  void run();
  // New connections are judged by `snapshot` from now on.
  void apply(std::shared_ptr<const GatewaySnapshot> snapshot);
  // Stops accepting, waits up to `grace` for open connections to end, then cuts the rest and
  // waits for their audit lines. True when every connection ended on its own.
  bool shut_down(std::chrono::milliseconds grace);

  std::shared_ptr<const GatewaySnapshot> snapshot() const override;
  GatewayMetrics& metrics() override { return metrics_; }
  AuditSink& audit() override { return audit_; }
  const Logger& logger() const override { return logger_; }

 private:
  asio::awaitable<void> accept_loop();
  void start_connection(tcp::socket socket);
  int open_connections() const;

  GatewayMetrics& metrics_;
  AuditSink& audit_;
  Logger logger_;
  int thread_count_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  mutable std::mutex mutex_;
  std::shared_ptr<const GatewaySnapshot> snapshot_;          // guarded by mutex_
  std::map<std::uint64_t, std::weak_ptr<Connection>> open_;  // guarded by mutex_
  std::uint64_t next_id_ = 0;                                // guarded by mutex_
  std::atomic<bool> stopping_{false};
};

}  // namespace perimeter::egressgateway
