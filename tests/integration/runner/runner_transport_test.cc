// BeastTransport against scripted loopback servers: what goes on the wire, what comes back,
// connection reuse, timeouts, event streams delivered as they arrive, cancel, truncation, TLS
// with certificate and host name checks, and the way through an HTTP proxy (CONNECT tunnels for
// https, absolute-form requests for http, refusals, NO_PROXY).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agentapi/beast_transport.h"

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
// clang-format on

#include "agentapi/api_error.h"
#include "agentapi/sim_process.h"
#include "core/base64.h"
#include "core/proxy_env.h"
#include "egressgateway/gateway_process.h"

namespace perimeter::runner {
namespace {

using agentapi::BeastTransport;
using agentapi::BeastTransportOptions;
using agentapi::HttpRequest;
using agentapi::TransportError;
using namespace std::chrono_literals;

void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

// One request (head, and a body of its Content-Length); "" when the peer closed first.
std::string read_request(int fd) {
  std::string text;
  char buffer[4096];
  std::size_t body_from = std::string::npos;
  std::size_t length = 0;
  while (true) {
    if (body_from == std::string::npos) {
      if (const std::size_t end = text.find("\r\n\r\n"); end != std::string::npos) {
        body_from = end + 4;
        std::string head = text.substr(0, end);
        for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (const std::size_t at = head.find("content-length: "); at != std::string::npos) {
          length = std::stoul(head.substr(at + 16));
        }
      }
    }
    if (body_from != std::string::npos && text.size() >= body_from + length) return text;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return "";
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return std::string(size) + std::string(data) + "\r\n";
}

// A loopback server that hands each accepted connection, one at a time, to `serve`.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int fd)> serve) : serve_(std::move(serve)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 8), 0);
    socklen_t size = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        {
          std::lock_guard lock(mutex_);
          open_.push_back(fd);
          ++accepted_;
        }
        serve_(fd);
        ::close(fd);
        std::lock_guard lock(mutex_);
        std::erase(open_, fd);
      }
    });
  }
  ~ScriptedServer() {
    ::shutdown(listener_, SHUT_RDWR);
    {
      std::lock_guard lock(mutex_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    thread_.join();
    ::close(listener_);
  }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int port() const { return port_; }
  int accepted() {
    std::lock_guard lock(mutex_);
    return accepted_;
  }

 private:
  std::function<void(int fd)> serve_;
  int listener_ = -1;
  int port_ = 0;
  std::mutex mutex_;
  std::vector<int> open_;
  int accepted_ = 0;
  std::thread thread_;
};

HttpRequest request(const std::string& method, const std::string& url, std::string body = "") {
  HttpRequest out;
  out.method = method;
  out.url = url;
  out.headers = {{"Authorization", "Bearer token"}, {"anthropic-version", "2023-06-01"}};
  out.body = std::move(body);
  out.timeout = 10s;
  return out;
}

TEST(BeastTransport, SendsTheRequestAndReturnsStatusLowerCasedHeadersAndBody) {
  std::promise<std::string> seen;
  ScriptedServer server([&](int fd) {
    seen.set_value(read_request(fd));
    write_all(fd,
              "HTTP/1.1 201 Created\r\nX-Request-ID: req_1\r\nContent-Length: 5\r\n"
              "Connection: close\r\n\r\nhello");
  });
  BeastTransport transport;
  const auto response =
      transport.send(request("POST", server.url("/v1/items?beta=true"), R"({"a":1})"));
  EXPECT_EQ(response.status, 201);
  EXPECT_EQ(response.body, "hello");
  ASSERT_NE(response.header("x-request-id"), nullptr);
  EXPECT_EQ(*response.header("x-request-id"), "req_1");

  const std::string wire = seen.get_future().get();
  EXPECT_EQ(wire.rfind("POST /v1/items?beta=true HTTP/1.1\r\n", 0), 0u) << wire;
  EXPECT_NE(wire.find("Host: 127.0.0.1:" + std::to_string(server.port()) + "\r\n"),
            std::string::npos)
      << wire;
  EXPECT_NE(wire.find("Authorization: Bearer token\r\n"), std::string::npos) << wire;
  EXPECT_NE(wire.find("Content-Type: application/json\r\n"), std::string::npos) << wire;
  EXPECT_NE(wire.find("Content-Length: 7\r\n"), std::string::npos) << wire;
  EXPECT_EQ(wire.substr(wire.size() - 7), R"({"a":1})");
}

TEST(BeastTransport, AnErrorStatusKeepsTheServersBody) {
  ScriptedServer server([](int fd) {
    read_request(fd);
    const std::string body = R"({"type":"error","error":{"type":"rate_limit_error"}})";
    write_all(fd, "HTTP/1.1 429 Too Many Requests\r\nretry-after-ms: 20\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  BeastTransport transport;
  const auto response = transport.send(request("GET", server.url("/v1/x")));
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.body, R"({"type":"error","error":{"type":"rate_limit_error"}})");
  ASSERT_NE(response.header("retry-after-ms"), nullptr);
}

TEST(BeastTransport, AKeptAliveConnectionServesTheNextCallToTheSameOrigin) {
  ScriptedServer server([](int fd) {
    while (!read_request(fd).empty()) {
      write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
  });
  BeastTransport transport;
  EXPECT_EQ(transport.send(request("POST", server.url("/a"), "{}")).body, "ok");
  EXPECT_EQ(transport.send(request("GET", server.url("/b"))).body, "ok");
  EXPECT_EQ(transport.send(request("POST", server.url("/c"), "{}")).body, "ok");
  EXPECT_EQ(server.accepted(), 1);
}

TEST(BeastTransport, AConnectionTheServerClosedIsNotReused) {
  ScriptedServer server([](int fd) {
    read_request(fd);
    // Keep-alive promised, then closed: the idle connection is dead when the next call comes.
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  BeastTransport transport;
  EXPECT_EQ(transport.send(request("POST", server.url("/a"), "{}")).body, "ok");
  // Whether the close is seen before the next call (not reused) or during it (a GET is repeated
  // on a fresh connection), the call succeeds on a new connection.
  for (int i = 0; i < 200 && server.accepted() == 1; ++i) {
    EXPECT_EQ(transport.send(request("GET", server.url("/b"))).body, "ok");
  }
  EXPECT_GE(server.accepted(), 2);
}

TEST(BeastTransport, NoListenerIsATransportError) {
  int port = 0;
  {
    ScriptedServer closed([](int) {});
    port = closed.port();
  }
  BeastTransport transport;
  try {
    transport.send(request("GET", "http://127.0.0.1:" + std::to_string(port) + "/v1/x"));
    FAIL() << "expected a TransportError";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("cannot connect to 127.0.0.1:"), std::string::npos)
        << error.what();
  }
}

TEST(BeastTransport, AServerThatNeverAnswersTimesOut) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ScriptedServer server([released](int fd) {
    read_request(fd);
    released.wait_for(30s);
  });
  BeastTransport transport;
  HttpRequest slow = request("GET", server.url("/v1/slow"));
  slow.timeout = 200ms;
  try {
    transport.send(slow);
    FAIL() << "expected a TransportError";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("timeout"), std::string::npos) << error.what();
  }
  release.set_value();
}

TEST(BeastTransport, UnsupportedUrlsAreRefusedWithTheUrl) {
  BeastTransport transport;
  EXPECT_THROW(transport.send(request("GET", "ftp://127.0.0.1/x")), TransportError);
  EXPECT_THROW(transport.send(request("GET", "http://:80/x")), TransportError);
  EXPECT_THROW(transport.send(request("BREW", "http://127.0.0.1:1/x")), TransportError);
}

TEST(BeastTransport, AStreamHandsEachChunkOverAsItArrives) {
  std::promise<void> first_seen;
  auto first_seen_future = first_seen.get_future().share();
  ScriptedServer server([first_seen_future](int fd) {
    read_request(fd);
    write_all(fd,
              "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              "Transfer-Encoding: chunked\r\n\r\n" +
                  chunk("data: one\n\n"));
    // The second event is sent only once the client has the first: delivery is incremental.
    if (first_seen_future.wait_for(30s) != std::future_status::ready) return;
    write_all(fd, chunk("data: two\n\n") + "0\r\n\r\n");
  });
  BeastTransport transport;
  std::string received;
  bool signalled = false;
  std::atomic<bool> cancel{false};
  const auto response = transport.stream(
      request("GET", server.url("/v1/sessions/s/events/stream")),
      [&](std::string_view data) {
        received.append(data);
        if (!signalled && received.find("data: one\n\n") != std::string::npos) {
          signalled = true;
          first_seen.set_value();
        }
        return true;
      },
      cancel);
  EXPECT_EQ(response.status, 200);
  EXPECT_FALSE(response.truncated);
  EXPECT_EQ(received, "data: one\n\ndata: two\n\n");
  ASSERT_NE(response.header("content-type"), nullptr);
}

TEST(BeastTransport, AStreamErrorStatusReturnsTheBodyWithoutChunks) {
  ScriptedServer server([](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno stream");
  });
  BeastTransport transport;
  std::atomic<bool> cancel{false};
  int chunks = 0;
  const auto response = transport.stream(
      request("GET", server.url("/v1/sessions/s/events/stream")),
      [&](std::string_view) { return ++chunks > 0; }, cancel);
  EXPECT_EQ(response.status, 404);
  EXPECT_EQ(response.body, "no stream");
  EXPECT_EQ(chunks, 0);
}

TEST(BeastTransport, AStreamCutAfterItsHeadIsTruncated) {
  ScriptedServer server([](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("data: one\n\n"));
  });  // closed mid-stream, no final chunk
  BeastTransport transport;
  std::atomic<bool> cancel{false};
  std::string received;
  const auto response = transport.stream(
      request("GET", server.url("/v1/sessions/s/events/stream")),
      [&](std::string_view data) {
        received.append(data);
        return true;
      },
      cancel);
  EXPECT_EQ(received, "data: one\n\n");
  EXPECT_TRUE(response.truncated);
  EXPECT_FALSE(response.truncation_reason.empty());
}

TEST(BeastTransport, ACancelEndsABlockedStreamRead) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ScriptedServer server([released](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("data: one\n\n"));
    released.wait_for(30s);  // then nothing more: the client is blocked reading
  });
  BeastTransport transport;
  std::atomic<bool> cancel{false};
  std::promise<void> got_first;
  std::thread canceller([&, first = got_first.get_future()]() mutable {
    first.wait();
    cancel = true;
  });
  bool signalled = false;
  const auto response = transport.stream(
      request("GET", server.url("/v1/sessions/s/events/stream")),
      [&](std::string_view) {
        if (!signalled) got_first.set_value();
        signalled = true;
        return true;
      },
      cancel);
  canceller.join();
  release.set_value();
  EXPECT_EQ(response.status, 200);
  EXPECT_FALSE(response.truncated) << "a cancel is not a broken stream";
}

