#include "agentapi/beast_transport.h"

#include <openssl/ssl.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <limits>
#include <optional>
#include <utility>

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
// clang-format on

#include "agentapi/api_error.h"

namespace perimeter::agentapi {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// How often a blocked stream read looks at its cancel flag.
constexpr std::chrono::milliseconds kCancelPoll{100};
constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::uint32_t kHeaderLimit = 64 * 1024;
// A proxy's refusal is read whole for its reason, up to this much.
constexpr std::uint64_t kProxyBodyLimit = std::uint64_t{64} * 1024;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

}  // namespace

struct BeastTransport::Origin {
  bool tls = false;
  std::string host;         // as resolved: no brackets around an IPv6 literal
  std::string port;         // explicit or the scheme's
  std::string host_header;  // as written in the URL
  std::string target;       // path and query
  const ProxyUrl* proxy = nullptr;  // none: direct (no proxy set, or the host is in NO_PROXY)
  std::string key() const { return (tls ? "https://" : "http://") + host_header; }
  // "host:port" with the port always written: what a CONNECT names.
  std::string authority() const {
    return (host.find(':') == std::string::npos ? host : "[" + host + "]") + ":" + port;
  }
};

struct BeastTransport::Connection {
  asio::io_context io;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  std::string origin;
  std::chrono::steady_clock::time_point idle_since;

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

  template <class Use>
  auto with_stream(Use use) {
    return secure ? use(*secure) : use(*plain);
  }

  // Starts one asynchronous operation and runs this connection's io_context on the calling
  // thread until it completes. A set `cancel` cancels the socket's operations, which then
  // complete with operation_aborted.
  template <class Start>
  beast::error_code run(Start start, const std::atomic<bool>* cancel = nullptr) {
    beast::error_code result;
    bool done = false;
    start([&](beast::error_code ec, auto&&...) {
      result = ec;
      done = true;
    });
    io.restart();
    bool cancelled = false;
    while (!done) {
      if (cancel != nullptr && !cancelled && cancel->load()) {
        cancelled = true;
        lowest().cancel();
      }
      io.run_for(kCancelPoll);
      if (io.stopped() && !done) io.restart();
    }
    return result;
  }

  // Closed by the server (or sent something unasked) while it sat idle.
  bool closed_by_peer() {
    pollfd fd{lowest().socket().native_handle(), POLLIN, 0};
    return poll(&fd, 1, 0) != 0;
  }
};

namespace {

BeastTransport::Origin parse_url(const std::string& url) {
  BeastTransport::Origin origin;
  std::size_t rest = 0;
  if (url.rfind("https://", 0) == 0) {
    origin.tls = true;
    rest = 8;
  } else if (url.rfind("http://", 0) == 0) {
    rest = 7;
  } else {
    throw TransportError("unsupported URL (http:// or https:// only): " + url);
  }
  const std::size_t path = url.find_first_of("/?", rest);
  origin.host_header = url.substr(rest, path == std::string::npos ? path : path - rest);
  origin.target = path == std::string::npos ? "/" : url.substr(path);
  if (origin.target.front() == '?') origin.target.insert(0, "/");
  std::string authority = origin.host_header;
  std::size_t port_colon = std::string::npos;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string::npos) throw TransportError("malformed URL host: " + url);
    origin.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') port_colon = close + 1;
  } else {
    port_colon = authority.rfind(':');
    origin.host = authority.substr(0, port_colon);
  }
  origin.port = port_colon == std::string::npos ? (origin.tls ? "443" : "80")
                                                : authority.substr(port_colon + 1);
  if (origin.host.empty() || origin.port.empty()) {
    throw TransportError("malformed URL host: " + url);
  }
  return origin;
}

http::request<http::string_body> build(const HttpRequest& request,
                                       const BeastTransport::Origin& origin) {
  const http::verb verb = http::string_to_verb(request.method);
  if (verb == http::verb::unknown) throw TransportError("unsupported method " + request.method);
  // Through a proxy a plain-HTTP request names its whole URL (absolute form, RFC 9112 3.2.2).
  const bool forwarded = origin.proxy != nullptr && !origin.tls;
  http::request<http::string_body> message(
      verb, forwarded ? "http://" + origin.host_header + origin.target : origin.target, 11);
  message.set(http::field::host, origin.host_header);
  if (forwarded) {
    if (auto authorization = origin.proxy->authorization()) {
      message.set(http::field::proxy_authorization, *authorization);
    }
  }
  bool has_content_type = false;
  for (const auto& [name, value] : request.headers) {
    message.set(name, value);
    has_content_type = has_content_type || lower(name) == "content-type";
  }
  if (!request.body.empty()) {
    if (!has_content_type) message.set(http::field::content_type, "application/json");
    message.body() = request.body;
  }
  message.prepare_payload();
  return message;
}

