#include "fake_upstream.h"

#include <sstream>

namespace perimeter::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;

namespace {

namespace ssl = asio::ssl;

// One connection's reads and writes over `Stream`: the socket itself (a reference to it), or
// TLS over it. Closing closes the socket underneath either.
template <typename Stream>
class StreamConnection final : public UpstreamConnection {
 public:
  template <typename... Args>
  explicit StreamConnection(tcp::socket& socket, Args&&... stream_args)
      : socket_(socket), stream_(std::forward<Args>(stream_args)...) {}
  Stream& stream() { return stream_; }
  std::size_t write(asio::const_buffer bytes, beast::error_code& error) override {
    return asio::write(stream_, bytes, error);
  }
  std::size_t read_some(asio::mutable_buffer into, beast::error_code& error) override {
    return stream_.read_some(into, error);
  }
  bool read_request(beast::flat_buffer& buffer,
                    http::request<http::string_body>& request) override {
    beast::error_code error;
    http::read(stream_, buffer, request, error);
    return !error;
  }
  void close() override {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  tcp::socket& socket_;
  Stream stream_;
};
using PlainConnection = StreamConnection<tcp::socket&>;
using TlsConnection = StreamConnection<ssl::stream<tcp::socket&>>;

}  // namespace

bool UpstreamExchange::write(const std::string& bytes) {
  if (closed_) return false;
  beast::error_code error;
  connection_.write(asio::buffer(bytes), error);
  if (error) closed_ = true;
  return !error;
}

void UpstreamExchange::close() {
  connection_.close();
  closed_ = true;
}

void UpstreamExchange::close_when_peer_closes(char* scratch, boost::system::error_code* error) {
  while (!*error) connection_.read_some(asio::buffer(scratch, 1), *error);
  close();
}

FakeUpstream::FakeUpstream(Handler handler, const std::string& address, int port,
                           std::optional<TlsIdentity> tls)
    : handler_(std::move(handler)),
      address_(address),
      acceptor_(io_, tcp::endpoint(asio::ip::make_address(address), static_cast<uint16_t>(port))) {
  if (tls) {
    tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    tls_->use_certificate_chain(asio::buffer(tls->certificate_pem));
    tls_->use_private_key(asio::buffer(tls->key_pem), ssl::context::pem);
  }
  port_ = acceptor_.local_endpoint().port();
  accept_thread_ = std::thread([this] {
    for (;;) {
      beast::error_code error;
      tcp::socket socket(io_);
      acceptor_.accept(socket, error);
      if (error || stopping_) return;
      ++connections_;
      std::lock_guard lock(mutex_);
      threads_.emplace_back([this, s = std::move(socket)]() mutable { serve(std::move(s)); });
    }
  });
}

FakeUpstream::~FakeUpstream() {
  stopping_ = true;
  beast::error_code ignored;
  // Wakes the accept thread.
  {
    tcp::socket poke(io_);
    poke.connect(acceptor_.local_endpoint(), ignored);
  }
  accept_thread_.join();
  acceptor_.close(ignored);
  {
    std::lock_guard lock(mutex_);
    for (auto& socket : sockets_) {
      socket->shutdown(tcp::socket::shutdown_both, ignored);
    }
  }
  for (auto& thread : threads_) thread.join();
}

std::vector<http::request<http::string_body>> FakeUpstream::received() const {
  std::lock_guard lock(mutex_);
  return received_;
}

void FakeUpstream::serve(tcp::socket plain) {
  auto socket = std::make_shared<tcp::socket>(std::move(plain));
  {
    std::lock_guard lock(mutex_);
    sockets_.push_back(socket);
  }
  std::unique_ptr<UpstreamConnection> connection;
  if (tls_) {
    auto tls = std::make_unique<TlsConnection>(*socket, *socket, *tls_);
    beast::error_code error;
    tls->stream().handshake(ssl::stream_base::server, error);
    if (error) {
      ++failed_handshakes_;
      return;
    }
    connection = std::move(tls);
  } else {
    connection = std::make_unique<PlainConnection>(*socket, *socket);
  }
  beast::flat_buffer buffer;
  for (;;) {
    http::request<http::string_body> request;
    if (!connection->read_request(buffer, request) || stopping_) return;
    ++requests_;
    {
      std::lock_guard lock(mutex_);
      received_.push_back(request);
    }
    UpstreamExchange exchange(std::move(request), *connection);
    handler_(exchange);
    if (exchange.closed()) return;
  }
}

std::string http_reply(int status, const std::string& reason,
                       const std::vector<std::pair<std::string, std::string>>& headers,
                       const std::string& body) {
  std::ostringstream out;
  out << "HTTP/1.1 " << status << " " << reason << "\r\n";
  for (const auto& [name, value] : headers) out << name << ": " << value << "\r\n";
  out << "Content-Length: " << body.size() << "\r\n\r\n" << body;
  return out.str();
}

std::string chunked_head(int status, const std::string& content_type,
                         const std::vector<std::pair<std::string, std::string>>& headers) {
  std::ostringstream out;
  out << "HTTP/1.1 " << status << " OK\r\nContent-Type: " << content_type
      << "\r\nTransfer-Encoding: chunked\r\n";
  for (const auto& [name, value] : headers) out << name << ": " << value << "\r\n";
  out << "\r\n";
  return out.str();
}

std::string chunk(const std::string& bytes) {
  std::ostringstream out;
  out << std::hex << bytes.size() << "\r\n" << bytes << "\r\n";
  return out.str();
}

}  // namespace perimeter::testing
