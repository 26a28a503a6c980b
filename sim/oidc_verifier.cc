#include "sim/oidc_verifier.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/version.hpp>
#include <stdexcept>

namespace perimeter::sim {
namespace {

using nlohmann::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, Deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, Deleter<OSSL_PARAM, OSSL_PARAM_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, Deleter<ECDSA_SIG, ECDSA_SIG_free>>;

std::string string_member(const json& object, const char* name) {
  if (!object.is_object() || !object.contains(name) || !object[name].is_string()) return "";
  return object[name].get<std::string>();
}

BnPtr bignum_member(const json& jwk, const char* name) {
  std::string bytes;
  if (!base64url_decode(string_member(jwk, name), &bytes) || bytes.empty()) return nullptr;
  return BnPtr(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()),
                         static_cast<int>(bytes.size()), nullptr));
}

PkeyPtr pkey_from_params(const char* type, OSSL_PARAM_BLD* builder) {
  ParamPtr params(OSSL_PARAM_BLD_to_param(builder));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) return nullptr;
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) return nullptr;
  return PkeyPtr(key);
}

// The public key a JWK describes: RSA (n, e) of at least 2048 bits, or EC P-256 (x, y).
PkeyPtr key_from_jwk(const json& jwk, std::string* error) {
  const std::string kty = string_member(jwk, "kty");
  ParamBldPtr builder(OSSL_PARAM_BLD_new());
  if (kty == "RSA") {
    BnPtr n = bignum_member(jwk, "n"), e = bignum_member(jwk, "e");
    if (!n || !e) {
      *error = "the RSA key has no valid n or e";
      return nullptr;
    }
    if (BN_num_bits(n.get()) < 2048) {
      *error = "the RSA key is shorter than 2048 bits";
      return nullptr;
    }
    OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, n.get());
    OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, e.get());
    PkeyPtr key = pkey_from_params("RSA", builder.get());
    if (!key) *error = "the RSA key cannot be loaded";
    return key;
  }
  if (kty == "EC") {
    if (string_member(jwk, "crv") != "P-256") {
      *error = "only EC keys on P-256 are supported";
      return nullptr;
    }
    std::string x, y;
    if (!base64url_decode(string_member(jwk, "x"), &x) ||
        !base64url_decode(string_member(jwk, "y"), &y) || x.size() != 32 || y.size() != 32) {
      *error = "the EC key has no valid x or y";
      return nullptr;
    }
    const std::string point = std::string(1, '\x04') + x + y;
    OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                     point.size());
    PkeyPtr key = pkey_from_params("EC", builder.get());
    if (!key) *error = "the EC key is not a point on P-256";
    return key;
  }
  *error = "unsupported key type `" + kty + "`";
  return nullptr;
}

// JWS ES256 signatures are r||s (32 bytes each); OpenSSL verifies DER.
bool es256_to_der(const std::string& raw, std::string* der) {
  if (raw.size() != 64) return false;
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return false;
  }
  unsigned char* out = nullptr;
  const int length = i2d_ECDSA_SIG(sig.get(), &out);
  if (length <= 0) return false;
  der->assign(reinterpret_cast<char*>(out), static_cast<std::size_t>(length));
  OPENSSL_free(out);
  return true;
}

bool verify_signature(EVP_PKEY* key, const std::string& signed_part, const std::string& signature) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) {
    return false;
  }
  return EVP_DigestVerify(
             ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
             reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
}

// The keys of `jwks` that could have made this signature: the one named by `kid`, or, when the
// token names none, every key of the algorithm's type.
std::vector<json> candidate_keys(const json& jwks, const std::string& kid, const std::string& kty) {
  std::vector<json> keys;
  if (!jwks.is_object() || !jwks.contains("keys") || !jwks["keys"].is_array()) return keys;
  for (const auto& key : jwks["keys"]) {
    if (string_member(key, "kty") != kty) continue;
    const std::string use = string_member(key, "use");
    if (!use.empty() && use != "sig") continue;
    if (!kid.empty() && string_member(key, "kid") != kid) continue;
    keys.push_back(key);
  }
  return keys;
}

