#include "egressgateway/tls_peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <stdexcept>

namespace perimeter::testing {
namespace {

std::string openssl_errors() {
  std::string text;
  for (unsigned long code; (code = ERR_get_error()) != 0;) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "no OpenSSL error" : text;
}

// OpenSSL writes to its sockets with write(2): a peer that went away must be an error return, not
// SIGPIPE killing the test process.
void ignore_sigpipe() {
  std::signal(SIGPIPE, SIG_IGN);
}

int tcp_connect(const std::string& host, int port) {
  ignore_sigpipe();
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &address.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const std::string reason = std::strerror(errno);
    close(fd);
    throw std::runtime_error("connect " + host + ":" + std::to_string(port) + ": " + reason);
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace

TestCa::TestCa()
    : key_(pki::PrivateKey::generate_ec_p256()),
      certificate_(pki::issue_self_signed_ca({"perimeter egress test CA", "", std::chrono::hours(1),
                                              std::chrono::minutes(5), std::nullopt},
                                             key_, std::chrono::system_clock::now())) {}

std::pair<std::string, std::string> TestCa::issue(const std::vector<std::string>& names) const {
  auto key = pki::PrivateKey::generate_ec_p256();
  pki::CertificateRequest request;
  request.common_name = names.front();
  request.dns_names = names;
  request.lifetime = std::chrono::hours(1);
  request.backdate = std::chrono::minutes(5);
  const auto certificate =
      pki::issue_certificate(request, key, certificate_, key_, std::chrono::system_clock::now());
  return {certificate.pem(), key.pem()};
}

TlsStandIn::TlsStandIn(const std::string& address, const std::string& certificate_pem,
                       const std::string& key_pem)
    : address_(address) {
  ignore_sigpipe();
  context_ = SSL_CTX_new(TLS_server_method());
  BIO* cert_bio = BIO_new_mem_buf(certificate_pem.data(), static_cast<int>(certificate_pem.size()));
  X509* certificate = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  if (certificate == nullptr || key == nullptr ||
      SSL_CTX_use_certificate(context_, certificate) != 1 ||
      SSL_CTX_use_PrivateKey(context_, key) != 1) {
    throw std::runtime_error("stand-in TLS identity: " + openssl_errors());
  }
  X509_free(certificate);
  EVP_PKEY_free(key);

  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in bind_address{};
  bind_address.sin_family = AF_INET;
  inet_pton(AF_INET, address.c_str(), &bind_address.sin_addr);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&bind_address), sizeof bind_address) != 0 ||
      listen(listen_fd_, 1024) != 0) {
    throw std::runtime_error("stand-in cannot listen on " + address + ": " + std::strerror(errno));
  }
  socklen_t length = sizeof bind_address;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bind_address), &length);
  port_ = ntohs(bind_address.sin_port);
  accept_thread_ = std::thread([this] {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (stopping_) {
        if (fd >= 0) close(fd);
        return;
      }
      if (fd < 0) continue;
      ++connections_;
      std::lock_guard lock(mutex_);
      open_fds_.push_back(fd);
      threads_.emplace_back([this, fd] { serve(fd); });
    }
  });
}

TlsStandIn::~TlsStandIn() {
  stopping_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  close(listen_fd_);
  accept_thread_.join();
  {
    std::lock_guard lock(mutex_);
    for (const int fd : open_fds_) shutdown(fd, SHUT_RDWR);
  }
  for (auto& thread : threads_) thread.join();
  SSL_CTX_free(context_);
}

int TlsStandIn::settled_connections() const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int empty_in_a_row = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    tcp_info info{};
    socklen_t length = sizeof info;
    // For a listening socket, tcpi_unacked is the accept queue's length.
    getsockopt(listen_fd_, IPPROTO_TCP, TCP_INFO, &info, &length);
    empty_in_a_row = info.tcpi_unacked == 0 ? empty_in_a_row + 1 : 0;
    // Twice empty, a moment apart: the accept thread has also counted what it took last.
    if (empty_in_a_row == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return connections_;
}

std::vector<std::string> TlsStandIn::server_names() const {
  std::lock_guard lock(mutex_);
  return server_names_;
}