template <class Fields>
void copy_head(const http::response_header<Fields>& head, HttpResponse* out) {
  out->status = static_cast<int>(head.result_int());
  for (const auto& field : head) {
    out->headers.emplace_back(lower(std::string(field.name_string())), std::string(field.value()));
  }
}

std::string describe(const HttpRequest& request, const beast::error_code& ec) {
  return request.method + " " + request.url + ": " + ec.message();
}

struct Exchange {
  std::optional<HttpResponse> response;  // none: a reused connection failed, safe to repeat
  bool keep_alive = false;
};

// One request and its whole answer on `connection`.
Exchange exchange(BeastTransport::Connection& connection, const HttpRequest& request,
                  const http::request<http::string_body>& message, bool reused) {
  connection.lowest().expires_after(request.timeout);
  const beast::error_code write_error = connection.with_stream([&](auto& stream) {
    return connection.run([&](auto handler) { http::async_write(stream, message, handler); });
  });
  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  beast::error_code ec = write_error;
  if (!ec) {
    ec = connection.with_stream([&](auto& stream) {
      return connection.run(
          [&](auto handler) { http::async_read(stream, connection.buffer, parser, handler); });
    });
  }
  if (ec) {
    // A kept connection the server closed as this call began, and no answer came back: repeated
    // once on a fresh connection when that is safe, i.e. the request never left (the write
    // failed) or it is a GET. A POST the server may have read is left to the caller's retries.
    if (reused && !parser.got_some() && (write_error || request.method == "GET")) return {};
    throw TransportError(describe(request, ec));
  }
  Exchange done;
  done.response.emplace();
  copy_head(parser.get().base(), &*done.response);
  done.response->body = std::move(parser.get().body());
  done.keep_alive = parser.get().keep_alive() && parser.is_done();
  return done;
}

// Asks the proxy `connection` is connected to for a tunnel to the origin; returns once the tunnel
// is open, with nothing of the origin's read yet.
void open_tunnel(BeastTransport::Connection& connection, const BeastTransport::Origin& origin) {
  const ProxyUrl& proxy = *origin.proxy;
  const std::string target = origin.authority();
  http::request<http::empty_body> request(http::verb::connect, target, 11);
  request.set(http::field::host, target);
  if (auto authorization = proxy.authorization()) {
    request.set(http::field::proxy_authorization, *authorization);
  }
  beast::tcp_stream& tcp = connection.lowest();
  beast::error_code ec =
      connection.run([&](auto handler) { http::async_write(tcp, request, handler); });
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(kProxyBodyLimit);
  if (!ec) {
    ec = connection.run(
        [&](auto handler) { http::async_read_header(tcp, buffer, parser, handler); });
  }
  const std::string what = "proxy " + proxy.authority() + " (CONNECT " + target + ")";
  if (ec) throw TransportError(what + ": " + ec.message());
  const unsigned status = parser.get().result_int();
  if (status / 100 == 2) {
    // The origin speaks only after our ClientHello: bytes here are not the origin's.
    if (buffer.size() != 0) throw TransportError(what + ": data after the 2xx answer");
    return;
  }
  // The refusal's body says why (the egress gateway names the host it does not allow); a body
  // cut short is kept as far as it came.
  connection.run([&](auto handler) { http::async_read(tcp, buffer, parser, handler); });
  std::string body = std::move(parser.get().body());
  throw TransportError(what + " answered " + std::to_string(status) + " " +
                       std::string(parser.get().reason()) + (body.empty() ? "" : ": " + body));
}

}  // namespace

namespace {
BeastTransportOptions through(ProxyEnvironment proxies) {
  BeastTransportOptions options;
  options.proxies = std::move(proxies);
  return options;
}
}  // namespace

BeastTransport::BeastTransport(ProxyEnvironment proxies)
    : BeastTransport(through(std::move(proxies))) {}
BeastTransport::BeastTransport(BeastTransportOptions options) : options_(std::move(options)) {
  // A CA file that does not load fails at construction (the runner's start), not the first call.
  if (!options_.extra_ca_file.empty() || !options_.extra_ca_pem.empty()) tls_context();
}
BeastTransport::~BeastTransport() = default;

