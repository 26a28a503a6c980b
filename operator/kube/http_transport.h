#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "core/token_bucket.h"
#include "kube/config.h"
#include "kube/transport.h"

namespace perimeter::agentapi {
class BeastTransport;
struct HttpRequest;
}

namespace perimeter::kube {

// The real Transport: Boost.Beast over OpenSSL (agentapi::BeastTransport), every request and every
// read of a watch on the calling thread, so a request costs no hand-off between threads (cpprest's
// pool made that most of the operator's CPU per claim: docs/operator.md). Kept-alive connections
// are reused across requests; only the cluster's CA is trusted when the config names one; the
// client certificate is presented; every request, watches included, first takes a token from the
// client-side QPS/burst bucket.
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
  std::string authorization();
  void wait_for_rate_limit();
  // The request as sent: the server's URL, the credentials and the content type added.
  agentapi::HttpRequest wire_request(const HttpRequest& request);

  Config config_;
  Clock& clock_;
  TokenBucket rate_limit_;
  std::mutex mutex_;
  std::unique_ptr<agentapi::BeastTransport> wire_;
  // The token file is re-read when its modification time changes.
  std::string cached_token_;
  std::filesystem::file_time_type cached_token_mtime_{};
};

}  // namespace perimeter::kube
