#include "localcluster/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace perimeter::localcluster {
namespace {

// How long one blocking read waits before the caller gets a chance to give up (stop flags,
// overall timeouts).
constexpr auto kReadSlice = std::chrono::milliseconds(250);
// A status line or header longer than this is not from a server we talk to.
constexpr size_t kMaxLineBytes = size_t{64} * 1024;

std::string openssl_error() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown TLS error" : text;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string trim(std::string_view text) {
  size_t start = text.find_first_not_of(" \t");
  if (start == std::string_view::npos) return "";
  size_t end = text.find_last_not_of(" \t\r");
  return std::string(text.substr(start, end - start + 1));
}

// Buffered reading over a ByteSource, for the line-oriented parts of HTTP.
class Reader {
 public:
  Reader(ByteSource& source, const std::function<bool()>& keep_waiting)
      : source_(source), keep_waiting_(keep_waiting) {}

  // False at end of stream before any byte of the line.
  bool read_line(std::string* line) {
    while (true) {
      auto newline = buffer_.find('\n', offset_);
      if (newline != std::string::npos) {
        size_t end = newline;
        if (end > offset_ && buffer_[end - 1] == '\r') --end;
        *line = buffer_.substr(offset_, end - offset_);
        offset_ = newline + 1;
        return true;
      }
      if (buffer_.size() - offset_ > kMaxLineBytes) throw std::runtime_error("HTTP line too long");
      if (!fill()) {
        if (offset_ == buffer_.size()) return false;
        throw std::runtime_error("connection closed in the middle of a line");
      }
    }
  }

  // Hands over up to `max` buffered or freshly read bytes; empty at end of stream.
  std::string_view read_some(size_t max) {
    if (offset_ == buffer_.size()) {
      buffer_.clear();
      offset_ = 0;
      if (!fill()) return {};
    }
    size_t n = std::min(max, buffer_.size() - offset_);
    std::string_view bytes(buffer_.data() + offset_, n);
    offset_ += n;
    return bytes;
  }

  // False when the response was abandoned (keep_waiting said so).
  bool abandoned() const { return abandoned_; }

 private:
  bool fill() {
    char chunk[16384];
    while (true) {
      long n = source_.read_some(chunk, sizeof(chunk));
      if (n > 0) {
        if (offset_ > 0 && offset_ == buffer_.size()) {
          buffer_.clear();
          offset_ = 0;
        }
        buffer_.append(chunk, static_cast<size_t>(n));
        return true;
      }
      if (n == 0) return false;
      if (!keep_waiting_()) {
        abandoned_ = true;
        return false;
      }
    }
  }

  ByteSource& source_;
  const std::function<bool()>& keep_waiting_;
  std::string buffer_;
  size_t offset_ = 0;
  bool abandoned_ = false;
};

}  // namespace

bool LineSplitter::feed(std::string_view bytes,
                        const std::function<bool(std::string_view)>& on_line) {
  pending_.append(bytes);
  size_t start = 0;
  bool keep_going = true;
  while (keep_going) {
    auto newline = pending_.find('\n', start);
    if (newline == std::string::npos) break;
    std::string_view line(pending_.data() + start, newline - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) keep_going = on_line(line);
    start = newline + 1;
  }
  pending_.erase(0, start);
  return keep_going;
}