// A self-signed certificate for `san` (e.g. "IP:127.0.0.1"), written as PEM files in `dir`.
struct Certificate {
  std::string cert_path;
  std::string key_path;
};
Certificate make_certificate(const std::string& dir, const std::string& name,
                             const std::string& san) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, subject);
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, cert, cert, nullptr, nullptr, 0);
  for (const auto& [nid, value] : std::vector<std::pair<int, std::string>>{
           {NID_subject_alt_name, san}, {NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str());
    X509_add_ext(cert, extension, -1);
    X509_EXTENSION_free(extension);
  }
  X509_sign(cert, key, EVP_sha256());
  Certificate out{dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  FILE* cert_file = std::fopen(out.cert_path.c_str(), "w");
  PEM_write_X509(cert_file, cert);
  std::fclose(cert_file);
  FILE* key_file = std::fopen(out.key_path.c_str(), "w");
  PEM_write_PrivateKey(key_file, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(key_file);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

// One TLS connection served with `certificate`: a request read, a fixed answer written.
// With `client_ca`, the handshake demands a client certificate that CA issued.
class TlsServer {
 public:
  explicit TlsServer(const Certificate& certificate, const Certificate* client_ca = nullptr)
      : context_(boost::asio::ssl::context::tls_server),
        acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    context_.use_certificate_chain_file(certificate.cert_path);
    context_.use_private_key_file(certificate.key_path, boost::asio::ssl::context::pem);
    if (client_ca != nullptr) {
      context_.load_verify_file(client_ca->cert_path);
      context_.set_verify_mode(boost::asio::ssl::verify_peer |
                               boost::asio::ssl::verify_fail_if_no_peer_cert);
    }
    thread_ = std::thread([this] {
      boost::system::error_code ec;
      boost::asio::ssl::stream<boost::asio::ip::tcp::socket> stream(io_, context_);
      acceptor_.accept(stream.lowest_layer(), ec);
      if (ec) return;
      stream.handshake(boost::asio::ssl::stream_base::server, ec);
      if (ec) return;  // the client refused the certificate
      boost::asio::streambuf request;
      boost::asio::read_until(stream, request, "\r\n\r\n", ec);
      if (ec) return;
      boost::asio::write(stream,
                         boost::asio::buffer(std::string("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
                                                         "Connection: close\r\n\r\nsecure")),
                         ec);
      stream.shutdown(ec);
    });
  }
  ~TlsServer() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    thread_.join();
  }
  std::string url(const std::string& host) const {
    return "https://" + host + ":" + std::to_string(acceptor_.local_endpoint().port()) + "/v1/x";
  }

 private:
  boost::asio::io_context io_;
  boost::asio::ssl::context context_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
};

class BeastTransportTls : public ::testing::Test {
 protected:
  BeastTransportTls()
      : right(make_certificate(dir.path(), "right", "IP:127.0.0.1")),
        wrong_name(make_certificate(dir.path(), "wrong-name", "DNS:elsewhere.test")) {
    // The trust store the transport reads on its first https call: both certificates.
    const std::string trusted = dir.path() + "/trusted.pem";
    const std::string both =
        "cat '" + right.cert_path + "' '" + wrong_name.cert_path + "' > '" + trusted + "'";
    EXPECT_EQ(std::system(both.c_str()), 0);
    const char* previous = std::getenv("SSL_CERT_FILE");
    if (previous != nullptr) previous_ = previous;
    setenv("SSL_CERT_FILE", trusted.c_str(), 1);
  }
  ~BeastTransportTls() override {
    if (previous_) {
      setenv("SSL_CERT_FILE", previous_->c_str(), 1);
    } else {
      unsetenv("SSL_CERT_FILE");
    }
  }

  perimeter::testing::TempDir dir;
  Certificate right;
  Certificate wrong_name;
  std::optional<std::string> previous_;
};

TEST_F(BeastTransportTls, ATrustedCertificateForTheHostIsAccepted) {
  TlsServer server(right);
  BeastTransport transport;
  const auto response = transport.send(request("GET", server.url("127.0.0.1")));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "secure");
}

