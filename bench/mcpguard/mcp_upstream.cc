#include "mcp_upstream.h"

#include <array>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <optional>
#include <string>

namespace perimeter::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class UpstreamSession : public std::enable_shared_from_this<UpstreamSession> {
 public:
  UpstreamSession(tcp::socket socket, std::atomic<int>* open_streams)
      : socket_(std::move(socket)), open_streams_(open_streams) {}

  void read() {
    parser_.emplace();
    parser_->body_limit(1 << 20);
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (!ec) self->answer();
                     });
  }

 private:
  void answer() {
    const auto& request = parser_->get();
    if (request.method() == http::verb::get) return open_stream();
    reply_ = {};
    reply_.version(11);
    reply_.keep_alive(request.keep_alive());
    if (request.method() != http::verb::post) {
      reply_.result(http::status::method_not_allowed);
      reply_.prepare_payload();
    } else {
      reply_.result(http::status::ok);
      const std::string result = R"({"jsonrpc":"2.0","id":)" + jsonrpc_id_text(request.body()) +
                                 R"(,"result":{"content":[{"type":"text","text":"ok"}],)"
                                 R"("isError":false}})";
      if (request.target() == "/mcp/sse") {
        reply_.set(http::field::content_type, "text/event-stream");
        reply_.set(http::field::cache_control, "no-cache");
        reply_.body() = "event: message\ndata: " + result + "\n\n";
        reply_.chunked(true);
      } else {
        reply_.set(http::field::content_type, "application/json");
        reply_.body() = result;
        reply_.prepare_payload();
      }
    }
    http::async_write(socket_, reply_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return;
                        if (!self->reply_.keep_alive()) {
                          self->socket_.shutdown(tcp::socket::shutdown_send, ec);
                          return;
                        }
                        self->read();
                      });
  }

  void open_stream() {
    stream_head_ = {http::status::ok, 11};
    stream_head_.set(http::field::content_type, "text/event-stream");
    stream_head_.set(http::field::cache_control, "no-cache");
    stream_head_.chunked(true);
    stream_serializer_.emplace(stream_head_);
    http::async_write_header(socket_, *stream_serializer_,
                             [self = shared_from_this()](beast::error_code ec, std::size_t) {
                               if (ec) return;
                               ++*self->open_streams_;
                               self->hold();
                             });
  }

  // The stream stays quiet; reading only notices the client leaving.
  void hold() {
    socket_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) {
                                --*self->open_streams_;
                                return;
                              }
                              self->hold();
                            });
  }

  tcp::socket socket_;
  std::atomic<int>* open_streams_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> reply_;
  http::response<http::empty_body> stream_head_;
  std::optional<http::response_serializer<http::empty_body>> stream_serializer_;
  std::array<char, 512> scratch_{};
};

}  // namespace

std::string jsonrpc_id_text(const std::string& body) {
  const auto key = body.find("\"id\"");
  if (key == std::string::npos) return "null";
  auto start = body.find(':', key + 4);
  if (start == std::string::npos) return "null";
  ++start;
  while (start < body.size() && body[start] == ' ') ++start;
  auto end = start;
  if (end < body.size() && body[end] == '"') {
    end = body.find('"', end + 1);
    if (end == std::string::npos) return "null";
    ++end;
  } else {
    while (end < body.size() && body[end] != ',' && body[end] != '}' && body[end] != ' ') ++end;
  }
  return end > start ? body.substr(start, end - start) : "null";
}

McpUpstream::McpUpstream() : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  acceptor_.listen(asio::socket_base::max_listen_connections);
  port_ = acceptor_.local_endpoint().port();
  accept();
  thread_ = std::thread([this] { io_.run(); });
}

McpUpstream::~McpUpstream() {
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

void McpUpstream::accept() {
  acceptor_.async_accept([this](boost::beast::error_code ec, tcp::socket socket) {
    if (ec) return;
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<UpstreamSession>(std::move(socket), &open_streams_)->read();
    accept();
  });
}

}  // namespace perimeter::bench
