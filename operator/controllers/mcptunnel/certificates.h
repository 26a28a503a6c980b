#pragma once

// The tunnel's certificates as the operator keeps them (../shared/docs/mcp-tunnels.md): a CA it
// registers through the Tunnels API, kept with its key in <name>-ca (never mounted into a pod),
// and the gateway's server certificate for *.<domain>, signed directly by that CA, in <name>-tls
// (what the proxy serves and hot-reloads). During a CA rotation <name>-ca also holds the CA being
// retired, so its registration can be found and archived after the overlap.

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "controllers/mcptunnel/mcp_tunnel.h"
#include "pki/pki.h"

namespace perimeter::mcptunnel {

using TimePoint = std::chrono::system_clock::time_point;

struct TunnelCa {
  pki::Certificate certificate;
  pki::PrivateKey key;
};

struct CaSecretContents {
  std::optional<TunnelCa> current;
  std::optional<pki::Certificate> retiring;  // the CA a rotation replaced, until it is archived
};

// Reads <name>-ca (as the API returns it; null: absent). Throws pki::PkiError when it holds
// something that does not parse, or a key that is not the certificate's.
CaSecretContents read_ca_secret(const nlohmann::json& secret);
nlohmann::json build_ca_secret(const McpTunnel& tunnel, const TunnelCa& current,
                               const std::optional<pki::Certificate>& retiring);

// A new tunnel CA: ECDSA P-256, CA:TRUE critical, SKI, keyCertSign, path length 0, valid for
// spec.certificate.caDuration.
TunnelCa issue_tunnel_ca(const McpTunnel& tunnel, TimePoint now);
// Whether the CA is within caRenewBefore of its expiry.
bool ca_rotation_due(const McpTunnel& tunnel, const pki::Certificate& ca, TimePoint now);
TimePoint ca_rotation_at(const McpTunnel& tunnel, const pki::Certificate& ca);

struct ServerCertificate {
  pki::Certificate certificate;
  pki::PrivateKey key;
};

// Why the server certificate in <name>-tls (null: absent) must be issued again now, or nullopt:
// absent or unreadable, its key not its own, not signed by `ca`, not for *.<domain>, or within
// renewBefore of its expiry.
std::optional<std::string> server_certificate_due(const McpTunnel& tunnel,
                                                  const nlohmann::json& tls_secret,
                                                  const pki::Certificate& ca,
                                                  const std::string& domain, TimePoint now);
// A server certificate for *.<domain> signed by the CA, with a fresh key; it never outlives the CA.
ServerCertificate issue_server_certificate(const McpTunnel& tunnel, const TunnelCa& ca,
                                           const std::string& domain, TimePoint now);
// <name>-tls, type kubernetes.io/tls: tls.crt, tls.key, ca.crt.
nlohmann::json build_tls_secret(const McpTunnel& tunnel, const ServerCertificate& server,
                                const pki::Certificate& ca);
// The server certificate in a kubernetes.io/tls Secret (tls.crt), or nullopt when absent.
std::optional<pki::Certificate> read_tls_certificate(const nlohmann::json& secret);
TimePoint server_renewal_at(const McpTunnel& tunnel, const pki::Certificate& leaf);

// A Secret's data value (base64 in the API), or nullopt when the key is absent.
std::optional<std::string> secret_value(const nlohmann::json& secret, const std::string& key);

}  // namespace perimeter::mcptunnel
