#pragma once

#include <openssl/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pki/pki.h"

namespace perimeter::testing {

// A test CA and the certificates it signs for upstream stand-ins.
class TestCa {
 public:
  TestCa();
  // A server certificate (PEM) and key (PEM) for `names`.
  std::pair<std::string, std::string> issue(const std::vector<std::string>& names) const;
  std::string pem() const { return certificate_.pem(); }

 private:
  pki::PrivateKey key_;
  pki::Certificate certificate_;
};

// A TLS server on `address` (127.0.0.x, a free port) standing in for an upstream. It speaks a
// line protocol after the handshake: "PING\n" -> "PONG\n"; "SEND <n>\n" -> n bytes; "FLOOD\n" ->
// bytes until the peer goes away; "HALFCLOSE\n" -> reads until the client's close_notify, then
// waits for the TCP end of stream under it and answers "EOF after <n>\n" (or "NO EOF\n"); then it
// closes. It counts what reached it.
class TlsStandIn {
 public:
  TlsStandIn(const std::string& address, const std::string& certificate_pem,
             const std::string& key_pem);
  ~TlsStandIn();
  TlsStandIn(const TlsStandIn&) = delete;
  TlsStandIn& operator=(const TlsStandIn&) = delete;

  int port() const { return port_; }
  const std::string& address() const { return address_; }
  // TCP connections accepted.
  int connections() const { return connections_; }
  // connections() once every connection the kernel has completed is accepted: a connection made
  // before this call is counted (the kernel's accept queue, read with TCP_INFO, is empty).
  int settled_connections() const;
  // Connections on which at least one byte arrived.
  int connections_with_bytes() const { return connections_with_bytes_; }
  int handshakes() const { return handshakes_; }
  // The SNI of each completed handshake.
  std::vector<std::string> server_names() const;
  // Application bytes written by FLOOD so far.
  std::uint64_t flooded_bytes() const { return flooded_; }

 private:
  void serve(int fd);

  std::string address_;
  int port_ = 0;
  int listen_fd_ = -1;
  SSL_CTX* context_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> connections_with_bytes_{0};
  std::atomic<int> handshakes_{0};
  std::atomic<std::uint64_t> flooded_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> server_names_;
  std::vector<int> open_fds_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// The gateway's answer to a CONNECT.
struct ConnectReply {
  int status = 0;    // 0: the connection closed without an answer
  std::string head;  // status line and headers
  std::string body;  // for a refusal
};

// A client through the gateway: TCP to the proxy, CONNECT with an optional Proxy-Authorization,
// then (on 200) TLS with `sni` verified against the CA for `verify_name`. Counts every raw byte
// it writes and reads on the socket after the CONNECT exchange.
class ProxiedTlsClient {
 public:
  ProxiedTlsClient(const std::string& proxy_host, int proxy_port);
  ~ProxiedTlsClient();
  ProxiedTlsClient(const ProxiedTlsClient&) = delete;
  ProxiedTlsClient& operator=(const ProxiedTlsClient&) = delete;

  // Sends `request_head` (the whole head, "\r\n\r\n" included) and reads the answer.
  ConnectReply send_head(const std::string& request_head);
  ConnectReply connect(const std::string& target, const std::string& proxy_authorization);
  // The TLS handshake; false (with OpenSSL's reason in *error) when it fails.
  bool handshake(const std::string& sni, const std::string& ca_pem, const std::string& verify_name,
                 std::string* error);
  bool write(const std::string& bytes);
  // Sends TLS close_notify, then closes the socket's sending side (a half-close); reading goes on.
  void close_write();
  // Reads until the peer closes (TLS EOF or error); returns what came.
  std::string read_to_end();
  // Reads up to `count` bytes (fewer at EOF).
  std::string read_some(std::size_t count);
  // Raw bytes on the socket since the CONNECT answer.
  std::uint64_t raw_written() const { return raw_.written; }
  std::uint64_t raw_read() const { return raw_.read; }
  // Sends raw bytes (no TLS).
  bool write_raw(const std::string& bytes);
  // True when the gateway closed the socket within `limit_ms` (reads EOF or a reset).
  bool closed_by_peer(int limit_ms);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  SSL_CTX* context_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string early_;  // bytes read past the CONNECT answer
  struct RawCounts {
    std::uint64_t read = 0;
    std::uint64_t written = 0;
  };
  RawCounts raw_;
};

}  // namespace perimeter::testing
