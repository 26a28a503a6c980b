#include "gateway/tunnel.h"

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/cidr.h"
#include "core/strings.h"
#include "gateway/address_policy.h"
#include "gateway/audit_record.h"
#include "gateway/client_hello.h"
#include "gateway/credentials.h"

namespace perimeter::egressgateway {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kUseAwaitable = asio::use_awaitable;
constexpr auto kResponseTimeout = std::chrono::seconds(5);

std::string endpoint_text(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

std::array<std::uint8_t, 16> address_bytes(const asio::ip::address& address) {
  std::array<std::uint8_t, 16> bytes{};
  if (address.is_v4()) {
    const auto v4 = address.to_v4().to_bytes();
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    std::copy(v4.begin(), v4.end(), bytes.begin() + 12);
  } else {
    const auto v6 = address.to_v6().to_bytes();
    std::copy(v6.begin(), v6.end(), bytes.begin());
  }
  return bytes;
}

struct RequestHead {
  std::string method;
  std::string target;
  std::string proxy_authorization;
  int proxy_authorization_count = 0;
};

// The request line and the one header the gateway reads; nullopt when it is not HTTP/1.x.
std::optional<RequestHead> parse_head(std::string_view head) {
  RequestHead parsed;
  const auto line_end = head.find("\r\n");
  const auto line = head.substr(0, line_end);
  const auto first_space = line.find(' ');
  const auto second_space =
      first_space == std::string_view::npos ? first_space : line.find(' ', first_space + 1);
  if (first_space == std::string_view::npos || second_space == std::string_view::npos ||
      first_space == 0 || second_space == first_space + 1 ||
      !line.substr(second_space + 1).starts_with("HTTP/1.")) {
    return std::nullopt;
  }
  parsed.method = std::string(line.substr(0, first_space));
  parsed.target = std::string(line.substr(first_space + 1, second_space - first_space - 1));
  std::size_t position = line_end + 2;
  while (position < head.size()) {
    const auto end = head.find("\r\n", position);
    if (end == std::string_view::npos || end == position) break;
    const auto field = head.substr(position, end - position);
    position = end + 2;
    const auto colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    std::string name(field.substr(0, colon));
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "proxy-authorization") {
      parsed.proxy_authorization = trim(field.substr(colon + 1));
      ++parsed.proxy_authorization_count;
    }
  }
  return parsed;
}

}  // namespace

struct Connection::State {
  State(tcp::socket client_socket, ConnectionHost& connection_host, bool limit)
      : host(connection_host),
        client(std::move(client_socket)),
        upstream(client.get_executor()),
        deadline(client.get_executor()),
        over_limit(limit) {}

  ConnectionHost& host;
  tcp::socket client;
  tcp::socket upstream;
  asio::steady_timer deadline;
  bool over_limit;
  std::uint64_t deadline_generation = 0;
  bool timed_out = false;
  bool idle_timed_out = false;
  bool cut = false;
  bool tunnel_open = false;
  Clock::time_point started = Clock::now();
  Clock::time_point last_activity = Clock::now();
  AuditRecord record;

  void close_sockets() {
    error_code ignored;
    client.close(ignored);
    upstream.close(ignored);
  }

  // Closes both sockets when `limit` passes before disarm(): a phase's timeout.
  void arm(std::chrono::milliseconds limit) {
    const auto generation = ++deadline_generation;
    timed_out = false;
    deadline.expires_after(limit);
    deadline.async_wait([this, generation](const error_code& error) {
      if (error || generation != deadline_generation) return;
      timed_out = true;
      close_sockets();
    });
  }
  void disarm() {
    ++deadline_generation;
    deadline.cancel();
  }

  // While the tunnel relays: closes it once neither direction moved for `idle`.
  void watch_idle(std::chrono::milliseconds idle) {
    const auto generation = ++deadline_generation;
    deadline.expires_at(last_activity + idle);
    deadline.async_wait([this, generation, idle](const error_code& error) {
      if (error || generation != deadline_generation) return;
      if (Clock::now() - last_activity >= idle) {
        idle_timed_out = true;
        close_sockets();
        return;
      }
      watch_idle(idle);
    });
  }

