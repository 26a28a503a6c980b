#include "kube/http_transport.h"

#include <cpprest/http_client.h>

#include <boost/asio/ssl.hpp>
#include <thread>

#include "kube/api_error.h"

namespace perimeter::kube {

namespace http = web::http;
namespace client = web::http::client;

namespace {

http::method method_of(const std::string& method) {
  if (method == "GET") return http::methods::GET;
  if (method == "POST") return http::methods::POST;
  if (method == "PUT") return http::methods::PUT;
  if (method == "PATCH") return http::methods::PATCH;
  if (method == "DELETE") return http::methods::DEL;
  return method;
}

http::http_request build_request(const HttpRequest& request, const std::string& authorization) {
  http::http_request out(method_of(request.method));
  out.set_request_uri(request.path_and_query);
  out.headers().add("Accept", "application/json");
  if (!authorization.empty()) out.headers().add("Authorization", authorization);
  for (const auto& [name, value] : request.headers) {
    if (name != "Content-Type") out.headers().add(name, value);
  }
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
      request.method == "PATCH") {
    auto content_type = request.headers.count("Content-Type") ? request.headers.at("Content-Type")
                                                              : std::string("application/json");
    out.set_body(request.body, content_type);
  }
  return out;
}

// Reads a streamed body piece by piece as the server sends it. producer_consumer_buffer's getn
// waits for the full count, so ask only for what is already there (or one byte to block on).
class HttpResponseStream final : public ResponseStream {
 public:
  HttpResponseStream(http::http_response response, pplx::cancellation_token_source cancel)
      : response_(std::move(response)), cancel_(std::move(cancel)) {}
  ~HttpResponseStream() override { cancel(); }

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
      if (eof_) {
        if (pending_.empty()) return std::nullopt;
        std::string tail = std::move(pending_);
        pending_.clear();
        scanned_ = 0;
        return tail;
      }
      fill();
    }
  }

  void cancel() override { cancel_.cancel(); }

 private:
  void fill() {
    auto buffer = response_.body().streambuf();
    try {
      const auto available = buffer.in_avail();
      const size_t want = available > 0 ? std::min<size_t>(available, sizeof(chunk_)) : 1;
      const size_t got = buffer.getn(reinterpret_cast<uint8_t*>(chunk_), want).get();
      if (got == 0) {
        eof_ = true;
        return;
      }
      pending_.append(chunk_, got);
    } catch (const std::exception& e) {
      if (cancel_.get_token().is_canceled()) {
        eof_ = true;
        return;
      }
      throw TransportError(std::string("watch stream failed: ") + e.what());
    }
  }

  http::http_response response_;
  pplx::cancellation_token_source cancel_;
  std::string pending_;
  size_t scanned_ = 0;
  bool eof_ = false;
  char chunk_[64 * 1024];
};

}  // namespace

void configure_tls(boost::asio::ssl::context& ctx, const std::string& ca_pem,
                   const std::string& client_cert_pem, const std::string& client_key_pem) {
  if (!ca_pem.empty()) {
    // The cluster's CA alone, as client-go trusts it: cpprest has already loaded the system's
    // CA bundle into this context (set_default_verify_paths), which would let any public CA
    // vouch for the apiserver, and which costs about half a megabyte per connection (a burst
    // of claims over many environments opens hundreds: bench/tenants).
    SSL_CTX_set_cert_store(ctx.native_handle(), X509_STORE_new());
    ctx.add_certificate_authority(boost::asio::buffer(ca_pem.data(), ca_pem.size()));
  }
  if (!client_cert_pem.empty()) {
    ctx.use_certificate_chain(boost::asio::buffer(client_cert_pem.data(), client_cert_pem.size()));
    ctx.use_private_key(boost::asio::buffer(client_key_pem.data(), client_key_pem.size()),
                        boost::asio::ssl::context::pem);
  }
}

HttpTransport::HttpTransport(Config config, Clock& clock)
    : config_(std::move(config)), clock_(clock), rate_limit_(config_.qps, config_.burst, clock) {
  if (config_.server.rfind("https://", 0) != 0 && config_.server.rfind("http://", 0) != 0)
    throw ConfigError("API server URL must start with https:// or http://: '" + config_.server +
                      "'");
}

HttpTransport::~HttpTransport() = default;

client::http_client& HttpTransport::client_for(std::chrono::milliseconds timeout) {
  std::lock_guard lock(mutex_);
  auto& slot = clients_[timeout];
  if (slot) return *slot;
  client::http_client_config cfg;
  cfg.set_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  cfg.set_validate_certificates(!config_.insecure_skip_tls_verify);
  const std::string ca = config_.ca_pem;
  const std::string cert = config_.client_cert_pem;
  const std::string key = config_.client_key_pem;
  cfg.set_ssl_context_callback(
      [ca, cert, key](boost::asio::ssl::context& ctx) { configure_tls(ctx, ca, cert, key); });
  slot = std::make_unique<client::http_client>(config_.server, cfg);
  return *slot;
}

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

HttpResponse HttpTransport::send(const HttpRequest& request) {
  wait_for_rate_limit();
  const auto timeout = request.timeout.count() > 0 ? request.timeout : config_.request_timeout;
  auto& http_client = client_for(timeout);
  try {
    auto response = http_client.request(build_request(request, authorization())).get();
    HttpResponse out;
    out.status = response.status_code();
    out.content_type = response.headers().content_type();
    out.body = response.extract_utf8string(/*ignore_content_type=*/true).get();
    return out;
  } catch (const http::http_exception& e) {
    throw TransportError(request.method + " " + request.path_and_query + " to " + config_.server +
                         " failed: " + e.what());
  } catch (const pplx::task_canceled&) {
    throw TransportError(request.method + " " + request.path_and_query + " was canceled");
  }
}

std::unique_ptr<ResponseStream> HttpTransport::open_stream(const HttpRequest& request) {
  wait_for_rate_limit();
  const auto timeout = request.timeout.count() > 0 ? request.timeout : config_.request_timeout;
  auto& http_client = client_for(timeout);
  pplx::cancellation_token_source cancel;
  try {
    auto response =
        http_client.request(build_request(request, authorization()), cancel.get_token()).get();
    if (response.status_code() < 200 || response.status_code() >= 300) {
      const int status = response.status_code();
      std::string body = response.extract_utf8string(true).get();
      throw ApiError::from_response(status, std::move(body),
                                    request.method + " " + request.path_and_query);
    }
    return std::make_unique<HttpResponseStream>(std::move(response), std::move(cancel));
  } catch (const http::http_exception& e) {
    throw TransportError(request.method + " " + request.path_and_query + " to " + config_.server +
                         " failed: " + e.what());
  }
}

}  // namespace perimeter::kube
