#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/cidr.h"
#include "proxy/asio.h"
#include "proxy/guard_config.h"

namespace perimeter::mcpguard {

// Why a connection to the upstream was not made.
enum class ConnectFailure {
  kNone,
  kNotAllowed,  // every resolved address is outside allowed_cidrs: nothing was dialled
  kResolve,     // the name did not resolve
  kConnect,     // every allowed address refused or was unreachable
  kTimeout,     // upstream_connect_timeout passed
};
// The metric `kind` for a failure: not_allowed, connect or timeout.
const char* metric_kind(ConnectFailure failure);

// The resolved addresses a route may dial (the SSRF guard): only those inside `allowed`.
std::vector<tcp::endpoint> allowed_endpoints(const tcp::resolver::results_type& resolved,
                                             const std::vector<Cidr>& allowed);
bool address_allowed(const asio::ip::address& address, const std::vector<Cidr>& allowed);

// Connects a session's upstream socket: resolves the host at each connection (so a DNS answer
// that changes is checked again), keeps the allowed addresses, and dials them in order. Lives on
// the session's strand; the session bounds it with upstream_connect_timeout (cancel() and closing
// the socket end it).
class UpstreamConnector {
 public:
  using Handler = std::function<void(ConnectFailure failure, std::string detail)>;

  explicit UpstreamConnector(const asio::any_io_executor& executor) : resolver_(executor) {}

  void async_connect(TcpSocket& socket, const RouteConfig& route, Handler handler);
  void cancel() { resolver_.cancel(); }

 private:
  tcp::resolver resolver_;
};

}  // namespace perimeter::mcpguard
