#pragma once

#include <atomic>
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

namespace perimeter::agentapi {

// How a BeastTransport verifies its peers and presents itself.
struct BeastTransportOptions {
  // Read once at start from HTTPS_PROXY / HTTP_PROXY / NO_PROXY by the caller; empty: direct.
  ProxyEnvironment proxies;
  // PEM. Empty: the system's CA store (`SSL_CERT_FILE` overrides it). Set: these CAs alone, as
  // client-go trusts a cluster's CA, so no public CA can vouch for the peer.
  std::string ca_pem;
  // A PEM file of CAs trusted in addition to those (the runner's PERIMETER_API_CA_FILE, from an
  // AgentEnvironment's apiCAConfigMapRef); empty for none. A file that does not load makes the
  // constructor throw std::runtime_error.
  std::string extra_ca_file;
  // PEM text of CAs trusted in addition, as extra_ca_file (the operator's client of an
  // AgentEnvironment with apiCAConfigMapRef). Text that holds no certificate makes the
  // constructor throw.
  std::string extra_ca_pem;
  // PEM, both or neither: a client certificate presented in every TLS handshake.
  std::string client_cert_pem;
  std::string client_key_pem;
  // False only for a kubeconfig's insecure-skip-tls-verify.
  bool verify_peer = true;
  // How long an idle connection stays reusable: below the usual server keep-alive timeouts, so
  // a call rarely races the server closing it.
  std::chrono::milliseconds idle_reuse{4000};
};

// HttpTransport over Boost.Beast: every call runs its I/O on the calling thread (no thread pool,
// so no hand-off between threads per request), TLS through OpenSSL, the peer's certificate checked
// against the URL's host, SNI sent. An idle connection is kept for the next call to the same
// origin for up to `idle_reuse`, unless the server has closed it meanwhile. Host names are
// resolved with the system resolver (getaddrinfo), synchronously: no resolver thread either.
// perimeter-runner uses it for its memory budget (docs/runner.md), the operator for its CPU per
// claim (docs/operator.md).
//
// Through a proxy (`proxies`): an https:// URL is reached through a `CONNECT host:port` tunnel,
// TLS then runs end to end with the origin exactly as direct; an http:// URL is sent to the proxy
// in absolute form, as httpx does. A proxy's refusal (407, 403) is a TransportError that keeps its
// status line and body.
class BeastTransport final : public HttpTransport {
 public:
  // Defined in the .cc, named here for its helpers.
  struct Connection;
  struct Origin;

  // A response whose head has arrived and whose body is read as it comes, on the caller's thread.
  class Body {
   public:
    ~Body();
    Body(const Body&) = delete;
    Body& operator=(const Body&) = delete;
    // Status and lower-cased headers; `body` is empty.
    const HttpResponse& head() const { return head_; }
    // Appends what arrives next to `out`: false once the body has ended (or `cancel` was set).
    // A connection cut after the head throws TransportError. Between reads the request's
    // timeout is an idle timeout.
    bool read_some(std::string* out, const std::atomic<bool>& cancel);

   private:
    friend class BeastTransport;
    Body(std::unique_ptr<Connection> connection, HttpRequest request);
    struct Parser;
    std::unique_ptr<Connection> connection_;
    std::unique_ptr<Parser> parser_;
    HttpRequest request_;
    HttpResponse head_;
  };

  explicit BeastTransport(ProxyEnvironment proxies = {});
  explicit BeastTransport(BeastTransportOptions options);
  ~BeastTransport() override;
  BeastTransport(const BeastTransport&) = delete;
  BeastTransport& operator=(const BeastTransport&) = delete;

  HttpResponse send(const HttpRequest& request) override;
  HttpResponse stream(const HttpRequest& request,
                      const std::function<bool(std::string_view chunk)>& on_chunk,
                      const std::atomic<bool>& cancel) override;
  // Sends the request on a connection of its own and returns once the head has arrived (nullptr
  // when `cancel` was set first). Throws TransportError when no head arrives.
  std::unique_ptr<Body> open(const HttpRequest& request, const std::atomic<bool>& cancel);

 private:
  Origin route(const std::string& url) const;
  std::unique_ptr<Connection> connect(const Origin& origin, std::chrono::milliseconds timeout);
  std::unique_ptr<Connection> take_idle(const Origin& origin);
  void keep_idle(std::unique_ptr<Connection> connection);
  boost::asio::ssl::context& tls_context();

  const BeastTransportOptions options_;
  std::mutex mutex_;
  std::unique_ptr<boost::asio::ssl::context> tls_;  // made on the first https call
  std::vector<std::unique_ptr<Connection>> idle_;
};

}  // namespace perimeter::agentapi
