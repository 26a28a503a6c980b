#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace perimeter::localcluster {

// A deliberately small HTTP/1.1 client (one request per connection, TLS with a client
// certificate, chunked bodies, line streaming for watches). It exists so the harness can probe
// /readyz and create Nodes, and so the smoke tests can speak raw HTTPS; Perimeter's own code talks
// to Kubernetes through the operator's client, not through this.
struct HttpClientConfig {
  std::string base_url;  // http://127.0.0.1:2379 or https://127.0.0.1:6443
  std::string ca_file;   // verifies the server when set; without it the server is not verified
  std::string cert_file;
  std::string key_file;
  std::chrono::milliseconds timeout{10000};  // connect, and each read or write
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// A byte stream a response is parsed from: a TCP or TLS connection, or a fake in unit tests.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to `size` bytes. Returns the count, 0 at end of stream, or -1 when no byte arrived
  // within the read timeout (the caller may try again). Throws std::runtime_error on failure.
  virtual long read_some(char* buffer, size_t size) = 0;
};

// Parses an HTTP/1.1 response from `source`: status line, headers, then a body framed by
// Content-Length, chunked transfer encoding, or the end of the connection. `on_head` (optional)
// sees the status and headers before the body; each piece of body is handed to `on_body` as it
// arrives (so watches can stream); `on_body` returns false to stop.
// `keep_waiting` is asked whenever a read times out; returning false abandons the response.
// Throws std::runtime_error on a malformed response, naming what was wrong.
HttpResponse read_http_response(ByteSource& source,
                                const std::function<void(const HttpResponse&)>& on_head,
                                const std::function<bool(std::string_view)>& on_body,
                                const std::function<bool()>& keep_waiting);

// Splits a byte stream into lines, for newline-delimited JSON such as Kubernetes watch events.
class LineSplitter {
 public:
  // Feeds bytes; calls on_line for each complete line. Returns false if on_line asked to stop.
  bool feed(std::string_view bytes, const std::function<bool(std::string_view)>& on_line);

 private:
  std::string pending_;
};

class HttpClient {
 public:
  explicit HttpClient(HttpClientConfig config);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One request; the whole body is returned whatever the status (error bodies included).
  // Throws std::runtime_error, naming the URL, when the server cannot be reached or answers
  // something that is not HTTP.
  HttpResponse request(std::string_view method, std::string_view path, std::string_view body = {},
                       std::string_view content_type = "application/json");
  HttpResponse get(std::string_view path) { return request("GET", path); }

  enum class StreamEnd { kServerClosed, kStopped };
  // GETs `path` and passes each line of the body to on_line until the server ends the response
  // (kServerClosed) or on_line returns false or *stop becomes true (kStopped). A non-2xx answer
  // throws with the server's body. Network errors throw.
  StreamEnd stream_lines(std::string_view path,
                         const std::function<bool(std::string_view)>& on_line,
                         const std::atomic<bool>* stop, HttpResponse* response_head = nullptr);

  const std::string& base_url() const { return config_.base_url; }

 private:
  struct Connection;
  std::unique_ptr<Connection> connect();

  HttpClientConfig config_;
  bool tls_ = false;
  std::string host_;
  int port_ = 0;
  struct TlsContext;
  std::unique_ptr<TlsContext> tls_context_;
};

}  // namespace perimeter::localcluster