TEST_F(BeastTransportTls, ATrustedCertificateForAnotherHostIsRefused) {
  TlsServer server(wrong_name);
  BeastTransport transport;
  try {
    transport.send(request("GET", server.url("127.0.0.1")));
    FAIL() << "a certificate for elsewhere.test was accepted for 127.0.0.1";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("TLS handshake"), std::string::npos) << error.what();
  }
}

TEST_F(BeastTransportTls, AnUntrustedCertificateIsRefused) {
  const Certificate stranger = make_certificate(dir.path(), "stranger", "IP:127.0.0.1");
  TlsServer server(stranger);
  BeastTransport transport;
  EXPECT_THROW(transport.send(request("GET", server.url("127.0.0.1"))), TransportError);
}

std::string pem_of(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(BeastTransportTls, ACaGivenInTheOptionsIsTheOnlyOneTrusted) {
  {
    TlsServer server(right);
    BeastTransportOptions options;
    options.ca_pem = pem_of(right.cert_path);
    BeastTransport transport(options);
    EXPECT_EQ(transport.send(request("GET", server.url("127.0.0.1"))).body, "secure");
  }
  // The system store (SSL_CERT_FILE) trusts `right`, the options only `wrong_name`: refused.
  TlsServer server(right);
  BeastTransportOptions options;
  options.ca_pem = pem_of(wrong_name.cert_path);
  BeastTransport transport(options);
  EXPECT_THROW(transport.send(request("GET", server.url("127.0.0.1"))), TransportError);
}

TEST_F(BeastTransportTls, AClientCertificateIsPresentedWhenGiven) {
  const Certificate client = make_certificate(dir.path(), "client", "DNS:operator.test");
  {
    TlsServer server(right, &client);
    BeastTransport without;
    EXPECT_THROW(without.send(request("GET", server.url("127.0.0.1"))), TransportError)
        << "the server demands a client certificate";
  }
  TlsServer server(right, &client);
  BeastTransportOptions options;
  options.client_cert_pem = pem_of(client.cert_path);
  options.client_key_pem = pem_of(client.key_path);
  BeastTransport transport(options);
  EXPECT_EQ(transport.send(request("GET", server.url("127.0.0.1"))).body, "secure");
}

TEST_F(BeastTransportTls, WithVerificationOffAnyCertificateIsAccepted) {
  // A kubeconfig's insecure-skip-tls-verify: an untrusted certificate for another name.
  const Certificate stranger = make_certificate(dir.path(), "stranger", "DNS:elsewhere.test");
  TlsServer server(stranger);
  BeastTransportOptions options;
  options.verify_peer = false;
  BeastTransport transport(options);
  EXPECT_EQ(transport.send(request("GET", server.url("127.0.0.1"))).body, "secure");
}

// The AgentEnvironment's apiCAConfigMapRef, as the runner gets it (PERIMETER_API_CA_FILE): a
// certificate outside the system store is trusted through the extra file, and only through it.
TEST_F(BeastTransportTls, ACertificateInTheExtraCaFileIsTrustedBesideTheSystemStore) {
  const Certificate stranger = make_certificate(dir.path(), "private-ca", "IP:127.0.0.1");
  {
    TlsServer server(stranger);
    BeastTransport without;
    EXPECT_THROW(without.send(request("GET", server.url("127.0.0.1"))), TransportError)
        << "the control: the system store (SSL_CERT_FILE here) does not hold it";
  }
  TlsServer server(stranger);
  BeastTransportOptions options;
  options.extra_ca_file = stranger.cert_path;
  BeastTransport transport(options);
  const auto response = transport.send(request("GET", server.url("127.0.0.1")));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "secure");
  // The system store still counts.
  TlsServer usual(right);
  EXPECT_EQ(transport.send(request("GET", usual.url("127.0.0.1"))).status, 200);
}

