#include "gateway/client_hello.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace perimeter::egressgateway {
namespace {

using Status = ClientHelloScan::Status;

struct HelloOptions {
  std::string name;
  std::string sni;  // empty: no server_name extension
  int max_version = TLS1_3_VERSION;
  std::size_t alpn_bytes = 0;     // a long ALPN list, to make the hello big
  unsigned int max_fragment = 0;  // record size limit: splits the hello over several records
};

// A real ClientHello, as OpenSSL's client writes it (memory BIOs, no network).
std::string openssl_client_hello(const HelloOptions& options) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> context(SSL_CTX_new(TLS_client_method()),
                                                            &SSL_CTX_free);
  SSL_CTX_set_max_proto_version(context.get(), options.max_version);
  if (options.max_fragment != 0) SSL_CTX_set_max_send_fragment(context.get(), options.max_fragment);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(context.get()), &SSL_free);
  if (!options.sni.empty()) SSL_set_tlsext_host_name(ssl.get(), options.sni.c_str());
  if (options.alpn_bytes != 0) {
    std::string protocols;
    for (int i = 0; protocols.size() < options.alpn_bytes; ++i) {
      const std::string protocol = "protocol-" + std::to_string(i);
      protocols.push_back(static_cast<char>(protocol.size()));
      protocols += protocol;
    }
    SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(protocols.data()),
                        static_cast<unsigned int>(protocols.size()));
  }
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), in, out);  // ssl owns both
  SSL_connect(ssl.get());           // writes the ClientHello, then wants the server's answer
  char* data = nullptr;
  const long size = BIO_get_mem_data(out, &data);
  return std::string(data, static_cast<std::size_t>(size));
}

int record_count(std::string_view bytes) {
  int count = 0;
  while (bytes.size() >= 5) {
    const std::size_t length = (std::uint8_t(bytes[3]) << 8) | std::uint8_t(bytes[4]);
    bytes.remove_prefix(5 + length);
    ++count;
  }
  return count;
}

class RealClientHellos : public ::testing::TestWithParam<HelloOptions> {};

TEST_P(RealClientHellos, SniIsReadFromTheWholeHelloAndNoPrefixIsTakenForIt) {
  const auto hello = openssl_client_hello(GetParam());
  ASSERT_GT(hello.size(), 50u);
  if (GetParam().max_fragment != 0) {
    ASSERT_GT(record_count(hello), 1) << "not split";
  }
  const auto whole = scan_client_hello(hello);
  ASSERT_EQ(whole.status, Status::kComplete);
  EXPECT_EQ(whole.server_name, GetParam().sni);
  // The scan is pure over the bytes received so far, so a split of the stream at byte k (k bytes
  // in one read, the rest in the next) is a scan of the k-byte prefix: every prefix must ask for
  // more, none may be taken for a hello (or for another name).
  for (std::size_t k = 0; k < hello.size(); ++k) {
    const auto prefix = scan_client_hello(std::string_view(hello).substr(0, k));
    ASSERT_EQ(prefix.status, Status::kIncomplete) << "split at byte " << k;
  }
  // Bytes after the hello (a client's next record) do not change it.
  const auto followed = scan_client_hello(hello + std::string("\x14\x03\x03\x00\x01\x01", 6));
  EXPECT_EQ(followed.status, Status::kComplete);
  EXPECT_EQ(followed.server_name, GetParam().sni);
}

INSTANTIATE_TEST_SUITE_P(
    OpenSsl, RealClientHellos,
    ::testing::Values(HelloOptions{"tls13", "api.anthropic.com"},
                      HelloOptions{"tls12", "files.pypi.org", TLS1_2_VERSION},
                      HelloOptions{"no_sni", ""}, HelloOptions{"uppercase", "API.Anthropic.COM"},
                      HelloOptions{"alpn", "allowed.test", TLS1_3_VERSION, 3000},
                      HelloOptions{"records_of_512", "allowed.test", TLS1_3_VERSION, 3000, 512},
                      HelloOptions{"tls12_records_of_512", "other.test", TLS1_2_VERSION, 2000,
                                   512}),
    [](const auto& info) { return info.param.name; });

TEST(ClientHello, OverTheLimitIsTooLarge) {
  const auto hello = openssl_client_hello({"big", "allowed.test", TLS1_3_VERSION, 17000});
  ASSERT_GT(hello.size(), kMaxClientHelloBytes);
  // Known by the time the gateway's buffer is full, before the rest is read.
  EXPECT_EQ(scan_client_hello(std::string_view(hello).substr(0, kMaxClientHelloBytes)).status,
            Status::kTooLarge);
  EXPECT_EQ(scan_client_hello(std::string_view(hello).substr(0, kMaxClientHelloBytes - 1)).status,
            Status::kIncomplete);
  EXPECT_EQ(scan_client_hello(hello).status, Status::kTooLarge);
}

