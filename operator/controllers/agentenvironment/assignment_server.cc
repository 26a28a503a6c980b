#include "controllers/agentenvironment/assignment_server.h"

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <list>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_name.h"

namespace perimeter::agentenvironment {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr int kWorkerThreads = 2;

// A request is a header and, for a confirm, {"work_id": "..."}: anything bigger is not ours.
constexpr std::size_t kMaxBodyBytes = 4096;
constexpr std::size_t kMaxHeaderBytes = 8192;

// What every connection shares, owned by the server.
struct ConnectionContext {
  WarmAssignmentService& service;
  asio::ssl::context& tls;
  const AssignmentServerOptions& options;
  asio::io_context& workers;
};

// The server's TLS settings with this certificate and key; throws std::runtime_error (without
// the key's text) when they do not load.
void load_certificate(asio::ssl::context& tls, const std::string& chain_pem,
                      const std::string& key_pem) {
  try {
    tls.use_certificate_chain(asio::buffer(chain_pem));
    tls.use_private_key(asio::buffer(key_pem), asio::ssl::context::pem);
  } catch (const std::exception& error) {
    throw std::runtime_error(std::string("the assignment service's certificate or key does not "
                                         "load: ") +
                             error.what());
  }
}

class Connection;

}  // namespace

struct AssignmentServer::Impl {
  Impl(WarmAssignmentService& service, const std::string& chain_pem, const std::string& key_pem,
       Logger logger, AssignmentServerOptions options)
      : service(service),
        tls(asio::ssl::context::tls_server),
        logger(std::move(logger)),
        options(std::move(options)),
        acceptor(io) {
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    load_certificate(tls, chain_pem, key_pem);
  }

  void accept();
  void wake_all();

  WarmAssignmentService& service;
  asio::ssl::context tls;
  Logger logger;
  AssignmentServerOptions options;
  asio::io_context io;
  tcp::acceptor acceptor;
  // The service's decisions: apiserver reads and writes, off the I/O thread.
  asio::io_context workers;
  asio::executor_work_guard<asio::io_context::executor_type> workers_busy{workers.get_executor()};
  std::vector<std::thread> worker_threads;
  std::thread io_thread;
  std::uint16_t port = 0;
  bool started = false;
  std::atomic<bool> stopped{false};
  ConnectionContext context{service, tls, options, workers};
  // Touched on the I/O thread only.
  std::list<std::weak_ptr<Connection>> connections;
};

namespace {

// One client connection, on the I/O thread: TLS handshake, then requests one at a time; a fetch
// with nothing to hand out waits on its timer until the hold ends, a wake, or the recheck.
class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, ConnectionContext& server)
      : stream_(std::move(socket), server.tls),
        server_(server),
        timer_(stream_.get_executor()),
        idle_(stream_.get_executor()) {}

  void start() {
    arm_idle();
    stream_.async_handshake(asio::ssl::stream_base::server,
                            [self = shared_from_this()](beast::error_code ec) {
                              if (ec) return self->close();
                              self->read();
                            });
  }

  // Held fetches ask again now.
  void wake() {
    if (holding_) timer_.cancel();
  }

  void close() {
    beast::error_code ignored;
    closed_ = true;
    timer_.cancel();
    idle_.cancel();
    stream_.next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.next_layer().close(ignored);
  }

 private:
  void arm_idle() {
    idle_.expires_after(server_.options.idle_timeout);
    idle_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock(); self && !self->holding_ && !self->deciding_) self->close();
    });
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(kMaxBodyBytes);
    parser_->header_limit(kMaxHeaderBytes);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) return close();
    idle_.cancel();
    const auto& message = parser_->get();
    keep_alive_ = message.keep_alive();
    const auto authorization = message[http::field::authorization];
    authorization_.assign(authorization.data(), authorization.size());
    const auto nonce = message[beast::string_view(WarmAssignmentService::kNonceHeader.data(),
                                                  WarmAssignmentService::kNonceHeader.size())];
    nonce_.assign(nonce.data(), nonce.size());
    body_ = message.body();
    const std::string target(message.target());
    if (target == "/v1/assignment" && message.method() == http::verb::get) {
      route_ = Route::kFetch;
      held_until_ = std::chrono::steady_clock::now() + server_.options.hold;
      return decide();
    }
    if (target == "/v1/assignment/confirm" && message.method() == http::verb::post) {
      route_ = Route::kConfirm;
      return decide();
    }
    respond({404, nlohmann::json{{"error", "no such endpoint"}}});
  }

  // The service's answer, computed on a worker and handed back to the I/O thread.
  void decide() {
    deciding_ = true;
    asio::post(server_.workers, [self = shared_from_this()] {
      AssignmentAnswer answer;
      try {
        answer = self->route_ == Route::kFetch
                     ? self->server_.service.fetch(self->authorization_, self->nonce_)
                     : self->server_.service.confirm(self->authorization_, self->body_);
      } catch (const std::exception& error) {
        answer = {500, nlohmann::json{{"error", error.what()}}};
      }
      asio::post(self->stream_.get_executor(), [self, answer = std::move(answer)]() mutable {
        self->on_decided(std::move(answer));
      });
    });
  }

  void on_decided(AssignmentAnswer answer) {
    deciding_ = false;
    if (closed_) return;
    const auto now = std::chrono::steady_clock::now();
    if (route_ == Route::kFetch && answer.status == 204 && now < held_until_) {
      // Nothing yet: held until a wake, the recheck, or the end of the hold.
      holding_ = true;
      timer_.expires_after(std::min<std::chrono::steady_clock::duration>(server_.options.recheck,
                                                                         held_until_ - now));
      timer_.async_wait([self = shared_from_this()](beast::error_code) {
        self->holding_ = false;
        if (!self->closed_) self->decide();
      });
      return;
    }
    respond(std::move(answer));
  }

  void respond(AssignmentAnswer answer) {
    response_ = {};
    response_.version(11);
    response_.result(static_cast<http::status>(answer.status));
    response_.set(http::field::cache_control, "no-store");
    if (answer.status != 204) {
      response_.set(http::field::content_type, "application/json");
      response_.body() = answer.body.dump();
    }
    response_.keep_alive(keep_alive_);
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        // The answer may hold a work secret: not kept past its write.
                        self->response_.body().clear();
                        if (ec || !self->keep_alive_) return self->close();
                        self->arm_idle();
                        self->read();
                      });
  }

  enum class Route { kFetch, kConfirm };

  asio::ssl::stream<tcp::socket> stream_;
  ConnectionContext& server_;
  asio::steady_timer timer_;
  asio::steady_timer idle_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  Route route_ = Route::kFetch;
  std::string authorization_;
  std::string nonce_;
  std::string body_;
  std::chrono::steady_clock::time_point held_until_;
  bool keep_alive_ = false;
  bool holding_ = false;
  bool deciding_ = false;
  bool closed_ = false;
};

}  // namespace