struct Url {
  std::string scheme, host, port, target;
};

Url parse_url(const std::string& url) {
  Url parsed;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw std::runtime_error("not a URL: " + url);
  parsed.scheme = url.substr(0, scheme_end);
  if (parsed.scheme != "https" && parsed.scheme != "http") {
    throw std::runtime_error("unsupported scheme in " + url);
  }
  const std::size_t authority_start = scheme_end + 3;
  const std::size_t path_start = url.find('/', authority_start);
  std::string authority =
      url.substr(authority_start, path_start == std::string::npos ? std::string::npos
                                                                  : path_start - authority_start);
  parsed.target = path_start == std::string::npos ? "/" : url.substr(path_start);
  parsed.port = parsed.scheme == "https" ? "443" : "80";
  if (!authority.empty() && authority[0] == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string::npos) throw std::runtime_error("bad IPv6 host in " + url);
    parsed.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      parsed.port = authority.substr(close + 2);
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string::npos) {
    parsed.host = authority.substr(0, colon);
    parsed.port = authority.substr(colon + 1);
  } else {
    parsed.host = authority;
  }
  if (parsed.host.empty()) throw std::runtime_error("no host in " + url);
  return parsed;
}

std::string origin_of(const std::string& url) {
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url;
  const std::size_t path_start = url.find('/', scheme_end + 3);
  return path_start == std::string::npos ? url : url.substr(0, path_start);
}

void set_socket_timeouts(asio::ip::tcp::socket& socket, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

template <typename Stream>
HttpGetResult exchange(Stream& stream, const Url& url, const std::string& accept) {
  http::request<http::empty_body> request{http::verb::get, url.target, 11};
  request.set(http::field::host, url.host);
  request.set(http::field::accept, accept);
  request.set(http::field::user_agent, "perimeter-sim");
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  http::read(stream, buffer, parser);
  return {static_cast<int>(parser.get().result_int()), parser.get().body()};
}

}  // namespace

HttpGetResult https_get(const std::string& url_text, const std::string& ca_file,
                        std::chrono::milliseconds timeout, const std::string& accept) {
  const Url url = parse_url(url_text);
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(url.host, url.port);
  if (url.scheme == "http") {
    asio::ip::tcp::socket socket(io);
    asio::connect(socket, endpoints);
    set_socket_timeouts(socket, timeout);
    return exchange(socket, url, accept);
  }
  asio::ssl::context tls(asio::ssl::context::tls_client);
  if (ca_file.empty()) {
    tls.set_default_verify_paths();
  } else {
    tls.load_verify_file(ca_file);
  }
  tls.set_verify_mode(asio::ssl::verify_peer);
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, tls);
  // Check the server's name: an IP against its IP SANs, a name against its DNS SANs (and SNI).
  boost::system::error_code not_ip;
  asio::ip::make_address(url.host, not_ip);
  X509_VERIFY_PARAM* param = SSL_get0_param(stream.native_handle());
  if (!not_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
  } else {
    X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
    SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());
  }
  asio::connect(stream.next_layer(), endpoints);
  set_socket_timeouts(stream.next_layer(), timeout);
  stream.handshake(asio::ssl::stream_base::client);
  HttpGetResult result = exchange(stream, url, accept);
  boost::system::error_code ignored;
  stream.shutdown(ignored);
  return result;
}

DiscoveryKeySource::DiscoveryKeySource(std::string issuer, std::string discovery_url,
                                       std::string ca_file, Clock& clock,
                                       std::chrono::seconds min_refresh_interval)
    : issuer_(std::move(issuer)),
      discovery_url_(std::move(discovery_url)),
      ca_file_(std::move(ca_file)),
      clock_(clock),
      min_refresh_interval_(min_refresh_interval) {
  while (!discovery_url_.empty() && discovery_url_.back() == '/') discovery_url_.pop_back();
}