  // Answers with a short plain-text body and `Connection: close`.
  asio::awaitable<void> respond(int status, std::string_view phrase, std::string_view body,
                                std::string_view extra_headers = "") {
    std::string response = "HTTP/1.1 " + std::to_string(status) + " " + std::string(phrase) +
                           "\r\n" + std::string(extra_headers) +
                           "Content-Type: text/plain; charset=utf-8\r\nContent-Length: " +
                           std::to_string(body.size() + 1) + "\r\nConnection: close\r\n\r\n" +
                           std::string(body) + "\n";
    arm(std::chrono::duration_cast<std::chrono::milliseconds>(kResponseTimeout));
    error_code error;
    co_await asio::async_write(client, asio::buffer(response),
                               asio::redirect_error(kUseAwaitable, error));
    disarm();
  }

  // Relays `from` to `to` until EOF (propagated as a half-close) or an error (closes both). The
  // chunk buffer exists only while bytes are moving, so an idle tunnel holds none.
  asio::awaitable<void> relay(tcp::socket& from, tcp::socket& to, std::uint64_t& counter) {
    error_code error;
    for (;;) {
      co_await from.async_wait(tcp::socket::wait_read, asio::redirect_error(kUseAwaitable, error));
      if (error) break;
      const auto chunk = std::make_unique<char[]>(kRelayChunkBytes);
      for (;;) {
        const std::size_t count =
            from.read_some(asio::buffer(chunk.get(), kRelayChunkBytes), error);
        if (error == asio::error::would_block || error == asio::error::try_again) {
          error.clear();
          break;
        }
        if (error == asio::error::eof) {
          error_code ignored;
          to.shutdown(tcp::socket::shutdown_send, ignored);
          co_return;
        }
        if (error) break;
        last_activity = Clock::now();
        co_await asio::async_write(to, asio::buffer(chunk.get(), count),
                                   asio::redirect_error(kUseAwaitable, error));
        if (error) break;
        counter += count;
        last_activity = Clock::now();
      }
      if (error) break;
    }
    close_sockets();
  }
};

Connection::Connection(tcp::socket client, ConnectionHost& host, bool over_limit)
    : state_(std::make_unique<State>(std::move(client), host, over_limit)) {}

Connection::~Connection() = default;

tcp::socket::executor_type Connection::executor() const {
  return state_->client.get_executor();
}

void Connection::cut() {
  asio::post(state_->client.get_executor(), [self = shared_from_this()] {
    self->state_->cut = true;
    self->state_->close_sockets();
  });
}