HttpResponse read_http_response(ByteSource& source,
                                const std::function<void(const HttpResponse&)>& on_head,
                                const std::function<bool(std::string_view)>& on_body,
                                const std::function<bool()>& keep_waiting) {
  Reader reader(source, keep_waiting);
  HttpResponse response;
  std::string line;
  if (!reader.read_line(&line)) {
    if (reader.abandoned()) throw std::runtime_error("timed out waiting for the response");
    throw std::runtime_error("connection closed before a response");
  }
  // "HTTP/1.1 200 OK"
  if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12 || line[8] != ' ') {
    throw std::runtime_error("not an HTTP response: '" + line.substr(0, 80) + "'");
  }
  try {
    size_t used = 0;
    response.status = std::stoi(line.substr(9, 3), &used);
    if (used != 3) throw std::invalid_argument("status");
  } catch (const std::exception&) {
    throw std::runtime_error("bad HTTP status line: '" + line.substr(0, 80) + "'");
  }
  while (true) {
    if (!reader.read_line(&line)) throw std::runtime_error("connection closed inside the headers");
    if (line.empty()) break;
    auto colon = line.find(':');
    if (colon == std::string::npos) throw std::runtime_error("bad HTTP header: '" + line + "'");
    response.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }

  if (on_head) on_head(response);
  bool keep_going = true;
  auto deliver = [&](std::string_view bytes) {
    if (keep_going && !bytes.empty()) keep_going = on_body(bytes);
  };
  auto header = [&](const char* name) -> const std::string* {
    auto it = response.headers.find(name);
    return it == response.headers.end() ? nullptr : &it->second;
  };
  const std::string* encoding = header("transfer-encoding");
  const std::string* length = header("content-length");
  if (response.status == 204 || response.status == 304) return response;
  if (encoding && lower(*encoding).find("chunked") != std::string::npos) {
    while (keep_going) {
      if (!reader.read_line(&line)) {
        if (reader.abandoned()) break;
        throw std::runtime_error("connection closed inside a chunked body");
      }
      size_t size = 0;
      try {
        size = std::stoul(line.substr(0, line.find(';')), nullptr, 16);
      } catch (const std::exception&) {
        throw std::runtime_error("bad chunk size line: '" + line.substr(0, 40) + "'");
      }
      if (size == 0) {
        while (reader.read_line(&line) && !line.empty()) {
        }  // trailers
        break;
      }
      while (size > 0 && keep_going) {
        std::string_view bytes = reader.read_some(size);
        if (bytes.empty()) {
          if (reader.abandoned()) return response;
          throw std::runtime_error("connection closed inside a chunk");
        }
        size -= bytes.size();
        deliver(bytes);
      }
      if (keep_going && (!reader.read_line(&line) || !line.empty())) {
        if (reader.abandoned()) break;
        throw std::runtime_error("chunk not followed by CRLF");
      }
    }
  } else if (length) {
    size_t left = 0;
    try {
      left = std::stoul(*length);
    } catch (const std::exception&) {
      throw std::runtime_error("bad Content-Length: '" + *length + "'");
    }
    while (left > 0 && keep_going) {
      std::string_view bytes = reader.read_some(left);
      if (bytes.empty()) {
        if (reader.abandoned()) break;
        throw std::runtime_error("connection closed with " + std::to_string(left) +
                                 " bytes of the body missing");
      }
      left -= bytes.size();
      deliver(bytes);
    }
  } else {
    // Neither framing: the body runs until the server closes the connection.
    while (keep_going) {
      std::string_view bytes = reader.read_some(16384);
      if (bytes.empty()) break;
      deliver(bytes);
    }
  }
  return response;
}

struct HttpClient::TlsContext {
  SSL_CTX* ctx = nullptr;
  ~TlsContext() {
    if (ctx) SSL_CTX_free(ctx);
  }
};

struct HttpClient::Connection final : ByteSource {
  int fd = -1;
  SSL* ssl = nullptr;
  std::string url;

  ~Connection() override {
    if (ssl) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    if (fd >= 0) ::close(fd);
  }