std::optional<json> DiscoveryKeySource::jwks(bool refresh, std::string* error) {
  std::lock_guard lock(mutex_);
  const bool recent = last_fetch_ && clock_.now() - *last_fetch_ < min_refresh_interval_;
  if (cached_ && (!refresh || recent)) return cached_;
  if (!cached_ && recent) {
    *error = last_error_;
    return std::nullopt;
  }
  last_fetch_ = clock_.now();
  std::string why;
  std::optional<json> fetched = fetch(&why);
  if (fetched) {
    cached_ = std::move(fetched);
    last_error_.clear();
    return cached_;
  }
  last_error_ = why;
  if (cached_) return cached_;  // keep serving the last good set
  *error = why;
  return std::nullopt;
}

std::optional<json> DiscoveryKeySource::fetch(std::string* error) {
  constexpr std::chrono::milliseconds kTimeout{5000};
  const std::string discovery = discovery_url_ + "/.well-known/openid-configuration";
  try {
    HttpGetResult reply = https_get(discovery, ca_file_, kTimeout, "application/json");
    if (reply.status != 200) {
      *error = "GET " + discovery + " answered " + std::to_string(reply.status) + ": " +
               reply.body.substr(0, 300);
      return std::nullopt;
    }
    const json document = json::parse(reply.body, nullptr, false);
    if (document.is_discarded() || !document.is_object()) {
      *error = "GET " + discovery + " did not return a JSON object";
      return std::nullopt;
    }
    if (string_member(document, "issuer") != issuer_) {
      *error = "the discovery document at " + discovery + " names issuer `" +
               string_member(document, "issuer") + "`, not `" + issuer_ + "`";
      return std::nullopt;
    }
    std::string jwks_uri = string_member(document, "jwks_uri");
    if (jwks_uri.empty()) {
      *error = "the discovery document at " + discovery + " has no jwks_uri";
      return std::nullopt;
    }
    const std::string issuer_origin = origin_of(issuer_);
    if (jwks_uri.rfind(issuer_origin + "/", 0) == 0) {
      jwks_uri = origin_of(discovery_url_) + jwks_uri.substr(issuer_origin.size());
    }
    // A kube-apiserver serves the key set only as application/jwk-set+json (406 for JSON).
    reply = https_get(jwks_uri, ca_file_, kTimeout, "application/jwk-set+json, application/json");
    if (reply.status != 200) {
      *error = "GET " + jwks_uri + " answered " + std::to_string(reply.status) + ": " +
               reply.body.substr(0, 300);
      return std::nullopt;
    }
    json keys = json::parse(reply.body, nullptr, false);
    if (keys.is_discarded() || !keys.is_object() || !keys.contains("keys") ||
        !keys["keys"].is_array()) {
      *error = "GET " + jwks_uri + " did not return a JSON Web Key Set";
      return std::nullopt;
    }
    return keys;
  } catch (const std::exception& e) {
    *error = "fetching the issuer's keys from " + discovery_url_ + " failed: " + e.what();
    return std::nullopt;
  }
}

