#include "sim/http_server.h"

#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <deque>

namespace perimeter::sim {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr std::size_t kMaxBodyBytes = std::size_t{4} * 1024 * 1024;
// How long an idle waiter sleeps before looking again when nothing woke it: the bound on how late
// a reclaim (which is time-driven) is noticed.
constexpr auto kWaiterRecheck = std::chrono::milliseconds(200);
constexpr auto kStreamPingEvery = std::chrono::seconds(15);
// Streams are woken when their session gets events; the recheck only paces pings.
constexpr auto kStreamRecheck = std::chrono::seconds(1);
}  // namespace

bool percent_decode(std::string_view in, std::string* out) {
  out->clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int high = hex(in[i + 1]);
    const int low = hex(in[i + 2]);
    if (high < 0 || low < 0) return false;
    out->push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

// What the server keeps of each connection, whatever its stream (plain TCP or TLS over it).
class Connection {
 public:
  virtual ~Connection() = default;
  // Wake a waiting poll or stream early (state changed); false when it was not waiting on that.
  virtual bool wake_poll(const std::string& environment_id) = 0;
  virtual void wake_stream(const std::string& session_id) = 0;
  virtual void close() = 0;
};

namespace {

// One client connection: reads requests one at a time, and for each either replies, waits
// (long-poll), streams (SSE, then closes), or drops the socket (fault). `Stream` is the TCP socket,
// or a TLS stream over it when the server was given a certificate; TLS is shut down by closing the
// TCP connection, as the plain server does (every reply is length-delimited or chunked, so a
// client never has to read the end of the connection as the end of a body).
template <typename Stream>
class StreamConnection final : public Connection,
                               public std::enable_shared_from_this<StreamConnection<Stream>> {
 public:
  StreamConnection(Stream stream, HttpServer& server)
      : socket_(std::move(stream)), server_(server), timer_(socket_.get_executor()) {}

  void start() {
    registration_ = server_.register_connection(this->shared_from_this());
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      read();
    } else {
      socket_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) {
                                  self->server_.metrics().count_bad_request("tls_handshake");
                                  return self->close();
                                }
                                self->read();
                              });
    }
  }

  bool wake_poll(const std::string& environment_id) override {
    if (!waiting_ || streaming_ || decision_.kind != RouteDecision::Kind::kLongPoll ||
        decision_.environment_id != environment_id) {
      return false;
    }
    waiting_ = false;  // so the next wake picks another waiter before this one has run
    timer_.cancel();
    return true;
  }
  void wake_stream(const std::string& session_id) override {
    if (waiting_ && streaming_ && decision_.session_id == session_id) timer_.cancel();
  }

  void close() override {
    beast::error_code ignored;
    timer_.cancel();
    tcp_socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp_socket().close(ignored);
  }

  ~StreamConnection() override {
    if (registered_) server_.unregister_connection(registration_);
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(kMaxBodyBytes);
    http::async_read(socket_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return close();
    }
    if (ec) {
      // A request that does not parse as HTTP still gets the API's error shape.
      server_.metrics().count_bad_request("malformed_http");
      ApiReply reply = error_reply(400, "invalid_request_error",
                                   std::string("malformed HTTP request: ") + ec.message());
      keep_alive_ = false;
      return write_reply(reply, "malformed_http");
    }
    started_ = std::chrono::steady_clock::now();
    const auto& message = parser_->get();
    ApiRequest request;
    request.method = std::string(message.method_string());
    const std::string target(message.target());
    const std::size_t question = target.find('?');
    bool decoded = percent_decode(target.substr(0, question), &request.path);
    if (decoded && question != std::string::npos) {
      std::string_view query(target);
      query.remove_prefix(question + 1);
      while (!query.empty() && decoded) {
        const std::size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const std::size_t eq = pair.find('=');
        std::string key;
        std::string value;
        decoded = percent_decode(pair.substr(0, eq), &key) &&
                  (eq == std::string_view::npos || percent_decode(pair.substr(eq + 1), &value));
        if (!key.empty()) request.query[key] = value;
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
      }
    }
    for (const auto& field : message) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      request.headers[name] = std::string(field.value());
    }
    request.body = message.body();
    keep_alive_ = message.keep_alive();
    if (!decoded) {
      return write_reply(error_reply(400, "invalid_request_error",
                                     "the request target has a malformed percent-escape"),
                         "malformed_http");
    }
    if (request.path.rfind("/admin", 0) == 0 && !from_this_host()) {
      // Bound to a bridge (`--address`), the simulator is reachable from pods: the agent's own
      // commands there must not be able to script sessions or steal leases.
      return write_reply(error_reply(403, "permission_error",
                                     "the admin API answers only this host (loopback or the "
                                     "address the simulator listens on)"),
                         "admin.forbidden");
    }
    decision_ = server_.router().route(request);
    if (decision_.latency.count() > 0) {
      timer_.expires_after(decision_.latency);
      timer_.async_wait([self = this->shared_from_this()](beast::error_code) { self->dispatch(); });
      return;
    }
    dispatch();
  }

  bool from_this_host() const {
    beast::error_code remote_error, local_error;
    const auto remote = tcp_socket().remote_endpoint(remote_error).address();
    const auto local = tcp_socket().local_endpoint(local_error).address();
    return !remote_error && !local_error && admin_allowed_from(remote, local);
  }

  void dispatch() {
    switch (decision_.kind) {
      case RouteDecision::Kind::kReset: {
        // An abortive close (RST), as a proxy dying mid-request would look to the client.
        beast::error_code ignored;
        tcp_socket().set_option(asio::socket_base::linger(true, 0), ignored);
        server_.metrics().count_request(decision_.route, 0, elapsed());
        return close();
      }
      case RouteDecision::Kind::kReply:
        if (decision_.reply.status < 300) {
          if (!decision_.wake_environment.empty()) server_.wake_poller(decision_.wake_environment);
          if (!decision_.wake_session.empty()) server_.wake_streams(decision_.wake_session);
        }
        server_.wake_for_simulator();
        return write_reply(decision_.reply, decision_.route);
      case RouteDecision::Kind::kLongPoll:
        poll_deadline_ = std::chrono::steady_clock::now() + decision_.block;
        server_.metrics().waiting_polls().Increment();
        return wait_for_work();
      case RouteDecision::Kind::kStream:
        return start_stream();
    }
  }

  void wait_for_work() {
    const auto now = std::chrono::steady_clock::now();
    if (std::optional<ApiReply> reply = decision_.retry()) {
      server_.metrics().waiting_polls().Decrement();
      return write_reply(*reply, decision_.route);
    }
    if (now >= poll_deadline_ || server_.stopping()) {
      server_.metrics().waiting_polls().Decrement();
      return write_reply(json_reply(200, nullptr), decision_.route);
    }
    waiting_ = true;
    timer_.expires_after(
        std::min<std::chrono::steady_clock::duration>(poll_deadline_ - now, kWaiterRecheck));
    timer_.async_wait([self = this->shared_from_this()](beast::error_code) {
      self->waiting_ = false;
      if (!self->tcp_socket().is_open()) {
        self->server_.metrics().waiting_polls().Decrement();
        return;
      }
      self->wait_for_work();
    });
  }

  void write_reply(const ApiReply& reply, const std::string& route) {
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(11);
    response->result(static_cast<unsigned>(reply.status));
    response->set(http::field::server, "perimeter-sim");
    response->set(http::field::content_type, reply.content_type);
    response->set("request-id", "req_sim_" + std::to_string(++request_counter_));
    for (const auto& [name, value] : reply.headers) response->set(name, value);
    response->body() = reply.body;
    response->keep_alive(keep_alive_ && !server_.stopping());
    response->prepare_payload();
    server_.metrics().count_request(route, reply.status, elapsed());
    http::async_write(
        socket_, *response,
        [self = this->shared_from_this(), response](beast::error_code ec, std::size_t) {
          if (ec || !response->keep_alive()) return self->close();
          self->read();
        });
  }

  // ---- SSE ----
  void start_stream() {
    server_.metrics().open_streams().Increment();
    streaming_ = true;
    last_event_id_ = decision_.last_event_id;
    last_ping_ = std::chrono::steady_clock::now();
    server_.metrics().count_request(decision_.route, 200, elapsed());
    // Chunked, one chunk per flush, as HTTP/1.1 servers stream SSE: clients (cpprestsdk among
    // them) hand each chunk over as it arrives, where a close-delimited body may sit in their
    // buffers until the connection ends. The head goes out at once so the client's request
    // completes even when there is nothing to stream yet.
    auto head = std::make_shared<std::string>(
        "HTTP/1.1 200 OK\r\nServer: perimeter-sim\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    asio::async_write(socket_, asio::buffer(*head),
                      [self = this->shared_from_this(), head](beast::error_code ec, std::size_t) {
                        if (ec) return self->end_stream();
                        self->pump_stream();
                      });
  }

  void pump_stream() {
    if (!tcp_socket().is_open()) return end_stream();
    for (auto& event : server_.simulator().events_after(decision_.session_id, last_event_id_)) {
      if (decision_.drop_after_events >= 0 && frames_sent_ >= decision_.drop_after_events) {
        // The fault: cut the stream mid-session, after what was already queued is flushed.
        drop_after_flush_ = true;
        break;
      }
      last_event_id_ = event.id;
      pending_.push_back("event: " + event.type + "\nid: " + event.id + "\ndata: " + event.data +
                         "\n\n");
      ++frames_sent_;
    }
    const auto now = std::chrono::steady_clock::now();
    if (pending_.empty() && now - last_ping_ >= kStreamPingEvery) {
      pending_.push_back("event: ping\ndata: {\"type\":\"ping\"}\n\n");
      last_ping_ = now;
    }
    if (!pending_.empty()) return flush_stream();
    if (drop_after_flush_) return end_stream();  // cut without the final chunk: a broken stream
    if (server_.stopping() || server_.simulator().session_terminated(decision_.session_id)) {
      return finish_stream();
    }
    waiting_ = true;
    timer_.expires_after(kStreamRecheck);
    timer_.async_wait([self = this->shared_from_this()](beast::error_code) {
      self->waiting_ = false;
      self->pump_stream();
    });
  }

  void flush_stream() {
    std::string payload;
    for (auto& piece : pending_) payload += piece;
    pending_.clear();
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", payload.size());
    auto chunk = std::make_shared<std::string>(size + payload + "\r\n");
    asio::async_write(socket_, asio::buffer(*chunk),
                      [self = this->shared_from_this(), chunk](beast::error_code ec, std::size_t) {
                        if (ec) return self->end_stream();
                        self->pump_stream();
                      });
  }

  // The clean end of a stream: the last chunk, then close.
  void finish_stream() {
    auto last = std::make_shared<std::string>("0\r\n\r\n");
    asio::async_write(socket_, asio::buffer(*last),
                      [self = this->shared_from_this(), last](beast::error_code, std::size_t) {
                        self->end_stream();
                      });
  }

  void end_stream() {
    if (streaming_) {
      streaming_ = false;
      server_.metrics().open_streams().Decrement();
    }
    close();
  }

  tcp::socket& tcp_socket() { return beast::get_lowest_layer(socket_); }
  const tcp::socket& tcp_socket() const { return beast::get_lowest_layer(socket_); }

  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }

  Stream socket_;
  HttpServer& server_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  RouteDecision decision_;
  bool keep_alive_ = true;
  bool waiting_ = false;
  bool streaming_ = false;
  bool drop_after_flush_ = false;
  int frames_sent_ = 0;
  std::uint64_t request_counter_ = 0;
  std::string last_event_id_;
  std::deque<std::string> pending_;
  std::chrono::steady_clock::time_point started_{};
  std::chrono::steady_clock::time_point poll_deadline_{};
  std::chrono::steady_clock::time_point last_ping_{};
  std::list<std::weak_ptr<Connection>>::iterator registration_;
  bool registered_ = true;
};

}  // namespace