asio::awaitable<void> Connection::run() {
  auto self = shared_from_this();  // the timer's handlers use state_ until run() ends
  State& s = *state_;
  auto& record = s.record;
  record.time = std::chrono::system_clock::now();
  error_code error;
  {
    const auto peer = s.client.remote_endpoint(error);
    record.client = error ? "" : endpoint_text(peer);
  }
  const auto snapshot = s.host.snapshot();
  const GatewayConfig& config = snapshot->config;
  std::string metric_environment = "(unknown)";

  auto finish = [&](bool allowed, std::string reason) {
    s.disarm();
    s.close_sockets();
    record.allowed = allowed;
    record.reason = std::move(reason);
    record.duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - s.started).count();
    s.host.metrics().connection(metric_environment, allowed, record.reason);
    if (record.bytes_up != 0 || record.bytes_down != 0) {
      s.host.metrics().bytes(record.bytes_up, record.bytes_down);
    }
    if (s.tunnel_open) s.host.metrics().tunnel_closed();
    s.host.audit().write_line(audit_line(record));
  };

  if (s.over_limit) {
    s.host.metrics().max_connections_refused();
    co_await s.respond(503, "Service Unavailable", "the egress gateway is at max_connections");
    finish(false, "max_connections");
    co_return;
  }

  // 1. The request head, within client_hello_timeout_ms like the ClientHello after it.
  std::string buffered;
  s.arm(config.client_hello_timeout);
  const std::size_t head_size = co_await asio::async_read_until(
      s.client, asio::dynamic_buffer(buffered, kMaxRequestHeadBytes), "\r\n\r\n",
      asio::redirect_error(kUseAwaitable, error));
  s.disarm();
  if (error == asio::error::not_found) {
    co_await s.respond(431, "Request Header Fields Too Large", "the request head is over 8 KiB");
    finish(false, "head_too_large");
    co_return;
  }
  if (error) {
    finish(false, s.timed_out ? "head_timeout" : "client_closed");
    co_return;
  }
  const auto head = parse_head(std::string_view(buffered).substr(0, head_size));
  // Bytes after the head (a client that sends its ClientHello without waiting for the 200).
  std::string early = buffered.substr(head_size);
  if (!head) {
    co_await s.respond(400, "Bad Request", "not an HTTP/1.1 request");
    finish(false, "bad_request");
    co_return;
  }
  if (head->method != "CONNECT") {
    co_await s.respond(405, "Method Not Allowed",
                       "only CONNECT host:port is served (HTTPS through the tunnel)",
                       "Allow: CONNECT\r\n");
    finish(false, "method_not_allowed");
    co_return;
  }

  // 2. Who asks: the session's credential names its environment.
  const auto credential =
      head->proxy_authorization_count > 1
          ? CredentialCheck{std::nullopt, "repeated"}
          : verify_proxy_authorization(head->proxy_authorization, snapshot->credentials_key);
  if (!credential.identity) {
    s.host.logger().debug("bad proxy credential",
                          {{"client", record.client}, {"failure", credential.failure}});
    co_await s.respond(407, "Proxy Authentication Required",
                       "a valid session credential is required",
                       "Proxy-Authenticate: Basic realm=\"perimeter-egress\"\r\n");
    finish(false, "bad_credentials");
    co_return;
  }
  record.environment = credential.identity->environment;
  record.session = credential.identity->session;
  const Environment* environment = config.find_environment(record.environment);
  if (environment == nullptr) {
    co_await s.respond(403, "Forbidden",
                       "environment " + record.environment + " has no egress allow-list");
    finish(false, "unknown_environment");
    co_return;
  }
  metric_environment = environment->name;

  // 3. Where to: a name on the environment's allow-list.
  std::string host_text;
  std::string port_text;
  int port = 0;
  if (!split_host_port(head->target, &host_text, &port_text) ||
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port).ec !=
          std::errc() ||
      std::to_string(port) != port_text || port < 1 || port > 65535) {
    co_await s.respond(400, "Bad Request", "the CONNECT target must be host:port");
    finish(false, "bad_target");
    co_return;
  }
  record.host = normalize_host(host_text);
  record.port = port;
  if (host_text.starts_with('[') || parse_ip_address(record.host)) {
    co_await s.respond(403, "Forbidden",
                       "IP addresses are not served here; ask for an allowed host name");
    finish(false, "ip_literal");
    co_return;
  }
  if (!valid_dns_name(record.host)) {
    co_await s.respond(400, "Bad Request", "the CONNECT host is not a DNS name");
    finish(false, "bad_target");
    co_return;
  }
  if (!environment_allows(*environment, record.host, static_cast<std::uint16_t>(port))) {
    co_await s.respond(
        403, "Forbidden",
        record.host + ":" + port_text + " is not on the allow-list of " + environment->name);
    finish(false, "not_allowed");
    co_return;
  }

  // 4. The name's addresses, every one of them outside the forbidden ranges, then the upstream
  // connection: before the 200, so the client gets a status for these failures.
  tcp::resolver resolver(s.client.get_executor());
  s.arm(config.connect_timeout);
  const auto resolved = co_await resolver.async_resolve(record.host, port_text,
                                                        asio::redirect_error(kUseAwaitable, error));
  if (error || resolved.empty()) {
    const bool timed_out = s.timed_out;
    s.disarm();
    if (timed_out) {
      finish(false, "connect_timeout");
      co_return;
    }
    co_await s.respond(502, "Bad Gateway", "cannot resolve " + record.host);
    finish(false, "resolve_failed");
    co_return;
  }
  std::vector<tcp::endpoint> endpoints;
  for (const auto& entry : resolved) {
    const auto address = entry.endpoint().address();
    // A name with any forbidden address is refused whole: one more lookup could pick it.
    if (const auto why = forbidden_address_reason(address_bytes(address),
                                                  config.testing_allow_loopback_upstreams)) {
      s.disarm();
      s.host.logger().warn("forbidden upstream address", {{"host", record.host},
                                                          {"address", address.to_string()},
                                                          {"range", *why},
                                                          {"environment", record.environment},
                                                          {"session", record.session}});
      co_await s.respond(403, "Forbidden",
                         record.host + " resolves to a forbidden address (" + *why + ")");
      finish(false, "forbidden_address");
      co_return;
    }
    endpoints.push_back(entry.endpoint());
  }
  const auto connect_started = Clock::now();
  const auto connected = co_await asio::async_connect(s.upstream, endpoints,
                                                      asio::redirect_error(kUseAwaitable, error));
  const bool connect_timed_out = s.timed_out;
  s.disarm();
  if (error) {
    if (connect_timed_out) {
      // The deadline closed the client too: nobody is left to answer.
      finish(false, "connect_timeout");
      co_return;
    }
    co_await s.respond(502, "Bad Gateway", "cannot connect to " + record.host);
    finish(false, "connect_failed");
    co_return;
  }
  s.host.metrics().connect_latency(
      std::chrono::duration<double>(Clock::now() - connect_started).count());
  record.upstream = endpoint_text(connected);
  s.upstream.set_option(tcp::no_delay(true), error);
  s.client.set_option(tcp::no_delay(true), error);

  // 5. The tunnel is open; no byte of the client's reaches the upstream until the ClientHello's
  // SNI names the CONNECT host.
  static constexpr std::string_view kEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";
  s.arm(config.client_hello_timeout);
  co_await asio::async_write(s.client, asio::buffer(kEstablished),
                             asio::redirect_error(kUseAwaitable, error));
  s.tunnel_open = true;
  s.host.metrics().tunnel_opened();
  if (error) {
    finish(false, s.timed_out ? "client_hello_timeout" : "client_closed");
    co_return;
  }
  std::string hello = std::move(early);
  ClientHelloScan scan = scan_client_hello(hello);
  while (scan.status == ClientHelloScan::Status::kIncomplete) {
    const std::size_t before = hello.size();
    hello.resize(kMaxClientHelloBytes);
    const std::size_t count = co_await s.client.async_read_some(
        asio::buffer(hello.data() + before, hello.size() - before),
        asio::redirect_error(kUseAwaitable, error));
    hello.resize(before + count);
    if (error) break;
    scan = scan_client_hello(hello);
  }
  const bool hello_timed_out = s.timed_out;
  s.disarm();
  std::string refusal;
  switch (scan.status) {
    case ClientHelloScan::Status::kIncomplete:
      refusal = hello_timed_out ? "client_hello_timeout" : "client_closed";
      break;
    case ClientHelloScan::Status::kNotTls:
      refusal = "no_tls";
      break;
    case ClientHelloScan::Status::kMalformed:
      refusal = "malformed_client_hello";
      break;
    case ClientHelloScan::Status::kTooLarge:
      refusal = "client_hello_too_large";
      break;
    case ClientHelloScan::Status::kComplete:
      if (scan.server_name.empty()) {
        refusal = "no_sni";
      } else if (normalize_host(scan.server_name) != record.host) {
        refusal = "sni_mismatch";
      }
      break;
  }
  if (!refusal.empty()) {
    s.host.logger().info("tunnel refused", {{"reason", refusal},
                                            {"host", record.host},
                                            {"environment", record.environment},
                                            {"session", record.session}});
    finish(false, refusal);
    co_return;
  }

  // 6. The relay: the buffered hello first, then both directions until both have ended.
  s.last_activity = Clock::now();
  co_await asio::async_write(s.upstream, asio::buffer(hello),
                             asio::redirect_error(kUseAwaitable, error));
  if (error) {
    finish(true, s.cut ? "shutdown" : "upstream_closed");
    co_return;
  }
  record.bytes_up += hello.size();
  // An idle tunnel keeps no buffer: the hello's and the head's go before the relay starts.
  std::string().swap(hello);
  std::string().swap(buffered);
  error_code ignored;
  s.client.non_blocking(true, ignored);
  s.upstream.non_blocking(true, ignored);
  s.watch_idle(config.idle_timeout);
  asio::steady_timer downstream_done(s.client.get_executor(), Clock::time_point::max());
  bool downstream_finished = false;
  asio::co_spawn(s.client.get_executor(), s.relay(s.upstream, s.client, record.bytes_down),
                 [&](const std::exception_ptr&) {
                   downstream_finished = true;
                   downstream_done.cancel();
                 });
  co_await s.relay(s.client, s.upstream, record.bytes_up);
  if (!downstream_finished) {
    co_await downstream_done.async_wait(asio::redirect_error(kUseAwaitable, error));
  }
  finish(true, s.cut ? "shutdown" : s.idle_timed_out ? "idle_timeout" : "ok");
}

}  // namespace perimeter::egressgateway
