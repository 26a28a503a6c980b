#include "controllers/mcptunnel/certificates.h"

#include "core/base64.h"

namespace perimeter::mcptunnel {
namespace {

constexpr const char* kCaCert = "ca.crt";
constexpr const char* kCaKey = "ca.key";
constexpr const char* kRetiringCaCert = "retiring-ca.crt";
// notBefore this far back, so an edge whose clock is a little behind accepts a new certificate.
constexpr std::chrono::minutes kBackdate{5};

}  // namespace

std::optional<std::string> secret_value(const nlohmann::json& secret, const std::string& key) {
  if (!secret.is_object() || !secret.contains("data") || !secret["data"].is_object()) {
    return std::nullopt;
  }
  const auto it = secret["data"].find(key);
  if (it == secret["data"].end() || !it->is_string()) return std::nullopt;
  std::string decoded;
  if (!base64_decode_any(it->get<std::string>(), &decoded)) return std::nullopt;
  return decoded;
}

CaSecretContents read_ca_secret(const nlohmann::json& secret) {
  CaSecretContents contents;
  if (secret.is_null()) return contents;
  const auto cert = secret_value(secret, kCaCert);
  const auto key = secret_value(secret, kCaKey);
  if (cert && key) {
    TunnelCa ca{pki::Certificate::from_pem(*cert), pki::PrivateKey::from_pem(*key)};
    if (!ca.certificate.matches(ca.key)) {
      throw pki::PkiError("ca.key is not the key of ca.crt");
    }
    contents.current.emplace(std::move(ca));
  }
  if (const auto retiring = secret_value(secret, kRetiringCaCert)) {
    contents.retiring = pki::Certificate::from_pem(*retiring);
  }
  return contents;
}

nlohmann::json build_ca_secret(const McpTunnel& tunnel, const TunnelCa& current,
                               const std::optional<pki::Certificate>& retiring) {
  auto secret = owned_secret(tunnel, object_names(tunnel.name).ca_secret, "Opaque");
  secret["data"][kCaCert] = base64_encode(current.certificate.pem());
  secret["data"][kCaKey] = base64_encode(current.key.pem());
  if (retiring) secret["data"][kRetiringCaCert] = base64_encode(retiring->pem());
  return secret;
}

TunnelCa issue_tunnel_ca(const McpTunnel& tunnel, TimePoint now) {
  auto key = pki::PrivateKey::generate_ec_p256();
  pki::CaRequest request;
  request.common_name = "Perimeter MCP tunnel CA " + tunnel.namespace_ + "/" + tunnel.name;
  request.organization = "Perimeter";
  request.lifetime = tunnel.certificate.ca_duration;
  request.backdate = kBackdate;
  request.max_path_length = 0;  // it signs the gateway's certificate only
  auto certificate = pki::issue_self_signed_ca(request, key, now);
  return TunnelCa{std::move(certificate), std::move(key)};
}

TimePoint ca_rotation_at(const McpTunnel& tunnel, const pki::Certificate& ca) {
  return ca.not_after() - tunnel.certificate.ca_renew_before;
}

bool ca_rotation_due(const McpTunnel& tunnel, const pki::Certificate& ca, TimePoint now) {
  return now >= ca_rotation_at(tunnel, ca);
}

std::optional<pki::Certificate> read_tls_certificate(const nlohmann::json& secret) {
  const auto pem = secret_value(secret, "tls.crt");
  if (!pem) return std::nullopt;
  return pki::Certificate::from_pem(*pem);
}

TimePoint server_renewal_at(const McpTunnel& tunnel, const pki::Certificate& leaf) {
  // A certificate cut short by its CA's expiry renews at the same fraction of its life.
  const auto lifetime = leaf.not_after() - leaf.not_before();
  const auto configured = std::chrono::duration_cast<std::chrono::system_clock::duration>(
      tunnel.certificate.duration + kBackdate);
  const auto renew_before = std::chrono::duration_cast<std::chrono::system_clock::duration>(
      tunnel.certificate.renew_before);
  if (lifetime >= configured) return leaf.not_after() - renew_before;
  const double fraction = static_cast<double>(lifetime.count()) / configured.count();
  return leaf.not_after() -
         std::chrono::duration_cast<std::chrono::system_clock::duration>(renew_before * fraction);
}

std::optional<std::string> server_certificate_due(const McpTunnel& tunnel,
                                                  const nlohmann::json& tls_secret,
                                                  const pki::Certificate& ca,
                                                  const std::string& domain, TimePoint now) {
  if (tls_secret.is_null()) return "no server certificate yet";
  const auto cert_pem = secret_value(tls_secret, "tls.crt");
  const auto key_pem = secret_value(tls_secret, "tls.key");
  if (!cert_pem || !key_pem) return "the TLS Secret lacks tls.crt or tls.key";
  try {
    const auto leaf = pki::Certificate::from_pem(*cert_pem);
    const auto key = pki::PrivateKey::from_pem(*key_pem);
    if (!leaf.matches(key)) return "tls.key is not the key of tls.crt";
    if (const auto why = pki::verify_server_certificate(leaf, ca, "gateway." + domain, now)) {
      return "the certificate no longer fits the tunnel: " + *why;
    }
    if (now >= server_renewal_at(tunnel, leaf)) return "the certificate is due for renewal";
  } catch (const pki::PkiError& e) {
    return std::string("the TLS Secret does not parse: ") + e.what();
  }
  return std::nullopt;
}

ServerCertificate issue_server_certificate(const McpTunnel& tunnel, const TunnelCa& ca,
                                           const std::string& domain, TimePoint now) {
  auto key = pki::PrivateKey::generate_ec_p256();
  pki::CertificateRequest request;
  request.common_name = "*." + domain;
  request.dns_names = {"*." + domain};
  request.backdate = kBackdate;
  request.usage = pki::Usage::kServer;
  const auto until_ca_expiry =
      std::chrono::duration_cast<std::chrono::seconds>(ca.certificate.not_after() - now);
  request.lifetime = std::min(tunnel.certificate.duration, until_ca_expiry);
  auto certificate = pki::issue_certificate(request, key, ca.certificate, ca.key, now);
  return ServerCertificate{std::move(certificate), std::move(key)};
}

nlohmann::json build_tls_secret(const McpTunnel& tunnel, const ServerCertificate& server,
                                const pki::Certificate& ca) {
  auto secret = owned_secret(tunnel, object_names(tunnel.name).tls_secret, "kubernetes.io/tls");
  secret["data"]["tls.crt"] = base64_encode(server.certificate.pem());
  secret["data"]["tls.key"] = base64_encode(server.key.pem());
  secret["data"]["ca.crt"] = base64_encode(ca.pem());
  return secret;
}

}  // namespace perimeter::mcptunnel