bool admin_allowed_from(const asio::ip::address& remote, const asio::ip::address& local) {
  // A connection from this host comes from loopback, or from the very address it reached.
  return remote.is_loopback() || remote == local;
}

HttpServer::HttpServer(asio::io_context& io, ApiRouter& router, Simulator& simulator,
                       SimMetrics& metrics, Logger logger, std::uint16_t port,
                       const std::string& address, asio::ssl::context* tls)
    : io_(io),
      router_(router),
      simulator_(simulator),
      metrics_(metrics),
      logger_(std::move(logger)),
      tls_(tls),
      acceptor_(io),
      ticker_(io) {
  const tcp::endpoint endpoint(asio::ip::make_address(address), port);
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  port_ = acceptor_.local_endpoint().port();
}

HttpServer::~HttpServer() = default;

void HttpServer::start() {
  accept();
  tick();
}

void HttpServer::stop() {
  stopping_ = true;
  beast::error_code ignored;
  acceptor_.close(ignored);
  ticker_.cancel();
  for (auto& weak : connections_) {
    if (auto connection = weak.lock()) connection->close();
  }
}

void HttpServer::accept() {
  acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (stopping_) return;
      logger_.warn("accept failed", {{"error", ec.message()}});
    } else {
      if (tls_ != nullptr) {
        std::make_shared<StreamConnection<asio::ssl::stream<tcp::socket>>>(
            asio::ssl::stream<tcp::socket>(std::move(socket), *tls_), *this)
            ->start();
      } else {
        std::make_shared<StreamConnection<tcp::socket>>(std::move(socket), *this)->start();
      }
    }
    if (!stopping_) accept();
  });
}

