#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

namespace perimeter::testing {

namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

// The fake upstream's side of one connection: plain TCP, or TLS over it.
class UpstreamConnection {
 public:
  virtual ~UpstreamConnection() = default;
  virtual std::size_t write(boost::asio::const_buffer bytes, boost::system::error_code& error) = 0;
  virtual std::size_t read_some(boost::asio::mutable_buffer into,
                                boost::system::error_code& error) = 0;
  // Reads one request (false on an error or EOF).
  virtual bool read_request(boost::beast::flat_buffer& buffer,
                            http::request<http::string_body>& request) = 0;
  virtual void close() = 0;
};

// One request the fake upstream received, and the connection to answer it on with raw bytes, so
// a test states exactly what the server sends (and can compare it byte for byte).
class UpstreamExchange {
 public:
  UpstreamExchange(http::request<http::string_body> request, UpstreamConnection& connection)
      : request(std::move(request)), connection_(connection) {}
  // Returns false when the guard closed the connection.
  bool write(const std::string& bytes);
  // Closes the connection (an upstream dying).
  void close();
  // Blocks until the guard closes the connection (a read returns an error or EOF), then closes.
  void close_when_peer_closes(char* scratch, boost::system::error_code* error);
  bool closed() const { return closed_; }

  http::request<http::string_body> request;

 private:
  UpstreamConnection& connection_;
  bool closed_ = false;
};

// A server certificate and its key (PEM), for a fake upstream that speaks TLS.
struct TlsIdentity {
  std::string certificate_pem;
  std::string key_pem;
};

// An MCP server stand-in on `address` (a loopback address; port 0: a free one): a thread per
// connection reading requests with Beast and handing each to `handler`, which writes the reply.
class FakeUpstream {
 public:
  using Handler = std::function<void(UpstreamExchange&)>;
  explicit FakeUpstream(Handler handler, const std::string& address = "127.0.0.1", int port = 0,
                        std::optional<TlsIdentity> tls = std::nullopt);
  ~FakeUpstream();

  int port() const { return port_; }
  std::string url() const {
    return (tls_ ? "https://" : "http://") + address_ + ":" + std::to_string(port_);
  }
  // Connections whose TLS handshake failed (the guard refused the certificate, say).
  int failed_handshakes() const { return failed_handshakes_; }
  int connections() const { return connections_; }
  int requests() const { return requests_; }
  // Every request received so far.
  std::vector<http::request<http::string_body>> received() const;

 private:
  void serve(tcp::socket socket);

  Handler handler_;
  std::string address_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  boost::asio::io_context io_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
  std::atomic<int> failed_handshakes_{0};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::vector<http::request<http::string_body>> received_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// A raw HTTP/1.1 reply with a Content-Length body.
std::string http_reply(int status, const std::string& reason,
                       const std::vector<std::pair<std::string, std::string>>& headers,
                       const std::string& body);
// The head of a chunked reply, and one chunk.
std::string chunked_head(int status, const std::string& content_type,
                         const std::vector<std::pair<std::string, std::string>>& headers = {});
std::string chunk(const std::string& bytes);

}  // namespace perimeter::testing