TEST(ClientHello, EndlessRecordsThatNeverFinishAreTooLarge) {
  // A declared length under the limit, then more records than the limit holds.
  std::string bytes("\x16\x03\x01\x00\x04\x01\x00\x3f\xf0", 9);
  while (bytes.size() < kMaxClientHelloBytes + 10)
    bytes += std::string("\x16\x03\x01\x00\x01\x00", 6);
  EXPECT_EQ(scan_client_hello(bytes).status, Status::kTooLarge);
}

TEST(ClientHello, NotTls) {
  EXPECT_EQ(scan_client_hello("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, Status::kNotTls);
  EXPECT_EQ(scan_client_hello("SSH-2.0-OpenSSH_9.2\r\n").status, Status::kNotTls);
  EXPECT_EQ(scan_client_hello(std::string("\x17\x03\x03\x00\x10", 5)).status, Status::kNotTls);
  EXPECT_EQ(scan_client_hello("").status, Status::kIncomplete);
}

TEST(ClientHello, MalformedInputs) {
  const auto hello = openssl_client_hello({"x", "allowed.test"});
  // A ServerHello's type where the ClientHello's should be.
  std::string server_hello = hello;
  server_hello[5] = 2;
  EXPECT_EQ(scan_client_hello(server_hello).status, Status::kMalformed);
  // A record version that is not TLS.
  std::string bad_version = hello;
  bad_version[1] = 2;
  EXPECT_EQ(scan_client_hello(bad_version).status, Status::kMalformed);
  // An empty handshake record.
  EXPECT_EQ(scan_client_hello(std::string("\x16\x03\x01\x00\x00", 5)).status, Status::kMalformed);
  // An alert record between the hello's fragments.
  const auto split = openssl_client_hello({"x", "allowed.test", TLS1_3_VERSION, 3000, 512});
  std::string interleaved = split.substr(0, 5 + 512) +
                            std::string("\x15\x03\x03\x00\x02\x01\x00", 7) + split.substr(5 + 512);
  EXPECT_EQ(scan_client_hello(interleaved).status, Status::kMalformed);
  // The hello's lengths disagree: one byte cut from its body, record and handshake lengths fixed.
  std::string cut = hello.substr(0, hello.size() - 1);
  const std::size_t record_length = cut.size() - 5;
  cut[3] = static_cast<char>(record_length >> 8);
  cut[4] = static_cast<char>(record_length & 0xff);
  const std::size_t message_length = record_length - 4;
  cut[6] = static_cast<char>(message_length >> 16);
  cut[7] = static_cast<char>((message_length >> 8) & 0xff);
  cut[8] = static_cast<char>(message_length & 0xff);
  EXPECT_EQ(scan_client_hello(cut).status, Status::kMalformed);
}

// A hand-built ClientHello with the given extensions block.
std::string hello_with_extensions(const std::string& extensions) {
  std::string body("\x03\x03", 2);
  body += std::string(32, 'r');
  body += std::string("\x00", 1);              // session id
  body += std::string("\x00\x02\x13\x01", 4);  // one cipher suite
  body += std::string("\x01\x00", 2);          // null compression
  body.push_back(static_cast<char>(extensions.size() >> 8));
  body.push_back(static_cast<char>(extensions.size() & 0xff));
  body += extensions;
  std::string message("\x01", 1);
  message.push_back(0);
  message.push_back(static_cast<char>(body.size() >> 8));
  message.push_back(static_cast<char>(body.size() & 0xff));
  message += body;
  std::string record("\x16\x03\x01", 3);
  record.push_back(static_cast<char>(message.size() >> 8));
  record.push_back(static_cast<char>(message.size() & 0xff));
  return record + message;
}

std::string server_name_extension(const std::string& name, char type = 0) {
  std::string entry(1, type);
  entry.push_back(static_cast<char>(name.size() >> 8));
  entry.push_back(static_cast<char>(name.size() & 0xff));
  entry += name;
  std::string list;
  list.push_back(static_cast<char>(entry.size() >> 8));
  list.push_back(static_cast<char>(entry.size() & 0xff));
  list += entry;
  std::string extension("\x00\x00", 2);
  extension.push_back(static_cast<char>(list.size() >> 8));
  extension.push_back(static_cast<char>(list.size() & 0xff));
  return extension + list;
}

TEST(ClientHello, HandBuiltServerNames) {
  const auto plain = scan_client_hello(hello_with_extensions(server_name_extension("a.test")));
  ASSERT_EQ(plain.status, Status::kComplete);
  EXPECT_EQ(plain.server_name, "a.test");
  // Two server_name extensions: the gateway and the server could read different ones.
  EXPECT_EQ(scan_client_hello(hello_with_extensions(server_name_extension("a.test") +
                                                    server_name_extension("b.test")))
                .status,
            Status::kMalformed);
  // A NUL inside the name ("allowed.test\0.evil.net").
  EXPECT_EQ(scan_client_hello(
                hello_with_extensions(server_name_extension(std::string("a.test\0.evil.net", 16))))
                .status,
            Status::kMalformed);
  // An entry of another name type is not a host name.
  const auto other_type =
      scan_client_hello(hello_with_extensions(server_name_extension("a.test", 7)));
  ASSERT_EQ(other_type.status, Status::kComplete);
  EXPECT_EQ(other_type.server_name, "");
  // An extension length past the end.
  EXPECT_EQ(scan_client_hello(hello_with_extensions(std::string("\x00\x00\x00\x09\x00", 5))).status,
            Status::kMalformed);
}

// The SNI an OpenSSL server takes from `bytes` (its servername callback, after it has parsed the
// ClientHello's extensions), or nullopt when it does not get that far.
std::optional<std::string> openssl_server_sni(std::string_view bytes) {
  struct Seen {
    bool reached = false;
    std::string name;
  } seen;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> context(SSL_CTX_new(TLS_server_method()),
                                                            &SSL_CTX_free);
  SSL_CTX_set_tlsext_servername_callback(
      context.get(), +[](SSL* ssl, int*, void* arg) {
        auto* seen = static_cast<Seen*>(arg);
        seen->reached = true;
        const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        seen->name = name == nullptr ? "" : name;
        return SSL_TLSEXT_ERR_ALERT_FATAL;  // enough: stop the handshake here
      });
  SSL_CTX_set_tlsext_servername_arg(context.get(), &seen);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(context.get()), &SSL_free);
  BIO* in = BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()));
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), in, out);
  SSL_accept(ssl.get());
  if (!seen.reached) return std::nullopt;
  return seen.name;
}

