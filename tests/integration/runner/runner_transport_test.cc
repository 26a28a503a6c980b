// BeastTransport against scripted loopback servers: what goes on the wire, what comes back,
// connection reuse, timeouts, event streams delivered as they arrive, cancel, truncation, and
// TLS with certificate and host name checks.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runner/beast_transport.h"

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
// clang-format on

#include "agentapi/api_error.h"
#include "agentapi/sim_process.h"

namespace perimeter::runner {
namespace {

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
class TlsServer {
 public:
  explicit TlsServer(const Certificate& certificate)
      : context_(boost::asio::ssl::context::tls_server),
        acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    context_.use_certificate_chain_file(certificate.cert_path);
    context_.use_private_key_file(certificate.key_path, boost::asio::ssl::context::pem);
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

}  // namespace
}  // namespace perimeter::runner