TEST_F(BeastTransportTls, AnExtraCaFileThatDoesNotLoadFailsAtConstruction) {
  const std::string not_pem = dir.path() + "/not-a-certificate.pem";
  std::ofstream(not_pem) << "hello\n";
  BeastTransportOptions options;
  options.extra_ca_file = not_pem;
  EXPECT_THROW(BeastTransport{options}, std::runtime_error);
  options.extra_ca_file = dir.path() + "/missing.pem";
  EXPECT_THROW(BeastTransport{options}, std::runtime_error);
}

// The operator's client of an AgentEnvironment with apiCAConfigMapRef: the ConfigMap's PEM text,
// trusted beside the system store, and nothing that is not a certificate.
TEST_F(BeastTransportTls, CertificatesGivenAsExtraPemAreTrustedBesideTheSystemStore) {
  const Certificate stranger = make_certificate(dir.path(), "private-ca", "IP:127.0.0.1");
  TlsServer server(stranger);
  BeastTransportOptions options;
  options.extra_ca_pem = pem_of(stranger.cert_path);
  BeastTransport transport(options);
  EXPECT_EQ(transport.send(request("GET", server.url("127.0.0.1"))).body, "secure");
  TlsServer usual(right);
  EXPECT_EQ(transport.send(request("GET", usual.url("127.0.0.1"))).status, 200);
  TlsServer other(make_certificate(dir.path(), "another-ca", "IP:127.0.0.1"));
  EXPECT_THROW(transport.send(request("GET", other.url("127.0.0.1"))), TransportError);

  options.extra_ca_pem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  EXPECT_THROW(BeastTransport{options}, std::runtime_error);
}

