#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "proxy/asio.h"
#include "proxy/audit.h"
#include "proxy/client_session.h"
#include "proxy/guard_config.h"
#include "proxy/guard_metrics.h"
#include "proxy/route_context.h"

namespace perimeter::mcpguard {

// The I/O contexts, one per I/O thread. A connection lives on one of them for its whole life, so
// its handlers never run concurrently and need no strand (nginx's worker model).
using IoContexts = std::vector<std::unique_ptr<asio::io_context>>;

// One route's listening socket, on the first I/O context: accepts connections and gives each a
// ClientSession on the next context in turn.
class RouteListener : public std::enable_shared_from_this<RouteListener> {
 public:
  RouteListener(const IoContexts& contexts, std::shared_ptr<RouteContext> route,
                SessionRegistry& registry);

  // Binds `host:port` (port 0 takes a free one). Throws std::runtime_error naming the route.
  void listen(const std::string& host, const std::string& port);
  // "127.0.0.1:PORT" ("[::1]:PORT" for IPv6) as bound.
  std::string bound_address() const;
  void start();
  // Thread-safe: no new connections after this; open ones are left alone.
  void stop();

 private:
  void accept();

  const IoContexts& contexts_;
  std::size_t next_context_ = 0;  // touched in accept handlers only (the first context's thread)
  std::shared_ptr<RouteContext> route_;
  SessionRegistry& registry_;
  tcp::acceptor acceptor_;
};

// The whole proxy: one listener per route, the I/O threads, and the policy of each route,
// which a reload replaces.
class GuardServer {
 public:
  // `threads`: the I/O threads run() will start, each with an io_context of its own. Throws
  // std::runtime_error when a route's policy cannot be made (an https upstream's CA file).
  GuardServer(const GuardConfig& config, GuardMetrics& metrics, AuditSink& audit_sink,
              const Clock& clock, Logger logger, int threads);
  ~GuardServer();
  GuardServer(const GuardServer&) = delete;
  GuardServer& operator=(const GuardServer&) = delete;

  // Binds every route's listener. Throws std::runtime_error naming the route that failed.
  void listen();
  // Route name -> bound address, in the config's order.
  std::vector<std::pair<std::string, std::string>> bound_addresses() const;
  // Starts accepting, on the I/O threads.
  void run();
  // Publishes a reloaded config's policies (reload_refusal() must have accepted it). Throws
  // std::runtime_error, publishing nothing, when a route's policy cannot be made (an https
  // upstream's CA file that cannot be read).
  void apply(const GuardConfig& config);
  // Writes the audit lines of server-initiated requests left unanswered past their route's
  // upstream_reply_timeout (called periodically).
  void expire_server_requests();
  // Stops accepting, lets open exchanges finish for up to `grace`, then stops the threads.
  // Returns false when some were still open at the end of the grace period.
  bool shut_down(std::chrono::seconds grace);

 private:
  const Clock& clock_;
  Logger logger_;
  // Outlives contexts_: sessions still pending in a context when it is destroyed remove
  // themselves here.
  SessionRegistry registry_;
  IoContexts contexts_;
  // Keep the threads running between connections, until shut_down().
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::shared_ptr<RouteContext>> routes_;
  std::vector<std::shared_ptr<RouteListener>> listeners_;
  std::vector<std::thread> threads_;
};

}  // namespace perimeter::mcpguard
