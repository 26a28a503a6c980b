#pragma once

#include <cstdint>
#include <memory>

#include "core/audit_sink.h"
#include "core/log.h"
#include "gateway/asio.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_metrics.h"

namespace perimeter::egressgateway {

// What a connection needs from the server that accepted it.
class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  // The config in force when the connection's request arrives; later reloads do not change a
  // connection already judged.
  virtual std::shared_ptr<const GatewaySnapshot> snapshot() const = 0;
  virtual GatewayMetrics& metrics() = 0;
  virtual AuditSink& audit() = 0;
  virtual const Logger& logger() const = 0;
};

// The request head's limit (431 past it).
inline constexpr std::size_t kMaxRequestHeadBytes = 8 * 1024;
// Each direction's buffer while a tunnel relays: a slow reader stalls its writer at this much.
inline constexpr std::size_t kRelayChunkBytes = 16 * 1024;

// One client connection from accept to its audit line: the CONNECT request, the credential, the
// allow-list, the resolved addresses, the upstream connection, the ClientHello's SNI check, then
// the relay. Runs on its own strand (the socket's executor).
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `over_limit`: max_connections were already open; the client gets 503.
  Connection(tcp::socket client, ConnectionHost& host, bool over_limit);
  ~Connection();

  asio::awaitable<void> run();
  // Closes both sockets (drain deadline at shutdown); safe from any thread.
  void cut();
  // The connection's strand.
  tcp::socket::executor_type executor() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace perimeter::egressgateway