asio::ssl::context& BeastTransport::tls_context() {
  std::lock_guard lock(mutex_);
  if (!tls_) {
    auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    if (options_.ca_pem.empty()) {
      context->set_default_verify_paths();
    } else {
      context->add_certificate_authority(
          asio::buffer(options_.ca_pem.data(), options_.ca_pem.size()));
    }
    if (!options_.client_cert_pem.empty()) {
      context->use_certificate_chain(
          asio::buffer(options_.client_cert_pem.data(), options_.client_cert_pem.size()));
      context->use_private_key(
          asio::buffer(options_.client_key_pem.data(), options_.client_key_pem.size()),
          asio::ssl::context::pem);
    }
    if (!options_.extra_ca_file.empty()) {
      beast::error_code ec;
      context->load_verify_file(options_.extra_ca_file, ec);
      if (ec) {
        throw std::runtime_error("cannot load CA certificates from " + options_.extra_ca_file +
                                 ": " + ec.message());
      }
    }
    if (!options_.extra_ca_pem.empty()) {
      beast::error_code ec;
      context->add_certificate_authority(
          asio::buffer(options_.extra_ca_pem.data(), options_.extra_ca_pem.size()), ec);
      if (ec) throw std::runtime_error("cannot load the CA certificates given: " + ec.message());
    }
    context->set_verify_mode(options_.verify_peer ? asio::ssl::verify_peer
                                                  : asio::ssl::verify_none);
    tls_ = std::move(context);
  }
  return *tls_;
}

std::unique_ptr<BeastTransport::Connection> BeastTransport::connect(
    const Origin& origin, std::chrono::milliseconds timeout) {
  auto connection = std::make_unique<Connection>();
  connection->origin = origin.key();
  beast::error_code ec;
  tcp::resolver resolver(connection->io);
  // Through a proxy only the proxy's name is resolved here; the proxy resolves the origin's.
  const std::string& dial_host = origin.proxy ? origin.proxy->host : origin.host;
  const std::string& dial_port = origin.proxy ? origin.proxy->port : origin.port;
  const std::string dialled =
      origin.proxy ? "proxy " + origin.proxy->authority() + " for " + origin.host_header
                   : origin.host_header;
  const auto endpoints = resolver.resolve(dial_host, dial_port, ec);
  if (ec) {
    throw TransportError("cannot resolve " + (origin.proxy ? "proxy " : std::string()) + dial_host +
                         ": " + ec.message());
  }
  if (origin.tls) {
    connection->secure.emplace(connection->io, tls_context());
    SSL* ssl = connection->secure->native_handle();
    // Asio has OpenSSL free a connection's record buffers whenever they empty, so a kept-alive
    // connection allocated its 16 KiB read buffer again for every answer (operator_bench: most of
    // the request path's malloc, and glibc's consolidations after it). The few connections a
    // process keeps hold theirs.
    SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    // SNI names a host, never an address (RFC 6066 3); the certificate is checked against
    // either.
    beast::error_code not_an_address;
    asio::ip::make_address(origin.host, not_an_address);
    if (not_an_address && SSL_set_tlsext_host_name(ssl, origin.host.c_str()) != 1) {
      throw TransportError("cannot set the TLS server name " + origin.host);
    }
    if (options_.verify_peer) {
      connection->secure->set_verify_callback(asio::ssl::host_name_verification(origin.host));
    }
  } else {
    connection->plain.emplace(connection->io);
  }
  connection->lowest().expires_after(timeout);
  ec = connection->run(
      [&](auto handler) { connection->lowest().async_connect(endpoints, handler); });
  if (ec) throw TransportError("cannot connect to " + dialled + ": " + ec.message());
  // Over TLS a request's head and body leave as two records: with Nagle's algorithm the body
  // waits for the peer's delayed ACK of the head (up to 40 ms on Linux) before it is sent.
  beast::error_code no_delay_error;
  connection->lowest().socket().set_option(asio::ip::tcp::no_delay(true), no_delay_error);
  if (origin.proxy && origin.tls) open_tunnel(*connection, origin);
  if (origin.tls) {
    ec = connection->run([&](auto handler) {
      connection->secure->async_handshake(asio::ssl::stream_base::client, handler);
    });
    if (ec) {
      throw TransportError("TLS handshake with " + origin.host_header + " failed: " + ec.message());
    }
  }
  return connection;
}

std::unique_ptr<BeastTransport::Connection> BeastTransport::take_idle(const Origin& origin) {
  std::vector<std::unique_ptr<Connection>> stale;
  std::unique_ptr<Connection> found;
  {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    // Expired ones go. Of the origin's, the most recently used is taken (the likeliest still
    // open; the others age out), unless the server has closed it. Only the candidate is asked (a
    // poll each), not every idle connection of a shared pool.
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (now - (*it)->idle_since > options_.idle_reuse) {
        stale.push_back(std::move(*it));
        it = idle_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = idle_.end(); it != idle_.begin() && !found;) {
      --it;
      if ((*it)->origin != origin.key()) continue;
      if (!(*it)->closed_by_peer()) found = std::move(*it);
      if (!found) stale.push_back(std::move(*it));
      it = idle_.erase(it);
    }
  }
  return found;
}