void AssignmentServer::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || stopped) return;
      logger.warn("assignment service: accept failed", {{"error", ec.message()}});
      return accept();
    }
    // An answer's head and body are two TLS records: without this the body waits for the
    // runner's delayed ACK of the head.
    beast::error_code no_delay_error;
    socket.set_option(tcp::no_delay(true), no_delay_error);
    auto connection = std::make_shared<Connection>(std::move(socket), context);
    connections.remove_if([](const std::weak_ptr<Connection>& c) { return c.expired(); });
    connections.push_back(connection);
    connection->start();
    accept();
  });
}

void AssignmentServer::Impl::wake_all() {
  for (const auto& weak : connections) {
    if (auto connection = weak.lock()) connection->wake();
  }
}

AssignmentServer::AssignmentServer(WarmAssignmentService& service,
                                   const std::string& certificate_chain_pem,
                                   const std::string& private_key_pem, Logger logger,
                                   AssignmentServerOptions options)
    : impl_(std::make_unique<Impl>(service, certificate_chain_pem, private_key_pem,
                                   std::move(logger), std::move(options))) {}

AssignmentServer::~AssignmentServer() {
  stop();
}

void AssignmentServer::start() {
  if (impl_->started) return;
  const tcp::endpoint endpoint(asio::ip::make_address(impl_->options.address), impl_->options.port);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->started = true;
  impl_->accept();
  for (int i = 0; i < kWorkerThreads; ++i) {
    impl_->worker_threads.emplace_back([this, i] {
      name_this_thread("assign/" + std::to_string(i));
      impl_->workers.run();
    });
  }
  impl_->io_thread = std::thread([this] {
    name_this_thread("assign-io");
    impl_->io.run();
  });
}

void AssignmentServer::stop() {
  if (!impl_->started || impl_->stopped) return;
  std::promise<void> closed;
  asio::post(impl_->io, [this, &closed] {
    impl_->stopped = true;
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    for (const auto& weak : impl_->connections) {
      if (auto connection = weak.lock()) connection->close();
    }
    closed.set_value();
  });
  closed.get_future().wait();
  // Decisions in flight finish; their answers then meet closed connections, and a closed
  // connection asks for no more.
  impl_->workers_busy.reset();
  for (auto& worker : impl_->worker_threads) {
    if (worker.joinable()) worker.join();
  }
  impl_->io.stop();
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
}

std::uint16_t AssignmentServer::port() const {
  return impl_->port;
}

void AssignmentServer::replace_certificate(const std::string& certificate_chain_pem,
                                           const std::string& private_key_pem) {
  // Loaded into a scratch context first, so a pair that does not load changes nothing.
  asio::ssl::context check(asio::ssl::context::tls_server);
  load_certificate(check, certificate_chain_pem, private_key_pem);
  const auto swap = [this, &certificate_chain_pem, &private_key_pem] {
    // An SSL object copies the context's certificate when it is made, so the connections open
    // now keep the one they shook hands with.
    load_certificate(impl_->tls, certificate_chain_pem, private_key_pem);
  };
  if (!impl_->started || impl_->stopped) return swap();
  // On the I/O thread, where connections are made: none is made between the two halves.
  std::promise<void> swapped;
  asio::post(impl_->io, [&] {
    try {
      swap();
      swapped.set_value();
    } catch (...) {
      swapped.set_exception(std::current_exception());
    }
  });
  swapped.get_future().get();
}

void AssignmentServer::wake() {
  if (!impl_->started) return;
  asio::post(impl_->io, [this] { impl_->wake_all(); });
}

}  // namespace perimeter::agentenvironment
