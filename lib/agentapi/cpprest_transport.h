#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agentapi/http_transport.h"

namespace web::http::client {
class http_client;
}

namespace perimeter::agentapi {

// HttpTransport over cpprestsdk's http_client. One http_client (and its connection pool) per
// base URL and timeout, reused across calls. SSE is read from the response body stream as the
// bytes arrive (cpprestsdk hands the response over once the headers are in).
class CpprestTransport final : public HttpTransport {
 public:
  CpprestTransport();
  ~CpprestTransport() override;
  HttpResponse send(const HttpRequest& request) override;
  HttpResponse stream(const HttpRequest& request,
                      const std::function<bool(std::string_view chunk)>& on_chunk,
                      const std::atomic<bool>& cancel) override;

 private:
  web::http::client::http_client& client_for(const std::string& base,
                                             std::chrono::milliseconds timeout);

  std::mutex mutex_;
  std::map<std::pair<std::string, long long>, std::unique_ptr<web::http::client::http_client>>
      clients_;
};

}  // namespace perimeter::agentapi