void BeastTransport::keep_idle(std::unique_ptr<Connection> connection) {
  connection->idle_since = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  idle_.push_back(std::move(connection));
}

BeastTransport::Origin BeastTransport::route(const std::string& url) const {
  Origin origin = parse_url(url);
  origin.proxy = options_.proxies.proxy_for(origin.tls, origin.host, origin.port);
  return origin;
}

HttpResponse BeastTransport::send(const HttpRequest& request) {
  const Origin origin = route(request.url);
  const http::request<http::string_body> message = build(request, origin);
  if (std::unique_ptr<Connection> idle = take_idle(origin)) {
    Exchange done = exchange(*idle, request, message, /*reused=*/true);
    if (done.response) {
      if (done.keep_alive) keep_idle(std::move(idle));
      return std::move(*done.response);
    }
  }
  std::unique_ptr<Connection> fresh = connect(origin, request.timeout);
  Exchange done = exchange(*fresh, request, message, /*reused=*/false);
  if (done.keep_alive) keep_idle(std::move(fresh));
  return std::move(*done.response);
}

struct BeastTransport::Body::Parser {
  http::response_parser<http::buffer_body> parser;
  // A read that brought data and then broke: the data is handed over first, the error next.
  beast::error_code deferred;
  // What broke the body, for a stream's truncation reason.
  std::string failure;
};

BeastTransport::Body::Body(std::unique_ptr<Connection> connection, HttpRequest request)
    : connection_(std::move(connection)),
      parser_(std::make_unique<Parser>()),
      request_(std::move(request)) {
  parser_->parser.header_limit(kHeaderLimit);
  parser_->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
}

BeastTransport::Body::~Body() = default;

bool BeastTransport::Body::read_some(std::string* out, const std::atomic<bool>& cancel) {
  auto& parser = parser_->parser;
  if (parser_->deferred) {
    parser_->failure = parser_->deferred.message();
    throw TransportError(describe(request_, parser_->deferred));
  }
  std::array<char, kReadChunk> chunk{};
  while (!parser.is_done()) {
    if (cancel.load()) return false;
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    // Between reads the request's timeout is an idle timeout.
    connection_->lowest().expires_after(request_.timeout);
    beast::error_code ec = connection_->with_stream([&](auto& stream) {
      return connection_->run(
          [&](auto handler) {
            http::async_read_some(stream, connection_->buffer, parser, handler);
          },
          &cancel);
    });
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t got = chunk.size() - parser.get().body().size;
    out->append(chunk.data(), got);
    if (ec) {
      if (cancel.load()) return false;
      if (got > 0) {
        parser_->deferred = ec;
        return true;
      }
      parser_->failure = ec.message();
      throw TransportError(describe(request_, ec));
    }
    if (got > 0) return true;
  }
  return false;
}

std::unique_ptr<BeastTransport::Body> BeastTransport::open(const HttpRequest& request,
                                                           const std::atomic<bool>& cancel) {
  const Origin origin = route(request.url);
  const http::request<http::string_body> message = build(request, origin);
  std::unique_ptr<Body> body(new Body(connect(origin, request.timeout), request));
  Connection& connection = *body->connection_;
  connection.lowest().expires_after(request.timeout);
  beast::error_code ec = connection.with_stream([&](auto& stream) {
    return connection.run([&](auto handler) { http::async_write(stream, message, handler); },
                          &cancel);
  });
  if (!ec) {
    ec = connection.with_stream([&](auto& stream) {
      return connection.run(
          [&](auto handler) {
            http::async_read_header(stream, connection.buffer, body->parser_->parser, handler);
          },
          &cancel);
    });
  }
  if (ec) {
    if (cancel.load()) return nullptr;
    throw TransportError(describe(request, ec));
  }
  copy_head(body->parser_->parser.get().base(), &body->head_);
  return body;
}

HttpResponse BeastTransport::stream(const HttpRequest& request,
                                    const std::function<bool(std::string_view)>& on_chunk,
                                    const std::atomic<bool>& cancel) {
  std::unique_ptr<Body> body = open(request, cancel);
  if (!body) return HttpResponse{200, {}, {}, false, {}};
  HttpResponse out = body->head();
  const bool success = out.status >= 200 && out.status < 300;
  std::string chunk;
  while (true) {
    chunk.clear();
    bool more = false;
    try {
      more = body->read_some(&chunk, cancel);
    } catch (const TransportError&) {
      // The head arrived, then the connection broke: the caller resumes from its last event.
      if (!success) throw;
      out.truncated = true;
      out.truncation_reason = body->parser_->failure;
      break;
    }
    if (!chunk.empty()) {
      if (success) {
        if (!on_chunk(chunk)) break;
      } else {
        out.body += chunk;
      }
    }
    if (!more) break;
  }
  return out;
}

}  // namespace perimeter::agentapi
