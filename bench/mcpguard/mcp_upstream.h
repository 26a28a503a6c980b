#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <thread>

namespace perimeter::bench {

// A minimal, fast MCP Streamable HTTP server on 127.0.0.1 (a free port), on one thread of its
// own, keep-alive throughout:
// - POST /mcp: the JSON-RPC reply as `application/json`;
// - POST /mcp/sse: the same reply as `text/event-stream`, one `message` event (chunked);
// - GET with `Accept: text/event-stream`: a stream that is opened (headers sent) and stays quiet
//   until the client closes it.
// It reads only the request's `"id":` value, so that the proxies' cost is what the figures show.
class McpUpstream {
 public:
  McpUpstream();
  ~McpUpstream();
  McpUpstream(const McpUpstream&) = delete;
  McpUpstream& operator=(const McpUpstream&) = delete;

  unsigned short port() const { return port_; }
  // GET streams open right now.
  int open_streams() const { return open_streams_.load(); }

 private:
  void accept();

  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  std::atomic<int> open_streams_{0};
  std::thread thread_;
};

// The JSON-RPC id in `body` as it is written there ("7", "\"a\""), or "null" when there is none.
std::string jsonrpc_id_text(const std::string& body);

}  // namespace perimeter::bench
