#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace perimeter::agentapi {

struct HttpRequest {
  std::string method;  // GET, POST
  std::string url;     // absolute, query string included
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{60000};
};

struct HttpResponse {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  // stream(): the body broke off (connection cut mid-stream) after the head arrived.
  bool truncated = false;
  std::string truncation_reason;
  const std::string* header(std::string_view name) const;
};

// The HTTP boundary of the client: BeastTransport (CpprestTransport in the simulator's tests),
// fakes in unit tests.
// Implementations throw TransportError when no HTTP answer arrived.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual HttpResponse send(const HttpRequest& request) = 0;
  // Sends the request and hands the body to `on_chunk` as it arrives, until the server ends it,
  // `on_chunk` returns false, or `cancel` becomes true. A non-2xx answer is returned with its
  // whole body and `on_chunk` is not called. `timeout` is an idle timeout between chunks.
  virtual HttpResponse stream(const HttpRequest& request,
                              const std::function<bool(std::string_view chunk)>& on_chunk,
                              const std::atomic<bool>& cancel) = 0;
};

// One transport under many clients: they share its TLS context (a system CA store is loaded once,
// not once per client) and its pool of kept-alive connections.
class SharedHttpTransport final : public HttpTransport {
 public:
  explicit SharedHttpTransport(std::shared_ptr<HttpTransport> shared) : shared_(std::move(shared)) {}
  HttpResponse send(const HttpRequest& request) override { return shared_->send(request); }
  HttpResponse stream(const HttpRequest& request,
                      const std::function<bool(std::string_view chunk)>& on_chunk,
                      const std::atomic<bool>& cancel) override {
    return shared_->stream(request, on_chunk, cancel);
  }

 private:
  std::shared_ptr<HttpTransport> shared_;
};

// Waiting as an I/O boundary, so retry delays are asserted, not slept, in unit tests.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  virtual void sleep_for(std::chrono::milliseconds delay) = 0;
};

class RealSleeper final : public Sleeper {
 public:
  void sleep_for(std::chrono::milliseconds delay) override;
};

}  // namespace perimeter::agentapi