// The property the SNI check rests on: whenever the gateway reads a name from a ClientHello, a
// TLS server reading the same bytes reads the same name (or refuses them). Real ClientHellos and
// 30,000 mutations of them (bytes replaced, bits flipped, bytes inserted), from a
// fixed seed.
TEST(ClientHello, NeverReadsANameOtherThanOpenSslsServerReads) {
  std::vector<std::string> hellos;
  for (const auto& options :
       {HelloOptions{"a", "allowed.test"}, HelloOptions{"b", "x.example.com", TLS1_2_VERSION},
        HelloOptions{"c", ""}, HelloOptions{"d", "allowed.test", TLS1_3_VERSION, 600, 512}}) {
    hellos.push_back(openssl_client_hello(options));
  }
  for (const auto& hello : hellos) {
    const auto ours = scan_client_hello(hello);
    ASSERT_EQ(ours.status, Status::kComplete);
    ASSERT_EQ(openssl_server_sni(hello), std::optional<std::string>(ours.server_name));
  }
  std::mt19937 random(20261130);
  int compared = 0;
  for (int i = 0; i < 30000; ++i) {
    std::string bytes = hellos[random() % hellos.size()];
    const int changes = 1 + static_cast<int>(random() % 4);
    for (int c = 0; c < changes; ++c) {
      const std::size_t at = random() % bytes.size();
      switch (random() % 3) {
        case 0:
          bytes[at] = static_cast<char>(random());
          break;
        case 1:
          bytes[at] = static_cast<char>(bytes[at] ^ (1 << (random() % 8)));
          break;
        default:
          bytes.insert(at, 1, static_cast<char>(random()));
          break;
      }
    }
    const auto ours = scan_client_hello(bytes);
    if (ours.status != Status::kComplete || ours.server_name.empty()) continue;
    const auto theirs = openssl_server_sni(bytes);
    if (!theirs) continue;  // the server refuses them: nothing would be served
    ++compared;
    ASSERT_EQ(*theirs, ours.server_name) << "mutation " << i;
  }
  EXPECT_GT(compared, 5000) << compared;  // the comparison did happen, on many inputs
}

}  // namespace
}  // namespace perimeter::egressgateway