  void write_all(std::string_view data) {
    while (!data.empty()) {
      long n;
      if (ssl) {
        n = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
        if (n <= 0) throw std::runtime_error("writing to " + url + ": " + openssl_error());
      } else {
        n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          throw std::runtime_error("writing to " + url + ": " +
                                   std::generic_category().message(errno));
        }
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
  }

  long read_some(char* buffer, size_t size) override {
    if (ssl) {
      int n = SSL_read(ssl, buffer, static_cast<int>(std::min<size_t>(size, 1 << 30)));
      if (n > 0) return n;
      int error = SSL_get_error(ssl, n);
      if (error == SSL_ERROR_ZERO_RETURN) return 0;
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return -1;
      if (error == SSL_ERROR_SYSCALL) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
        // An abrupt close (the apiserver being stopped) ends the stream like a clean one.
        ERR_clear_error();
        return 0;
      }
      throw std::runtime_error("reading from " + url + ": " + openssl_error());
    }
    while (true) {
      long n = ::recv(fd, buffer, size, 0);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
      if (errno == ECONNRESET) return 0;
      throw std::runtime_error("reading from " + url + ": " +
                               std::generic_category().message(errno));
    }
  }
};

HttpClient::HttpClient(HttpClientConfig config) : config_(std::move(config)) {
  const std::string& url = config_.base_url;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    tls_ = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    throw std::invalid_argument("unsupported URL '" + url + "': want http:// or https://");
  }
  rest = rest.substr(0, rest.find('/'));
  auto colon = rest.rfind(':');
  host_ = colon == std::string::npos ? rest : rest.substr(0, colon);
  try {
    port_ = colon == std::string::npos ? (tls_ ? 443 : 80) : std::stoi(rest.substr(colon + 1));
  } catch (const std::exception&) {
    throw std::invalid_argument("bad port in URL '" + url + "'");
  }
  if (host_.empty() || port_ <= 0 || port_ > 65535) {
    throw std::invalid_argument("bad host or port in URL '" + url + "'");
  }
  if (!tls_) return;
  tls_context_ = std::make_unique<TlsContext>();
  tls_context_->ctx = SSL_CTX_new(TLS_client_method());
  if (!tls_context_->ctx) throw std::runtime_error("creating a TLS context: " + openssl_error());
  SSL_CTX* ctx = tls_context_->ctx;
  if (!config_.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, config_.ca_file.c_str(), nullptr) != 1) {
      throw std::runtime_error("loading CA " + config_.ca_file + ": " + openssl_error());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!config_.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, config_.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, config_.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      throw std::runtime_error("loading client certificate " + config_.cert_file + ": " +
                               openssl_error());
    }
  }
}

HttpClient::~HttpClient() = default;

std::unique_ptr<HttpClient::Connection> HttpClient::connect() {
  auto connection = std::make_unique<Connection>();
  connection->url = config_.base_url;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = ::getaddrinfo(host_.c_str(), std::to_string(port_).c_str(), &hints, &found);
  if (rc != 0) {
    throw std::runtime_error("resolving " + host_ + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found, ::freeaddrinfo);
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    throw std::runtime_error(std::string("socket: ") + std::generic_category().message(errno));
  connection->fd = fd;
  if (::connect(fd, found->ai_addr, found->ai_addrlen) != 0 && errno != EINPROGRESS) {
    throw std::runtime_error("connecting to " + config_.base_url + ": " +
                             std::generic_category().message(errno));
  }
  pollfd pfd{fd, POLLOUT, 0};
  int ready = ::poll(&pfd, 1, static_cast<int>(config_.timeout.count()));
  int error = 0;
  socklen_t error_size = sizeof(error);
  if (ready <= 0) {
    throw std::runtime_error("connecting to " + config_.base_url + ": timed out");
  }
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_size);
  if (error != 0) {
    throw std::runtime_error("connecting to " + config_.base_url + ": " +
                             std::generic_category().message(error));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval slice{0, static_cast<suseconds_t>(
                       std::chrono::duration_cast<std::chrono::microseconds>(kReadSlice).count())};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &slice, sizeof(slice));
  timeval write_timeout{static_cast<time_t>(config_.timeout.count() / 1000),
                        static_cast<suseconds_t>((config_.timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &write_timeout, sizeof(write_timeout));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  if (!tls_) return connection;
  connection->ssl = SSL_new(tls_context_->ctx);
  if (!connection->ssl) throw std::runtime_error("SSL_new: " + openssl_error());
  SSL_set_fd(connection->ssl, fd);
  in6_addr ignored;
  bool is_ip = ::inet_pton(AF_INET, host_.c_str(), &ignored) == 1 ||
               ::inet_pton(AF_INET6, host_.c_str(), &ignored) == 1;
  X509_VERIFY_PARAM* param = SSL_get0_param(connection->ssl);
  if (is_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, host_.c_str());
  } else {
    SSL_set_tlsext_host_name(connection->ssl, host_.c_str());
    X509_VERIFY_PARAM_set1_host(param, host_.c_str(), 0);
  }
  const auto deadline = std::chrono::steady_clock::now() + config_.timeout;
  while (true) {
    int r = SSL_connect(connection->ssl);
    if (r == 1) break;
    int ssl_error = SSL_get_error(connection->ssl, r);
    bool retry = ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE ||
                 (ssl_error == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EINTR));
    if (!retry || std::chrono::steady_clock::now() > deadline) {
      std::string detail = openssl_error();
      long verify = SSL_get_verify_result(connection->ssl);
      if (verify != X509_V_OK)
        detail += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
      throw std::runtime_error("TLS handshake with " + config_.base_url + " failed: " + detail);
    }
  }
  return connection;
}

