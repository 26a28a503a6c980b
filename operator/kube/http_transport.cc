#include "kube/http_transport.h"

#include <atomic>
#include <thread>

#include "agentapi/api_error.h"
#include "agentapi/beast_transport.h"
#include "kube/api_error.h"

namespace perimeter::kube {

namespace {

// The server URL without a trailing slash: request paths start with one.
std::string base_of(const std::string& server) {
  std::string base = server;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base;
}

agentapi::BeastTransportOptions wire_options(const Config& config) {
  agentapi::BeastTransportOptions options;
  // The cluster's CA alone, as client-go trusts it: no public CA may vouch for the apiserver.
  // Without one (a kubeconfig with no certificate-authority-data) the system's CAs are trusted.
  options.ca_pem = config.ca_pem;
  options.client_cert_pem = config.client_cert_pem;
  options.client_key_pem = config.client_key_pem;
  options.verify_peer = !config.insecure_skip_tls_verify;
  // The apiserver keeps idle connections for 90 s; reusing one spares a TLS handshake.
  options.idle_reuse = std::chrono::seconds(60);
  return options;
}

// A response read line by line as it arrives, on the reading thread.
class BeastResponseStream final : public ResponseStream {
 public:
  BeastResponseStream(std::unique_ptr<agentapi::BeastTransport::Body> body,
                      std::shared_ptr<std::atomic<bool>> cancelled, std::string context)
      : body_(std::move(body)), cancelled_(std::move(cancelled)), context_(std::move(context)) {}

  std::optional<std::string> read_line() override {
    while (true) {
      const auto newline = pending_.find('\n', scanned_);
      if (newline != std::string::npos) {
        std::string line = pending_.substr(0, newline);
        pending_.erase(0, newline + 1);
        scanned_ = 0;
        return line;
      }
      scanned_ = pending_.size();
      if (ended_) {
        if (pending_.empty()) return std::nullopt;
        std::string tail = std::move(pending_);
        pending_.clear();
        scanned_ = 0;
        return tail;
      }
      try {
        ended_ = !body_->read_some(&pending_, *cancelled_);
      } catch (const agentapi::TransportError& e) {
        throw TransportError(context_ + ": watch stream failed: " + e.what());
      }
    }
  }

  // From another thread: the read in progress sees the flag within the transport's poll interval.
  void cancel() override { cancelled_->store(true); }

 private:
  std::unique_ptr<agentapi::BeastTransport::Body> body_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::string context_;
  std::string pending_;
  size_t scanned_ = 0;
  bool ended_ = false;
};

}  // namespace

HttpTransport::HttpTransport(Config config, Clock& clock)
    : config_(std::move(config)), clock_(clock), rate_limit_(config_.qps, config_.burst, clock) {
  if (config_.server.rfind("https://", 0) != 0 && config_.server.rfind("http://", 0) != 0)
    throw ConfigError("API server URL must start with https:// or http://: '" + config_.server +
                      "'");
  wire_ = std::make_unique<agentapi::BeastTransport>(wire_options(config_));
}

HttpTransport::~HttpTransport() = default;

std::string HttpTransport::authorization() {
  if (!config_.bearer_token_file.empty()) {
    std::lock_guard lock(mutex_);
    std::error_code ec;
    const auto mtime = std::filesystem::last_write_time(config_.bearer_token_file, ec);
    if (!ec && (cached_token_.empty() || mtime != cached_token_mtime_)) {
      std::string token = read_file_or_throw(config_.bearer_token_file, "bearer token");
      while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
      cached_token_ = std::move(token);
      cached_token_mtime_ = mtime;
    }
    // A briefly missing file during rotation keeps the last token rather than sending none.
    if (!cached_token_.empty()) return "Bearer " + cached_token_;
  }
  if (!config_.bearer_token.empty()) return "Bearer " + config_.bearer_token;
  return "";
}

void HttpTransport::wait_for_rate_limit() {
  const auto delay = rate_limit_.reserve();
  if (delay > Clock::Duration::zero()) std::this_thread::sleep_for(delay);
}

agentapi::HttpRequest HttpTransport::wire_request(const HttpRequest& request) {
  agentapi::HttpRequest out;
  out.method = request.method;
  out.url = base_of(config_.server) + request.path_and_query;
  out.timeout = request.timeout.count() > 0 ? request.timeout : config_.request_timeout;
  out.headers.emplace_back("Accept", "application/json");
  if (const std::string bearer = authorization(); !bearer.empty()) {
    out.headers.emplace_back("Authorization", bearer);
  }
  bool has_content_type = false;
  for (const auto& [name, value] : request.headers) {
    out.headers.emplace_back(name, value);
    has_content_type = has_content_type || name == "Content-Type";
  }
  // Writes say what they send even when the body is empty, as the apiserver expects.
  const bool write =
      request.method == "POST" || request.method == "PUT" || request.method == "PATCH";
  if (!has_content_type && (write || !request.body.empty())) {
    out.headers.emplace_back("Content-Type", "application/json");
  }
  out.body = request.body;
  return out;
}

HttpResponse HttpTransport::send(const HttpRequest& request) {
  wait_for_rate_limit();
  try {
    agentapi::HttpResponse answer = wire_->send(wire_request(request));
    HttpResponse out;
    out.status = answer.status;
    if (const std::string* type = answer.header("content-type")) out.content_type = *type;
    out.body = std::move(answer.body);
    return out;
  } catch (const agentapi::TransportError& e) {
    throw TransportError(request.method + " " + request.path_and_query + " to " + config_.server +
                         " failed: " + e.what());
  }
}

std::unique_ptr<ResponseStream> HttpTransport::open_stream(const HttpRequest& request) {
  wait_for_rate_limit();
  const std::string context = request.method + " " + request.path_and_query;
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<agentapi::BeastTransport::Body> body;
  try {
    body = wire_->open(wire_request(request), *cancelled);
  } catch (const agentapi::TransportError& e) {
    throw TransportError(context + " to " + config_.server + " failed: " + e.what());
  }
  if (!body) throw TransportError(context + " was cancelled before its answer");
  const int status = body->head().status;
  if (status < 200 || status >= 300) {
    std::string error_body;
    try {
      while (body->read_some(&error_body, *cancelled)) {
      }
    } catch (const agentapi::TransportError&) {
      // The status is the answer; a body cut short is kept as far as it came.
    }
    throw ApiError::from_response(status, std::move(error_body), context);
  }
  return std::make_unique<BeastResponseStream>(std::move(body), std::move(cancelled), context);
}

}  // namespace perimeter::kube
