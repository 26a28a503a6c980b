#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agentapi/http_transport.h"
#include "core/proxy_env.h"

namespace boost::asio::ssl {
class context;
}

namespace perimeter::runner {

// HttpTransport over Boost.Beast for the runner pod: every call runs its I/O on the calling
// thread (no thread pool), TLS through OpenSSL with the system's CA store (`SSL_CERT_FILE`
// overrides it), the peer's certificate checked against the URL's host, SNI sent. An idle
// connection is kept for the next call to the same origin for up to `kIdleReuse`, unless the
// server has closed it meanwhile. Host names are resolved with the system resolver
// (getaddrinfo), synchronously: no resolver thread either. The runner's memory budget is why it
// exists (docs/runner.md); its behaviour is CpprestTransport's.
//
// Through a proxy (`proxies`, read once from HTTPS_PROXY / HTTP_PROXY / NO_PROXY at start): an
// https:// URL is reached through a `CONNECT host:port` tunnel, TLS then runs end to end with the
// API host exactly as direct; an http:// URL is sent to the proxy in absolute form, as httpx does.
// A proxy's refusal (407, 403) is a TransportError that keeps its status line and body.
class BeastTransport final : public agentapi::HttpTransport {
 public:
  // How long an idle connection stays reusable: below the usual server keep-alive timeouts, so
  // a call rarely races the server closing it.
  static constexpr std::chrono::milliseconds kIdleReuse{4000};

  explicit BeastTransport(ProxyEnvironment proxies = {});
  ~BeastTransport() override;
  BeastTransport(const BeastTransport&) = delete;
  BeastTransport& operator=(const BeastTransport&) = delete;

  agentapi::HttpResponse send(const agentapi::HttpRequest& request) override;
  agentapi::HttpResponse stream(const agentapi::HttpRequest& request,
                                const std::function<bool(std::string_view chunk)>& on_chunk,
                                const std::atomic<bool>& cancel) override;

  // Defined in the .cc, named here for its helpers.
  struct Connection;
  struct Origin;

 private:
  Origin route(const std::string& url) const;
  std::unique_ptr<Connection> connect(const Origin& origin, std::chrono::milliseconds timeout);
  std::unique_ptr<Connection> take_idle(const Origin& origin);
  void keep_idle(std::unique_ptr<Connection> connection);
  boost::asio::ssl::context& tls_context();

  const ProxyEnvironment proxies_;
  std::mutex mutex_;
  std::unique_ptr<boost::asio::ssl::context> tls_;  // made on the first https call
  std::vector<std::unique_ptr<Connection>> idle_;
};

}  // namespace perimeter::runner
