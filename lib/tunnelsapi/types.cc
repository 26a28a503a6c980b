#include "tunnelsapi/types.h"

namespace perimeter::tunnelsapi {
namespace {

void print_optional(std::ostream& out, const std::optional<std::string>& value) {
  if (value) {
    out << '"' << *value << '"';
  } else {
    out << "null";
  }
}

}  // namespace

std::ostream& operator<<(std::ostream& out, const Tunnel& tunnel) {
  out << "Tunnel{id=\"" << tunnel.id << "\", display_name=";
  print_optional(out, tunnel.display_name);
  out << ", domain=\"" << tunnel.domain << "\", created_at=\"" << tunnel.created_at
      << "\", archived_at=";
  print_optional(out, tunnel.archived_at);
  return out << "}";
}

std::ostream& operator<<(std::ostream& out, const TunnelToken& token) {
  return out << "TunnelToken{id=\"" << token.id << "\", tunnel_token=" << token.tunnel_token << "}";
}

std::ostream& operator<<(std::ostream& out, const TunnelCertificate& certificate) {
  out << "TunnelCertificate{id=\"" << certificate.id << "\", tunnel_id=\"" << certificate.tunnel_id
      << "\", fingerprint=\"" << certificate.fingerprint << "\", created_at=\""
      << certificate.created_at << "\", expires_at=";
  print_optional(out, certificate.expires_at);
  out << ", archived_at=";
  print_optional(out, certificate.archived_at);
  return out << "}";
}

}  // namespace perimeter::tunnelsapi