JwtVerification OidcVerifier::verify(const std::string& token, const std::string& expected_issuer,
                                     const std::string& audience, KeySource& keys) const {
  JwtVerification result;
  auto refuse = [&result](std::string why) {
    result.error = std::move(why);
    return result;
  };
  const std::size_t first = token.find('.');
  const std::size_t second = first == std::string::npos ? first : token.find('.', first + 1);
  if (second == std::string::npos || token.find('.', second + 1) != std::string::npos) {
    return refuse("the assertion is not a compact JWT (three dot-separated parts)");
  }
  std::string header_text, claims_text, signature;
  if (!base64url_decode(std::string_view(token).substr(0, first), &header_text) ||
      !base64url_decode(std::string_view(token).substr(first + 1, second - first - 1),
                        &claims_text) ||
      !base64url_decode(std::string_view(token).substr(second + 1), &signature)) {
    return refuse("the assertion is not base64url-encoded");
  }
  const json header = json::parse(header_text, nullptr, false);
  const json claims = json::parse(claims_text, nullptr, false);
  if (!header.is_object() || !claims.is_object()) {
    return refuse("the assertion's header or claims are not JSON objects");
  }
  const std::string alg = string_member(header, "alg");
  if (alg != "RS256" && alg != "ES256") {
    return refuse("the assertion's algorithm `" + alg + "` is not accepted (RS256 or ES256)");
  }
  const std::string kid = string_member(header, "kid");
  const std::string kty = alg == "RS256" ? "RSA" : "EC";
  std::string signature_bytes = signature;
  if (alg == "ES256" && !es256_to_der(signature, &signature_bytes)) {
    return refuse("the assertion's ES256 signature is not 64 bytes");
  }
  const std::string signed_part = token.substr(0, second);

  bool verified = false;
  std::string key_error;
  for (bool refresh : {false, true}) {
    std::string fetch_error;
    std::optional<json> jwks = keys.jwks(refresh, &fetch_error);
    if (!jwks) return refuse("the issuer's signing keys are unavailable: " + fetch_error);
    const std::vector<json> candidates = candidate_keys(*jwks, kid, kty);
    for (const json& jwk : candidates) {
      PkeyPtr key = key_from_jwk(jwk, &key_error);
      if (key && verify_signature(key.get(), signed_part, signature_bytes)) {
        verified = true;
        break;
      }
    }
    // A known key that does not verify is a bad signature; only an unknown kid refreshes.
    if (verified || !candidates.empty()) break;
  }
  if (!verified) {
    return refuse(kid.empty() ? "the assertion's signature matches none of the issuer's keys"
                              : "the assertion's signature does not verify with the issuer's "
                                "key `" +
                                    kid + "`");
  }

  const std::string issuer = string_member(claims, "iss");
  if (issuer != expected_issuer) {
    return refuse("the assertion's issuer `" + issuer + "` is not `" + expected_issuer + "`");
  }
  bool audience_ok = false;
  if (claims.contains("aud") && claims["aud"].is_string()) {
    audience_ok = claims["aud"].get<std::string>() == audience;
  } else if (claims.contains("aud") && claims["aud"].is_array()) {
    for (const auto& value : claims["aud"]) {
      if (value.is_string() && value.get<std::string>() == audience) audience_ok = true;
    }
  }
  if (!audience_ok) {
    return refuse("the assertion's audience " +
                  (claims.contains("aud") ? claims["aud"].dump() : std::string("(none)")) +
                  " does not include `" + audience + "`");
  }
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(clock_.wall_now().time_since_epoch())
          .count();
  const std::int64_t skew = skew_.count();
  if (!claims.contains("exp") || !claims["exp"].is_number()) {
    return refuse("the assertion has no exp");
  }
  if (claims["exp"].get<double>() + static_cast<double>(skew) <= static_cast<double>(now)) {
    return refuse("the assertion expired at " +
                  std::to_string(static_cast<std::int64_t>(claims["exp"].get<double>())));
  }
  for (const char* name : {"nbf", "iat"}) {
    if (!claims.contains(name)) continue;
    if (!claims[name].is_number())
      return refuse(std::string("the assertion's ") + name + " is not a number");
    if (claims[name].get<double>() - static_cast<double>(skew) > static_cast<double>(now)) {
      return refuse(std::string("the assertion's ") + name + " is in the future");
    }
  }
  result.jwt = VerifiedJwt{header, claims, issuer, string_member(claims, "sub")};
  return result;
}

}  // namespace perimeter::sim
