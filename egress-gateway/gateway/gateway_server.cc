#include "gateway/gateway_server.h"

#include <stdexcept>

namespace perimeter::egressgateway {
namespace {

// The coroutine frame holds the connection (its parameter) until run() has finished.
asio::awaitable<void> run_connection(std::shared_ptr<Connection> connection) {
  co_await connection->run();
}

}  // namespace

GatewayServer::GatewayServer(std::shared_ptr<const GatewaySnapshot> snapshot,
                             GatewayMetrics& metrics, AuditSink& audit, Logger logger, int threads)
    : metrics_(metrics),
      audit_(audit),
      logger_(std::move(logger)),
      thread_count_(threads),
      acceptor_(io_),
      snapshot_(std::move(snapshot)) {}

GatewayServer::~GatewayServer() {
  io_.stop();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void GatewayServer::listen() {
  const auto& listen = snapshot()->config.listen;
  std::string host;
  std::string port;
  split_host_port(listen, &host, &port);
  if (host.starts_with('[')) host = host.substr(1, host.size() - 2);
  error_code error;
  const auto address = asio::ip::make_address(host, error);
  if (error) throw std::runtime_error("listen " + listen + ": not an IP address");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(std::stoi(port)));
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(endpoint, error);
  if (error) throw std::runtime_error("listen " + listen + ": " + error.message());
  acceptor_.listen(asio::socket_base::max_listen_connections);
}

std::string GatewayServer::bound_address() const {
  error_code error;
  const auto endpoint = acceptor_.local_endpoint(error);
  if (error) return "";
  const auto address = endpoint.address();
  return (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
         std::to_string(endpoint.port());
}

void GatewayServer::run() {
  asio::co_spawn(io_, accept_loop(), asio::detached);
  for (int i = 0; i < thread_count_; ++i) {
    threads_.emplace_back([this] { io_.run(); });
  }
}

asio::awaitable<void> GatewayServer::accept_loop() {
  for (;;) {
    error_code error;
    auto socket = co_await acceptor_.async_accept(asio::make_strand(io_),
                                                  asio::redirect_error(asio::use_awaitable, error));
    if (stopping_) co_return;
    if (error) {
      if (error == asio::error::operation_aborted) co_return;
      // Out of descriptors and the like: say so and keep serving the connections that are open.
      logger_.warn("accept failed", {{"error", error.message()}});
      asio::steady_timer pause(io_, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, error));
      continue;
    }
    start_connection(std::move(socket));
  }
}

void GatewayServer::start_connection(tcp::socket socket) {
  std::uint64_t id = 0;
  bool over_limit = false;
  std::shared_ptr<Connection> connection;
  {
    std::lock_guard lock(mutex_);
    over_limit = static_cast<int>(open_.size()) >= snapshot_->config.max_connections;
    connection = std::make_shared<Connection>(std::move(socket), *this, over_limit);
    id = ++next_id_;
    open_.emplace(id, connection);
  }
  auto executor = connection->executor();
  asio::co_spawn(executor, run_connection(connection),
                 [this, id](const std::exception_ptr& failure) {
                   if (failure) {
                     try {
                       std::rethrow_exception(failure);
                     } catch (const std::exception& error) {
                       logger_.error("connection failed", {{"error", error.what()}});
                     }
                   }
                   std::lock_guard lock(mutex_);
                   open_.erase(id);
                 });
}

void GatewayServer::apply(std::shared_ptr<const GatewaySnapshot> snapshot) {
  std::lock_guard lock(mutex_);
  snapshot_ = std::move(snapshot);
}

std::shared_ptr<const GatewaySnapshot> GatewayServer::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

int GatewayServer::open_connections() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(open_.size());
}

bool GatewayServer::shut_down(std::chrono::milliseconds grace) {
  stopping_ = true;
  asio::post(io_, [this] {
    error_code ignored;
    acceptor_.close(ignored);
  });
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (open_connections() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const bool drained = open_connections() == 0;
  if (!drained) {
    std::vector<std::shared_ptr<Connection>> left;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, weak] : open_) {
        if (auto connection = weak.lock()) left.push_back(std::move(connection));
      }
    }
    logger_.warn("cutting tunnels still open after the grace period", {{"tunnels", left.size()}});
    for (const auto& connection : left) connection->cut();
    left.clear();
    // Cut connections write their audit lines within a moment.
    const auto cut_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (open_connections() > 0 && std::chrono::steady_clock::now() < cut_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  io_.stop();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
  return drained;
}

}  // namespace perimeter::egressgateway