// --- Through a proxy -------------------------------------------------------------------------

int listen_loopback(int* port) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(listener, 8), 0);
  socklen_t size = sizeof address;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size);
  *port = ntohs(address.sin_port);
  return listener;
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Accepts loopback connections and serves each on a thread of its own (the transport keeps one
// connection idle while a stream opens another).
class ConcurrentServer {
 public:
  explicit ConcurrentServer(std::function<void(int fd)> serve) : serve_(std::move(serve)) {
    listener_ = listen_loopback(&port_);
    acceptor_ = std::thread([this] {
      while (true) {
        const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        std::lock_guard lock(mutex_);
        open_.push_back(fd);
        ++accepted_;
        workers_.emplace_back([this, fd] {
          // OpenSSL writes with write(2): a peer gone mid-answer must be EPIPE in this server
          // thread, not a SIGPIPE that ends the test. The transport under test runs on the test's
          // own thread, where SIGPIPE stays deliverable.
          sigset_t pipe;
          sigemptyset(&pipe);
          sigaddset(&pipe, SIGPIPE);
          pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
          serve_(fd);
          std::lock_guard lock(mutex_);
          std::erase(open_, fd);
          ::close(fd);
        });
      }
    });
  }
  ~ConcurrentServer() {
    ::shutdown(listener_, SHUT_RDWR);
    acceptor_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    for (std::thread& worker : workers_) worker.join();
    ::close(listener_);
  }
  int port() const { return port_; }
  int accepted() {
    std::lock_guard lock(mutex_);
    return accepted_;
  }

 private:
  std::function<void(int fd)> serve_;
  int listener_ = -1;
  int port_ = 0;
  std::mutex mutex_;
  std::vector<int> open_;
  std::vector<std::thread> workers_;
  int accepted_ = 0;
  std::thread acceptor_;
};

// A CONNECT proxy stand-in: records each request head, then either refuses with `refusal` or
// answers 200 and relays bytes between the client and 127.0.0.1:<the port the CONNECT names>.
class ConnectProxy {
 public:
  explicit ConnectProxy(std::string refusal = "")
      : refusal_(std::move(refusal)), server_([this](int fd) { serve(fd); }) {}
  int port() const { return server_.port(); }
  int accepted() { return server_.accepted(); }
  std::vector<std::string> heads() {
    std::lock_guard lock(mutex_);
    return heads_;
  }

 private:
  void serve(int fd) {
    const std::string head = read_request(fd);
    if (head.empty()) return;
    {
      std::lock_guard lock(mutex_);
      heads_.push_back(head);
    }
    if (!refusal_.empty()) {
      write_all(fd, refusal_);
      return;
    }
    const std::size_t space = head.find(' ', 8);
    const std::size_t colon = head.rfind(':', space);
    const int upstream = connect_loopback(std::stoi(head.substr(colon + 1, space - colon - 1)));
    if (upstream < 0) {
      write_all(fd, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    write_all(fd, "HTTP/1.1 200 Connection established\r\n\r\n");
    pollfd fds[2] = {{fd, POLLIN, 0}, {upstream, POLLIN, 0}};
    char buffer[16384];
    while (::poll(fds, 2, -1) > 0) {
      const bool from_client = (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
      const int from = from_client ? fd : upstream;
      const ssize_t n = ::recv(from, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      write_all(from_client ? upstream : fd, std::string_view(buffer, static_cast<std::size_t>(n)));
    }
    ::close(upstream);
  }

  std::string refusal_;
  std::mutex mutex_;
  std::vector<std::string> heads_;
  ConcurrentServer server_;  // last: its threads use the members above
};

// An HTTPS origin stand-in that records every byte it decrypts. "/stream" answers an event
// stream of two events; anything else "secure", kept alive.
class RecordingTlsServer {
 public:
  explicit RecordingTlsServer(const Certificate& certificate)
      : context_(SSL_CTX_new(TLS_server_method()), SSL_CTX_free),
        server_([this](int fd) { serve(fd); }) {
    SSL_CTX_use_certificate_chain_file(context_.get(), certificate.cert_path.c_str());
    SSL_CTX_use_PrivateKey_file(context_.get(), certificate.key_path.c_str(), SSL_FILETYPE_PEM);
  }
  int port() const { return server_.port(); }
  int accepted() { return server_.accepted(); }
  std::string url(const std::string& path, const std::string& host = "localhost") const {
    return "https://" + host + ":" + std::to_string(port()) + path;
  }
  // Everything received so far, then forgotten.
  std::string take_received() {
    std::lock_guard lock(mutex_);
    return std::exchange(received_, "");
  }

 private:
  void serve(int fd) {
    SSL* ssl = SSL_new(context_.get());
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      std::string pending;
      char buffer[4096];
      while (true) {
        const std::size_t end = pending.find("\r\n\r\n");
        std::size_t length = 0;
        if (end != std::string::npos) {
          if (const std::size_t at = pending.find("Content-Length: "); at < end) {
            length = std::stoul(pending.substr(at + 16));
          }
        }
        if (end == std::string::npos || pending.size() < end + 4 + length) {
          const int n = SSL_read(ssl, buffer, sizeof buffer);
          if (n <= 0) break;
          pending.append(buffer, static_cast<std::size_t>(n));
          continue;
        }
        const std::string request = pending.substr(0, end + 4 + length);
        pending.erase(0, request.size());
        {
          std::lock_guard lock(mutex_);
          received_ += request;
        }
        const std::string answer = request.find(" /stream ") != std::string::npos
                                       ? "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                         "Transfer-Encoding: chunked\r\n\r\n" +
                                             chunk("event: a\ndata: one\n\n") +
                                             chunk("event: b\ndata: two\n\n") + "0\r\n\r\n"
                                       : "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure";
        SSL_write(ssl, answer.data(), static_cast<int>(answer.size()));
      }
    }
    SSL_free(ssl);
  }

  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> context_;
  std::mutex mutex_;
  std::string received_;
  ConcurrentServer server_;  // last: its threads use the members above
};

// Appends the certificate to the trust store the transport reads on its first https call.
void trust(const Certificate& certificate, const std::string& store) {
  std::ifstream in(certificate.cert_path);
  std::ofstream(store, std::ios::app) << in.rdbuf();
}

ProxyEnvironment proxies_from(const std::map<std::string, std::string>& values) {
  return load_proxy_environment([&values](const char* name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  });
}

// What the calls the runner makes returned: a POST, a GET on the same connection, a stream.
std::string call_origin(BeastTransport& transport, const RecordingTlsServer& server,
                        const std::string& host = "localhost") {
  std::string out;
  const auto posted =
      transport.send(request("POST", server.url("/v1/items?beta=true", host), "{}"));
  out += std::to_string(posted.status) + " " + posted.body + "\n";
  const auto got = transport.send(request("GET", server.url("/v1/items/1", host)));
  out += std::to_string(got.status) + " " + got.body + "\n";
  std::atomic<bool> cancel{false};
  const auto streamed = transport.stream(
      request("GET", server.url("/stream", host)),
      [&](std::string_view data) {
        out.append(data);
        return true;
      },
      cancel);
  out += std::to_string(streamed.status) + (streamed.truncated ? " truncated" : " whole");
  return out;
}

class BeastTransportProxy : public BeastTransportTls {
 protected:
  BeastTransportProxy() : origin_certificate(make_certificate(dir.path(), "origin", kSan)) {
    trust(origin_certificate, dir.path() + "/trusted.pem");
  }
  static constexpr const char* kSan = "DNS:localhost,IP:127.0.0.1";
  // The gateway's user is <namespace>~<name>~<session id>; the password is percent-encoded.
  std::string proxy_url(int port) const {
    return "http://team-a~agents~sesn_01ABC:3f%3A9a@127.0.0.1:" + std::to_string(port);
  }
  // base64("team-a~agents~sesn_01ABC:3f:9a"), computed apart from the code under test.
  static constexpr const char* kBasic = "Basic dGVhbS1hfmFnZW50c35zZXNuXzAxQUJDOjNmOjlh";

  Certificate origin_certificate;
};

TEST_F(BeastTransportProxy, TheOriginReceivesThroughTheTunnelExactlyWhatItReceivesDirect) {
  RecordingTlsServer server(origin_certificate);
  BeastTransport direct;
  const std::string direct_answers = call_origin(direct, server);
  const std::string direct_bytes = server.take_received();
  EXPECT_EQ(direct_answers,
            "200 secure\n200 secure\nevent: a\ndata: one\n\nevent: b\ndata: two\n\n200 whole");

  ConnectProxy proxy;
  BeastTransport proxied(proxies_from(
      {{"HTTPS_PROXY", proxy_url(proxy.port())}, {"NO_PROXY", "127.0.0.1,.cluster.local"}}));
  EXPECT_EQ(call_origin(proxied, server), direct_answers);
  EXPECT_EQ(server.take_received(), direct_bytes);

  // Two tunnels: the POST's connection served the GET too; the stream opened its own.
  const std::string target = "localhost:" + std::to_string(server.port());
  const std::vector<std::string> heads = proxy.heads();
  ASSERT_EQ(heads.size(), 2u);
  for (const std::string& head : heads) {
    EXPECT_EQ(head.rfind("CONNECT " + target + " HTTP/1.1\r\n", 0), 0u) << head;
    EXPECT_NE(head.find("\r\nHost: " + target + "\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("\r\nProxy-Authorization: " + std::string(kBasic) + "\r\n"),
              std::string::npos)
        << head;
  }
  EXPECT_EQ(server.accepted(), 4);
}

TEST_F(BeastTransportProxy, TheTunnelStillChecksTheOriginsCertificate) {
  // The proxy relays to a server whose certificate names another host: refused as direct.
  RecordingTlsServer server(wrong_name);
  ConnectProxy proxy;
  BeastTransport proxied(proxies_from({{"HTTPS_PROXY", proxy_url(proxy.port())}}));
  try {
    proxied.send(request("GET", server.url("/v1/x")));
    FAIL() << "a certificate for elsewhere.test was accepted for localhost through the tunnel";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("TLS handshake"), std::string::npos) << error.what();
  }
  EXPECT_EQ(proxy.heads().size(), 1u);
  EXPECT_TRUE(server.take_received().empty());
}

TEST_F(BeastTransportProxy, AProxysRefusalIsAnErrorWithItsStatusAndBody) {
  RecordingTlsServer server(origin_certificate);
  const std::string denied = "egress denied: localhost is not in the allowed hosts";
  ConnectProxy forbidding("HTTP/1.1 403 Forbidden\r\nContent-Length: " +
                          std::to_string(denied.size()) + "\r\nConnection: close\r\n\r\n" + denied);
  BeastTransport transport(proxies_from({{"https_proxy", proxy_url(forbidding.port())}}));
  try {
    transport.send(request("POST", server.url("/v1/items"), "{}"));
    FAIL() << "a refused CONNECT was not an error";
  } catch (const TransportError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("403 Forbidden"), std::string::npos) << message;
    EXPECT_NE(message.find(denied), std::string::npos) << message;
    EXPECT_NE(message.find("CONNECT localhost:" + std::to_string(server.port())), std::string::npos)
        << message;
  }

  // A 407 on the stream path, its body read to the close.
  ConnectProxy unauthenticated(
      "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic "
      "realm=\"perimeter-egress\"\r\nConnection: close\r\n\r\nunknown session sesn_01ABC");
  BeastTransport streaming(proxies_from({{"HTTPS_PROXY", proxy_url(unauthenticated.port())}}));
  std::atomic<bool> cancel{false};
  try {
    streaming.stream(
        request("GET", server.url("/stream")), [](std::string_view) { return true; }, cancel);
    FAIL() << "a refused CONNECT was not an error";
  } catch (const TransportError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("407 Proxy Authentication Required: unknown session sesn_01ABC"),
              std::string::npos)
        << message;
  }
  EXPECT_EQ(server.accepted(), 0);
}

TEST_F(BeastTransportProxy, AHostInNoProxyGoesDirect) {
  RecordingTlsServer server(origin_certificate);
  ConnectProxy proxy;
  BeastTransport transport(proxies_from(
      {{"HTTPS_PROXY", proxy_url(proxy.port())}, {"NO_PROXY", "example.com, LOCALHOST"}}));
  EXPECT_EQ(transport.send(request("GET", server.url("/v1/x"))).body, "secure");
  EXPECT_EQ(proxy.accepted(), 0);
  EXPECT_EQ(server.accepted(), 1);
}

TEST(BeastTransportHttpProxy, AnHttpUrlIsSentToTheProxyInAbsoluteForm) {
  std::promise<std::string> seen;
  ScriptedServer proxy([&](int fd) {
    seen.set_value(read_request(fd));
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nforwarded");
  });
  // origin.invalid never resolves: only the proxy's name is looked up.
  BeastTransport transport(proxies_from(
      {{"HTTP_PROXY", "http://user:p%40ss@127.0.0.1:" + std::to_string(proxy.port())}}));
  const auto response =
      transport.send(request("POST", "http://origin.invalid:8080/v1/items?beta=true", "{}"));
  EXPECT_EQ(response.body, "forwarded");
  const std::string wire = seen.get_future().get();
  EXPECT_EQ(wire.rfind("POST http://origin.invalid:8080/v1/items?beta=true HTTP/1.1\r\n", 0), 0u)
      << wire;
  EXPECT_NE(wire.find("\r\nHost: origin.invalid:8080\r\n"), std::string::npos) << wire;
  // base64("user:p@ss")
  EXPECT_NE(wire.find("\r\nProxy-Authorization: Basic dXNlcjpwQHNz\r\n"), std::string::npos)
      << wire;
}

TEST(BeastTransportHttpProxy, AnHttpsProxyAloneLeavesHttpUrlsDirect) {
  ScriptedServer origin([](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndirect");
  });
  ConnectProxy proxy;
  BeastTransport transport(
      proxies_from({{"HTTPS_PROXY", "http://127.0.0.1:" + std::to_string(proxy.port())}}));
  EXPECT_EQ(transport.send(request("GET", origin.url("/v1/x"))).body, "direct");
  EXPECT_EQ(proxy.accepted(), 0);
}

// The real perimeter-egress-gateway between the transport and the origin: its name check, its
// SNI check and its credentials accept exactly what the transport sends. The gateway resolves the
// API's name through a private /etc/hosts (root), as it would resolve api.anthropic.com.
TEST_F(BeastTransportProxy, ThroughTheEgressGatewayTheOriginReceivesWhatTheStandInRelays) {
  const Certificate api = make_certificate(dir.path(), "api", "DNS:api.perimeter.test");
  trust(api, dir.path() + "/trusted.pem");
  RecordingTlsServer server(api);
  const std::string hosts = dir.path() + "/hosts";
  std::ofstream(hosts) << "127.0.0.1 api.perimeter.test\n127.0.0.1 other.perimeter.test\n";
  perimeter::testing::GatewayProcessOptions options;
  options.hosts_file = hosts;
  perimeter::testing::GatewayProcess gateway(
      "listen: 127.0.0.1:0\ntesting_allow_loopback_upstreams: true\nenvironments:\n"
      "  - name: team-a/agents\n    allow:\n      - {host: api.perimeter.test, ports: [" +
          std::to_string(server.port()) + "]}\n",
      options);
  // The credential the operator issues, as the URL it puts in HTTPS_PROXY.
  std::string user_and_password;
  ASSERT_TRUE(base64_decode_any(
      gateway.credential("team-a", "agents", "sesn_01ABC").substr(std::string("Basic ").size()),
      &user_and_password));
  const std::string gateway_url =
      "http://" + user_and_password + "@127.0.0.1:" + std::to_string(gateway.proxy_port());

  ConnectProxy stand_in;
  BeastTransport through_stand_in(proxies_from({{"HTTPS_PROXY", proxy_url(stand_in.port())}}));
  const std::string answers = call_origin(through_stand_in, server, "api.perimeter.test");
  EXPECT_EQ(answers,
            "200 secure\n200 secure\nevent: a\ndata: one\n\nevent: b\ndata: two\n\n200 whole");
  const std::string bytes = server.take_received();

  BeastTransport through_gateway(proxies_from({{"HTTPS_PROXY", gateway_url}}));
  EXPECT_EQ(call_origin(through_gateway, server, "api.perimeter.test"), answers) << gateway.log();
  EXPECT_EQ(server.take_received(), bytes);

  // A host the environment does not list: the gateway's 403 and its reason reach the caller.
  try {
    through_gateway.send(request("GET", server.url("/v1/x", "other.perimeter.test")));
    FAIL() << "the gateway let an unlisted host through";
  } catch (const TransportError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("answered 403"), std::string::npos) << message;
    EXPECT_NE(message.find("other.perimeter.test:" + std::to_string(server.port()) +
                           " is not on the allow-list of team-a/agents"),
              std::string::npos)
        << message;
  }
  // Another session's name with this session's password: 407.
  const std::string forged = "http://team-a~agents~sesn_OTHER:" +
                             user_and_password.substr(user_and_password.find(':') + 1) +
                             "@127.0.0.1:" + std::to_string(gateway.proxy_port());
  BeastTransport forging(proxies_from({{"HTTPS_PROXY", forged}}));
  try {
    forging.send(request("GET", server.url("/v1/x", "api.perimeter.test")));
    FAIL() << "the gateway took a forged credential";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("answered 407"), std::string::npos) << error.what();
  }
  EXPECT_TRUE(server.take_received().empty());
}

}  // namespace
}  // namespace perimeter::runner