HttpResponse HttpClient::request(std::string_view method, std::string_view path,
                                 std::string_view body, std::string_view content_type) {
  auto connection = connect();
  std::string head = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: " + host_ +
                     ":" + std::to_string(port_) +
                     "\r\nAccept: application/json\r\nUser-Agent: perimeter-local-cluster\r\n"
                     "Connection: close\r\n";
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    head += "Content-Type: " + std::string(content_type) +
            "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  head += "\r\n";
  connection->write_all(head);
  connection->write_all(body);
  std::string collected;
  auto last_progress = std::chrono::steady_clock::now();
  auto keep_waiting = [&] {
    return std::chrono::steady_clock::now() - last_progress < config_.timeout;
  };
  HttpResponse response;
  try {
    response = read_http_response(
        *connection, nullptr,
        [&](std::string_view bytes) {
          collected.append(bytes);
          last_progress = std::chrono::steady_clock::now();
          return true;
        },
        keep_waiting);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(method) + " " + config_.base_url + std::string(path) +
                             ": " + e.what());
  }
  response.body = std::move(collected);
  return response;
}

HttpClient::StreamEnd HttpClient::stream_lines(std::string_view path,
                                               const std::function<bool(std::string_view)>& on_line,
                                               const std::atomic<bool>* stop,
                                               HttpResponse* response_head) {
  auto connection = connect();
  std::string head = "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + host_ + ":" +
                     std::to_string(port_) +
                     "\r\nAccept: application/json\r\nUser-Agent: perimeter-local-cluster\r\n"
                     "Connection: close\r\n\r\n";
  connection->write_all(head);
  LineSplitter splitter;
  bool stopped = false;
  std::string error_body;
  auto keep_waiting = [&] {
    if (stop && stop->load()) stopped = true;
    return !stopped;
  };
  // The status is known before the first body byte: an error answer is collected, not streamed.
  bool success = false;
  HttpResponse response = read_http_response(
      *connection,
      [&](const HttpResponse& head) { success = head.status >= 200 && head.status < 300; },
      [&](std::string_view bytes) {
        if (!success) {
          error_body.append(bytes);
          return true;
        }
        if ((stop && stop->load()) || !splitter.feed(bytes, on_line)) {
          stopped = true;
          return false;
        }
        return true;
      },
      keep_waiting);
  if (response_head) *response_head = response;
  if (!success) {
    throw std::runtime_error("GET " + config_.base_url + std::string(path) + ": HTTP " +
                             std::to_string(response.status) + ": " + error_body);
  }
  return stopped ? StreamEnd::kStopped : StreamEnd::kServerClosed;
}

}  // namespace perimeter::localcluster
