#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "core/token_bucket.h"
#include "kube/config.h"
#include "kube/transport.h"

namespace web::http::client {
class http_client;
}
namespace boost::asio::ssl {
class context;
}

namespace perimeter::kube {

// Sets up a TLS context for the apiserver: with `ca_pem`, that CA is the only one trusted (the
// defaults the HTTP library loaded are dropped); with a client certificate, it is presented.
void configure_tls(boost::asio::ssl::context& ctx, const std::string& ca_pem,
                   const std::string& client_cert_pem, const std::string& client_key_pem);

// The real Transport: cpprestsdk over OpenSSL. One http_client (and so one connection pool) per
// timeout in use, reused across requests; client certificates and the CA go in through the SSL
// context callback; every request, watches included, first takes a token from the client-side
// QPS/burst bucket.
class HttpTransport final : public Transport {
 public:
  explicit HttpTransport(Config config, Clock& clock = SystemClock::instance());
  ~HttpTransport() override;
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  HttpResponse send(const HttpRequest& request) override;
  std::unique_ptr<ResponseStream> open_stream(const HttpRequest& request) override;

  const Config& config() const { return config_; }

 private:
  web::http::client::http_client& client_for(std::chrono::milliseconds timeout);
  std::string authorization();
  void wait_for_rate_limit();

  Config config_;
  Clock& clock_;
  TokenBucket rate_limit_;
  std::mutex mutex_;
  std::map<std::chrono::milliseconds, std::unique_ptr<web::http::client::http_client>> clients_;
  // The token file is re-read when its modification time changes.
  std::string cached_token_;
  std::filesystem::file_time_type cached_token_mtime_{};
};

}  // namespace perimeter::kube
