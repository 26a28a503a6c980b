#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "proxy/asio.h"
#include "proxy/guard_config.h"

// clang-format off: after proxy/asio.h, which orders Boost's headers.
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
// clang-format on

namespace perimeter::mcpguard {

namespace ssl = asio::ssl;

// The TLS client settings of an https route, made when the route's config is loaded (a CA file is
// read again at each reload): TLS 1.2 or newer, and the server's certificate verified against
// the route's upstream_ca_file and, with upstream_system_cas, the system's CAs. Throws
// std::runtime_error naming the file when it cannot be read or holds no certificate.
std::shared_ptr<ssl::context> make_upstream_tls_context(const RouteConfig& route);

// A session's upstream connection: the TCP socket, and TLS over it for an https route. Reads and
// writes go to whichever is in use, so the session's HTTP code is the same for both. TLS starts
// afresh on every connection (async_start_tls after each connect).
class UpstreamStream {
 public:
  using executor_type = IoExecutor;

  explicit UpstreamStream(const IoExecutor& executor) : socket_(executor) {}
  UpstreamStream(const UpstreamStream&) = delete;
  UpstreamStream& operator=(const UpstreamStream&) = delete;

  executor_type get_executor() { return socket_.get_executor(); }
  // The socket to dial for a new connection, without the previous connection's TLS state. Only
  // when nothing is pending on the stream (the previous connection's operations have ended).
  TcpSocket& new_connection() {
    tls_.reset();
    return socket_;
  }
  bool is_open() const { return socket_.is_open(); }
  // Closes the TCP connection: an operation pending on it ends with an error. The TLS state is
  // kept until the next connection, since such an operation may still be using it.
  void close(beast::error_code& error) { socket_.close(error); }

  // Starts the TLS handshake on the connected socket, checking the server's certificate against
  // `context`'s CAs and naming `host` (SNI for a DNS name; the certificate must match the name or
  // IP address). `handler(error_code)` runs when it ends.
  template <typename Handler>
  void async_start_tls(ssl::context& context, const std::string& host, Handler&& handler) {
    prepare_tls(context, host);
    tls_->async_handshake(ssl::stream_base::client, std::forward<Handler>(handler));
  }
  // OpenSSL's reason for the last failed handshake (the verification error, when there was
  // one), for the log and the audit.
  std::string tls_failure(const beast::error_code& error);

  template <typename MutableBuffers, typename Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
    }
  }
  template <typename ConstBuffers, typename Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

 private:
  void prepare_tls(ssl::context& context, const std::string& host);

  TcpSocket socket_;
  std::optional<ssl::stream<TcpSocket&>> tls_;
};

}  // namespace perimeter::mcpguard