void TlsStandIn::serve(int fd) {
  char peek = 0;
  // Did any byte at all arrive before the peer closed?
  if (recv(fd, &peek, 1, MSG_PEEK) == 1) ++connections_with_bytes_;
  SSL* ssl = SSL_new(context_);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    ++handshakes_;
    {
      std::lock_guard lock(mutex_);
      const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
      server_names_.push_back(name == nullptr ? "" : name);
    }
    std::string line;
    char c = 0;
    while (line.size() < 100 && SSL_read(ssl, &c, 1) == 1 && c != '\n') line.push_back(c);
    if (line == "PING") {
      SSL_write(ssl, "PONG\n", 5);
    } else if (line.rfind("SEND ", 0) == 0) {
      std::uint64_t left = std::stoull(line.substr(5));
      const std::string chunk(64 * 1024, 'x');
      while (left > 0) {
        const int count = static_cast<int>(std::min<std::uint64_t>(left, chunk.size()));
        if (SSL_write(ssl, chunk.data(), count) <= 0) break;
        left -= static_cast<std::uint64_t>(count);
      }
    } else if (line == "HALFCLOSE") {
      std::uint64_t count = 0;
      char buffer[4096];
      for (int n; (n = SSL_read(ssl, buffer, sizeof buffer)) > 0;)
        count += static_cast<std::uint64_t>(n);
      // The close_notify came as data; the end of the TCP stream must follow it.
      timeval timeout{5, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      const std::string answer =
          recv(fd, buffer, 1, 0) == 0 ? "EOF after " + std::to_string(count) + "\n" : "NO EOF\n";
      SSL_write(ssl, answer.data(), static_cast<int>(answer.size()));
    } else if (line == "FLOOD") {
      const std::string chunk(16 * 1024, 'x');
      while (!stopping_ && SSL_write(ssl, chunk.data(), static_cast<int>(chunk.size())) > 0) {
        flooded_ += chunk.size();
      }
    }
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  close(fd);
}

namespace {

// Counts raw socket bytes under the TLS layer.
long count_bytes(BIO* bio, int operation, const char*, std::size_t, int, long, int result,
                 std::size_t* processed) {
  if (result > 0 && processed != nullptr) {
    auto* counts = reinterpret_cast<std::uint64_t*>(BIO_get_callback_arg(bio));
    if (operation == (BIO_CB_READ | BIO_CB_RETURN)) counts[0] += *processed;   // read
    if (operation == (BIO_CB_WRITE | BIO_CB_RETURN)) counts[1] += *processed;  // written
  }
  return result;
}

}  // namespace

ProxiedTlsClient::ProxiedTlsClient(const std::string& proxy_host, int proxy_port)
    : fd_(tcp_connect(proxy_host, proxy_port)) {
  timeval timeout{10, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
}

ProxiedTlsClient::~ProxiedTlsClient() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (context_ != nullptr) SSL_CTX_free(context_);
  if (fd_ >= 0) close(fd_);
}

ConnectReply ProxiedTlsClient::send_head(const std::string& request_head) {
  ConnectReply reply;
  if (!write_raw(request_head)) return reply;
  raw_.written = 0;
  std::string received;
  char buffer[4096];
  std::size_t head_end = std::string::npos;
  while ((head_end = received.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t count = recv(fd_, buffer, sizeof buffer, 0);
    if (count <= 0) return reply;
    received.append(buffer, static_cast<std::size_t>(count));
  }
  reply.head = received.substr(0, head_end + 4);
  reply.status = std::stoi(reply.head.substr(9, 3));
  early_ = received.substr(head_end + 4);
  if (reply.status != 200) {
    // A refusal has a Content-Length body and closes.
    while (true) {
      const ssize_t count = recv(fd_, buffer, sizeof buffer, 0);
      if (count <= 0) break;
      early_.append(buffer, static_cast<std::size_t>(count));
    }
    reply.body = early_;
  }
  return reply;
}

ConnectReply ProxiedTlsClient::connect(const std::string& target,
                                       const std::string& proxy_authorization) {
  std::string head = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
  if (!proxy_authorization.empty()) head += "Proxy-Authorization: " + proxy_authorization + "\r\n";
  return send_head(head + "\r\n");
}

bool ProxiedTlsClient::handshake(const std::string& sni, const std::string& ca_pem,
                                 const std::string& verify_name, std::string* error) {
  context_ = SSL_CTX_new(TLS_client_method());
  BIO* ca_bio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
  X509* ca = PEM_read_bio_X509(ca_bio, nullptr, nullptr, nullptr);
  BIO_free(ca_bio);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(context_), ca);
  X509_free(ca);
  SSL_CTX_set_verify(context_, SSL_VERIFY_PEER, nullptr);
  ssl_ = SSL_new(context_);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
  SSL_set1_host(ssl_, verify_name.c_str());
  BIO* bio = BIO_new_socket(fd_, BIO_NOCLOSE);
  BIO_set_callback_ex(bio, count_bytes);
  static_assert(sizeof(RawCounts) == 2 * sizeof(std::uint64_t));
  BIO_set_callback_arg(bio, reinterpret_cast<char*>(&raw_));
  SSL_set_bio(ssl_, bio, bio);
  if (SSL_connect(ssl_) != 1) {
    *error = openssl_errors();
    return false;
  }
  return true;
}

bool ProxiedTlsClient::write(const std::string& bytes) {
  return SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) ==
         static_cast<int>(bytes.size());
}

void ProxiedTlsClient::close_write() {
  SSL_shutdown(ssl_);
  ::shutdown(fd_, SHUT_WR);
}

std::string ProxiedTlsClient::read_to_end() {
  std::string received;
  char buffer[16384];
  for (;;) {
    const int count = SSL_read(ssl_, buffer, sizeof buffer);
    if (count <= 0) break;
    received.append(buffer, static_cast<std::size_t>(count));
  }
  // Whatever is left on the socket under TLS (the close_notify's record) counts as read too.
  for (;;) {
    const ssize_t count = recv(fd_, buffer, sizeof buffer, 0);
    if (count <= 0) break;
    raw_.read += static_cast<std::uint64_t>(count);
  }
  return received;
}

std::string ProxiedTlsClient::read_some(std::size_t count) {
  std::string received(count, '\0');
  std::size_t got = 0;
  while (got < count) {
    const int n = SSL_read(ssl_, received.data() + got, static_cast<int>(count - got));
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  received.resize(got);
  return received;
}

bool ProxiedTlsClient::write_raw(const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t count = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (count <= 0) return false;
    sent += static_cast<std::size_t>(count);
  }
  raw_.written += bytes.size();
  return true;
}

bool ProxiedTlsClient::closed_by_peer(int limit_ms) {
  pollfd descriptor{fd_, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  char buffer[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    if (poll(&descriptor, 1, 50) <= 0) continue;
    const ssize_t count = recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
    if (count <= 0) return count == 0 || errno != EAGAIN;
  }
  return false;
}

}  // namespace perimeter::testing