void HttpServer::wake_for_simulator() {
  const Simulator::Wakes wakes = simulator_.take_wakes();
  for (const auto& environment_id : wakes.environments) wake_poller(environment_id);
  for (const auto& session_id : wakes.sessions) wake_streams(session_id);
}

void HttpServer::tick() {
  simulator_.tick();
  wake_for_simulator();
  ticker_.expires_after(std::chrono::milliseconds(250));
  ticker_.async_wait([this](beast::error_code ec) {
    if (!ec && !stopping_) tick();
  });
}

void HttpServer::wake_poller(const std::string& environment_id) {
  for (auto& weak : connections_) {
    auto connection = weak.lock();
    if (connection && connection->wake_poll(environment_id)) return;
  }
}

void HttpServer::wake_streams(const std::string& session_id) {
  for (auto& weak : connections_) {
    if (auto connection = weak.lock()) connection->wake_stream(session_id);
  }
}

std::list<std::weak_ptr<Connection>>::iterator HttpServer::register_connection(
    const std::shared_ptr<Connection>& connection) {
  connections_.push_front(connection);
  return connections_.begin();
}

void HttpServer::unregister_connection(std::list<std::weak_ptr<Connection>>::iterator it) {
  connections_.erase(it);
}

}  // namespace perimeter::sim
