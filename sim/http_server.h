#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include "core/log.h"
#include "sim/metrics.h"
#include "sim/router.h"

namespace perimeter::sim {

// Whether the admin API answers a connection from `remote` that reached `local`: only from this
// host (loopback, or the listening address itself), never from a pod on a bridge it listens on.
bool admin_allowed_from(const boost::asio::ip::address& remote,
                        const boost::asio::ip::address& local);

class Connection;

// The simulator's HTTP/1.1 server (Boost.Beast): keep-alive requests, long-polls and SSE streams
// as timers on one io_context thread, so a thousand idle waiters cost a thousand timers, not
// threads. Binds to 127.0.0.1 unless given another address. With `tls` (a server context holding
// a certificate and its key, which must outlive the server), every connection is HTTPS: the API
// can then stand in for a real one at a host name, as clients behind an egress proxy need.
class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, ApiRouter& router, Simulator& simulator,
             SimMetrics& metrics, Logger logger, std::uint16_t port,
             const std::string& address = "127.0.0.1", boost::asio::ssl::context* tls = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::uint16_t port() const { return port_; }
  // Starts accepting and the lease-expiry ticker; call once, then run the io_context.
  void start();
  // Stops accepting and closes every connection; run the io_context until it returns.
  void stop();

  // Used by connections.
  ApiRouter& router() { return router_; }
  Simulator& simulator() { return simulator_; }
  SimMetrics& metrics() { return metrics_; }
  const Logger& logger() const { return logger_; }
  // Wakes one long-poll waiting on `environment_id` (one new item needs one worker).
  void wake_poller(const std::string& environment_id);
  // Wakes every stream of `session_id` so it sends the new events now.
  void wake_streams(const std::string& session_id);
  // Wakes what the simulator changed on its own (a turn sent on a timer, an item queued when
  // another stopped).
  void wake_for_simulator();
  std::list<std::weak_ptr<Connection>>::iterator register_connection(
      const std::shared_ptr<Connection>& connection);
  void unregister_connection(std::list<std::weak_ptr<Connection>>::iterator it);
  bool stopping() const { return stopping_; }

 private:
  void accept();
  void tick();

  boost::asio::io_context& io_;
  ApiRouter& router_;
  Simulator& simulator_;
  SimMetrics& metrics_;
  Logger logger_;
  boost::asio::ssl::context* tls_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer ticker_;
  std::uint16_t port_ = 0;
  bool stopping_ = false;
  std::list<std::weak_ptr<Connection>> connections_;
};

// Percent-decodes a URL component; false when an escape is malformed.
bool percent_decode(std::string_view in, std::string* out);

}  // namespace perimeter::sim
