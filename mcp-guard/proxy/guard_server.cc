#include "proxy/guard_server.h"

#include <stdexcept>

namespace perimeter::mcpguard {

RouteListener::RouteListener(const IoContexts& contexts, std::shared_ptr<RouteContext> route,
                             SessionRegistry& registry)
    : contexts_(contexts),
      route_(std::move(route)),
      registry_(registry),
      acceptor_(*contexts.front()) {}

void RouteListener::listen(const std::string& host, const std::string& port) {
  const std::string where = "route \"" + route_->name() + "\": listen " + host + ":" + port;
  beast::error_code error;
  tcp::resolver resolver(*contexts_.front());
  const auto resolved = resolver.resolve(host, port, tcp::resolver::passive, error);
  if (error || resolved.empty()) {
    throw std::runtime_error(where + ": cannot resolve: " + error.message());
  }
  const tcp::endpoint endpoint = resolved.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), error);
  if (!error) acceptor_.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) acceptor_.bind(endpoint, error);
  if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
  if (error) throw std::runtime_error(where + ": " + error.message());
}

std::string RouteListener::bound_address() const {
  const auto endpoint = acceptor_.local_endpoint();
  const auto address = endpoint.address();
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

void RouteListener::start() {
  asio::dispatch(acceptor_.get_executor(), [self = shared_from_this()] { self->accept(); });
}

void RouteListener::stop() {
  asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
    beast::error_code ignored;
    self->acceptor_.close(ignored);
  });
}

void RouteListener::accept() {
  asio::io_context& context = *contexts_[next_context_];
  next_context_ = (next_context_ + 1) % contexts_.size();
  acceptor_.async_accept(
      context, [self = shared_from_this()](beast::error_code error, TcpSocket socket) {
        if (error == asio::error::operation_aborted || !self->acceptor_.is_open()) return;
        if (!error) {
          auto session =
              std::make_shared<ClientSession>(std::move(socket), self->route_, self->registry_);
          self->registry_.add(session);
          session->start();
        } else {
          // Out of descriptors and the like: keep accepting; the log says why connections fail.
          self->route_->logger().warn(
              "accept failed", {{"route", self->route_->name()}, {"error", error.message()}});
        }
        self->accept();
      });
}

GuardServer::GuardServer(const GuardConfig& config, GuardMetrics& metrics, AuditSink& audit_sink,
                         const Clock& clock, Logger logger, int threads)
    : clock_(clock), logger_(std::move(logger)) {
  for (int i = 0; i < threads; ++i) {
    // Concurrency hint 1: one thread runs each context, so handlers it posts itself skip the
    // reactor's wake-up.
    contexts_.push_back(std::make_unique<asio::io_context>(1));
  }
  for (const auto& route : config.routes) {
    routes_.push_back(
        std::make_shared<RouteContext>(route.name, make_route_policy(config, route, nullptr, clock),
                                       metrics, audit_sink, clock, logger_));
  }
}

GuardServer::~GuardServer() {
  for (const auto& context : contexts_) context->stop();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void GuardServer::listen() {
  for (const auto& route : routes_) {
    auto listener = std::make_shared<RouteListener>(contexts_, route, registry_);
    const auto policy = route->policy();
    listener->listen(policy->route.listen_host, policy->route.listen_port);
    listeners_.push_back(std::move(listener));
  }
}

std::vector<std::pair<std::string, std::string>> GuardServer::bound_addresses() const {
  std::vector<std::pair<std::string, std::string>> addresses;
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    addresses.emplace_back(routes_[i]->name(), listeners_[i]->bound_address());
  }
  return addresses;
}

void GuardServer::run() {
  for (const auto& context : contexts_) work_.emplace_back(context->get_executor());
  for (const auto& listener : listeners_) listener->start();
  for (const auto& context : contexts_) {
    threads_.emplace_back([this, io = context.get()] {
      // Every session's errors end in its handlers; an exception here is a bug worth seeing.
      try {
        io->run();
      } catch (const std::exception& error) {
        logger_.error("I/O thread failed", {{"error", error.what()}});
        throw;
      }
    });
  }
}

void GuardServer::apply(const GuardConfig& config) {
  // Every route's new policy is made before any is published: a CA file that cannot be read
  // leaves the whole config refused and the old one in force.
  std::vector<std::shared_ptr<const RoutePolicy>> policies;
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    const auto previous = routes_[i]->policy();
    policies.push_back(make_route_policy(config, config.routes[i], previous.get(), clock_));
  }
  for (std::size_t i = 0; i < routes_.size(); ++i) routes_[i]->set_policy(std::move(policies[i]));
}

void GuardServer::expire_server_requests() {
  for (const auto& route : routes_) route->expire_server_requests();
}

bool GuardServer::shut_down(std::chrono::seconds grace) {
  for (const auto& listener : listeners_) listener->stop();
  registry_.shut_down_all();
  const bool drained = registry_.wait_until_empty(grace);
  work_.clear();
  for (const auto& context : contexts_) context->stop();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
  // The requests servers sent that no client answered get their lines before the process ends.
  for (const auto& route : routes_) route->flush_server_requests();
  return drained;
}

}  // namespace perimeter::mcpguard
