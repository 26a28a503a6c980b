#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace perimeter::kube {

struct HttpRequest {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  // Path and query relative to the server, already escaped: "/api/v1/namespaces/a/pods?limit=5".
  std::string path_and_query;
  std::map<std::string, std::string> headers;
  std::string body;
  // Zero means the transport's default.
  std::chrono::milliseconds timeout{0};
};

struct HttpResponse {
  int status = 0;
  std::string body;
  std::string content_type;
};

// A response read as it arrives, one newline-terminated line at a time (a watch).
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // The next line without its newline; nullopt when the server closed the stream. A last line
  // without its newline (a truncated stream) is returned as it is, for the decoder to reject.
  // Throws TransportError when the connection fails.
  virtual std::optional<std::string> read_line() = 0;
  // Ends the stream from another thread; a blocked read_line() returns soon after.
  virtual void cancel() = 0;
};

// The HTTP boundary of the Kubernetes client: everything above it speaks to this interface, so
// unit tests put a fake here and integration tests the real HTTPS implementation.
class Transport {
 public:
  virtual ~Transport() = default;
  // Sends a request and reads the whole answer. Throws TransportError when there is no answer;
  // any HTTP status, 4xx and 5xx included, is returned for the caller to interpret.
  virtual HttpResponse send(const HttpRequest& request) = 0;
  // Opens a streaming request. On a non-2xx answer throws ApiError with the server's body.
  virtual std::unique_ptr<ResponseStream> open_stream(const HttpRequest& request) = 0;
};

}  // namespace perimeter::kube
