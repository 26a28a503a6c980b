#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace perimeter::egressgateway {

// One connection's audit line (docs/egress-gateway.md, "Audit"), written when it ends. Never the
// payload, never the credential.
struct AuditRecord {
  std::chrono::system_clock::time_point time;  // when the connection was accepted
  std::string environment;                     // empty before the credential was verified
  std::string session;
  std::string client;  // "ip:port"
  std::string host;    // the CONNECT target's host, as normalized
  int port = 0;
  std::string upstream;  // "ip:port" dialled, empty when none was
  bool allowed = false;
  std::string reason;  // "ok" for a tunnel that ran, else why it was refused or cut
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;
  std::int64_t duration_ms = 0;
};

// The record as one JSON object on one line (no newline).
std::string audit_line(const AuditRecord& record);

}  // namespace perimeter::egressgateway
