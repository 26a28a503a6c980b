#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tunnelsapi/secret.h"

namespace perimeter::tunnelsapi {

// An MCP tunnel (`type: "tunnel"`), as the official SDK's BetaTunnel. Times are the API's RFC 3339
// strings.
struct Tunnel {
  std::string id;                           // tnl_...
  std::optional<std::string> display_name;  // 1-255 characters, or null
  std::string domain;  // the allocated hostname: routes are <route>.<domain>; never reused
  std::string created_at;
  std::optional<std::string> archived_at;  // null while active

  bool archived() const { return archived_at.has_value(); }
  bool operator==(const Tunnel&) const = default;
};

// A tunnel's connector token (`type: "tunnel_token"`). `id` names the current value and changes
// on rotation; `tunnel_token` is the credential cloudflared runs with.
struct TunnelToken {
  std::string id;
  Secret tunnel_token;
  bool operator==(const TunnelToken&) const = default;
};

// A CA certificate registered on a tunnel (`type: "tunnel_certificate"`).
struct TunnelCertificate {
  std::string id;  // tcrt_...
  std::string tunnel_id;
  std::string fingerprint;  // lowercase hex SHA-256 of the DER
  std::string created_at;
  std::optional<std::string> expires_at;  // null when it does not expire
  std::optional<std::string> archived_at;

  bool archived() const { return archived_at.has_value(); }
  bool operator==(const TunnelCertificate&) const = default;
};

// One page of a list: `next_page` is the cursor for the next one, nullopt on the last.
struct TunnelPage {
  std::vector<Tunnel> data;
  std::optional<std::string> next_page;
};

struct TunnelCertificatePage {
  std::vector<TunnelCertificate> data;
  std::optional<std::string> next_page;
};

// Debug output (gtest, logs): every field but a credential, which prints as <redacted>.
std::ostream& operator<<(std::ostream& out, const Tunnel& tunnel);
std::ostream& operator<<(std::ostream& out, const TunnelToken& token);
std::ostream& operator<<(std::ostream& out, const TunnelCertificate& certificate);

}  // namespace perimeter::tunnelsapi
