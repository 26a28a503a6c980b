#include "load_generator.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>

namespace perimeter::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

std::string host_header(const tcp::endpoint& endpoint) {
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

}  // namespace

// One keep-alive connection of the closed loop. `remaining` is shared by every connection of a
// phase: whoever finishes a request takes the next one while any is left.
struct LoadGenerator::Connection : std::enable_shared_from_this<LoadGenerator::Connection> {
  Connection(asio::io_context& io, const tcp::endpoint& endpoint, std::string path, int index)
      : socket(io),
        endpoint(endpoint),
        path(std::move(path)),
        host(host_header(endpoint)),
        next_id(index * 1000000) {
    connect();
  }

  void connect() {
    socket.connect(endpoint);
    socket.set_option(tcp::no_delay(true));
  }

  void next() {
    if (*remaining == 0 || broken) return;
    --*remaining;
    const std::string body =
        R"({"jsonrpc":"2.0","id":)" + std::to_string(++next_id) +
        R"(,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}})";
    request = "POST " + path + " HTTP/1.1\r\nHost: " + host +
              "\r\nContent-Type: application/json\r\nAccept: application/json, "
              "text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n\r\n" + body;
    started = Clock::now();
    asio::async_write(socket, asio::buffer(request),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->fail(ec.message());
                        self->parser.emplace();
                        self->parser->body_limit(1 << 20);
                        http::async_read(
                            self->socket, self->buffer, *self->parser,
                            [self](beast::error_code ec, std::size_t) { self->done(ec); });
                      });
  }

  void done(beast::error_code ec) {
    if (ec) return fail(ec.message());
    const auto latency = Clock::now() - started;
    const auto& reply = parser->get();
    if (reply.result() != http::status::ok ||
        reply.body().find("\"result\"") == std::string::npos) {
      ++phase->errors;
    } else {
      phase->latencies_us.push_back(std::chrono::duration<double, std::micro>(latency).count());
    }
    if (!reply.keep_alive()) {
      // The server ended the connection after this reply: open another, as a client would.
      ++phase->reconnects;
      beast::error_code ignored;
      socket.close(ignored);
      buffer.clear();
      try {
        connect();
      } catch (const std::exception& e) {
        return fail(std::string("reconnect: ") + e.what());
      }
    }
    next();
  }

  void fail(const std::string& why) {
    ++phase->errors;
    broken = true;
    error = why;
  }

  tcp::socket socket;
  tcp::endpoint endpoint;
  std::string path;
  std::string host;
  long next_id;
  std::string request;
  beast::flat_buffer buffer;
  std::optional<http::response_parser<http::string_body>> parser;
  Clock::time_point started;
  int* remaining = nullptr;
  LoadPhase* phase = nullptr;
  bool broken = false;
  std::string error;
};

LoadGenerator::LoadGenerator(tcp::endpoint endpoint, std::string path, int concurrency) {
  for (int i = 0; i < concurrency; ++i) {
    connections_.push_back(std::make_shared<Connection>(io_, endpoint, path, i));
  }
}

LoadGenerator::~LoadGenerator() = default;

LoadPhase LoadGenerator::run(int requests) {
  LoadPhase phase;
  phase.latencies_us.reserve(static_cast<std::size_t>(requests));
  int remaining = requests;
  for (auto& connection : connections_) {
    connection->remaining = &remaining;
    connection->phase = &phase;
  }
  const auto started = Clock::now();
  for (auto& connection : connections_) connection->next();
  io_.restart();
  io_.run_for(std::chrono::seconds(300));
  if (!io_.stopped()) {
    // A proxy that stopped answering: leave the loop (the pending operations die with io_).
    throw std::runtime_error("no end to the phase after 300 s (" + std::to_string(remaining) +
                             " requests not sent)");
  }
  phase.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  for (auto& connection : connections_) {
    if (connection->broken)
      throw std::runtime_error("a load connection broke: " + connection->error);
  }
  return phase;
}

struct IdleStreams::Stream : std::enable_shared_from_this<IdleStreams::Stream> {
  explicit Stream(asio::io_context& io) : socket(io) {}

  void open(const tcp::endpoint& endpoint, const std::string& path, IdleStreams* owner,
            std::function<void()> settled) {
    request = "GET " + path + " HTTP/1.1\r\nHost: " + host_header(endpoint) +
              "\r\nAccept: text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\r\n";
    socket.async_connect(endpoint, [self = shared_from_this(), owner,
                                    settled = std::move(settled)](beast::error_code ec) mutable {
      if (ec) return self->give_up(owner, settled);
      asio::async_write(
          self->socket, asio::buffer(self->request),
          [self, owner, settled = std::move(settled)](beast::error_code ec, std::size_t) mutable {
            if (ec) return self->give_up(owner, settled);
            http::async_read_header(self->socket, self->buffer, self->parser,
                                    [self, owner, settled = std::move(settled)](
                                        beast::error_code ec, std::size_t) mutable {
                                      if (ec || self->parser.get().result() != http::status::ok) {
                                        return self->give_up(owner, settled);
                                      }
                                      ++owner->open_;
                                      settled();
                                    });
          });
    });
  }

  void give_up(IdleStreams* owner, std::function<void()>& settled) {
    ++owner->failed_;
    beast::error_code ignored;
    socket.close(ignored);
    settled();
  }

  tcp::socket socket;
  std::string request;
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> parser;
};

IdleStreams::IdleStreams(tcp::endpoint endpoint, const std::string& path, int count, int parallel) {
  int started = 0;
  std::function<void()> start_one = [&] {
    if (started == count) return;
    ++started;
    auto stream = std::make_shared<Stream>(io_);
    streams_.push_back(stream);
    stream->open(endpoint, path, this, [&] { start_one(); });
  };
  for (int i = 0; i < parallel && i < count; ++i) start_one();
  io_.run_for(std::chrono::seconds(60));
}

IdleStreams::~IdleStreams() {
  beast::error_code ignored;
  for (auto& stream : streams_) stream->socket.close(ignored);
}

}  // namespace perimeter::bench
