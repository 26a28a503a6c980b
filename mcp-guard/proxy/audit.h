#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/audit_sink.h"
#include "proxy/guard_config.h"

namespace perimeter::mcpguard {

// The audit trail (docs/mcp-guard.md, "Audit"): one JSON line per JSON-RPC request or
// notification, on stdout, apart from the operational log on stderr.

inline constexpr std::string_view kAuditType = "perimeter.mcp-audit.v1";

struct AuditRecord {
  std::chrono::system_clock::time_point time;  // when the request arrived
  std::string route;
  bool from_server = false;  // direction "server": a request the server sent on a stream
  std::optional<std::string> session;
  std::optional<std::string> protocol_version;
  std::string method;
  nlohmann::json id;  // null for a notification
  std::optional<std::string> name;
  bool allowed = true;
  std::optional<std::string> reason;  // why it was denied
  std::optional<int> upstream_status;
  std::string_view outcome = "no_response";  // result, error, no_response, stream_ended
  std::optional<std::int64_t> rpc_error_code;
  std::int64_t duration_ms = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  // Level full only: params.arguments (tools) or params, and the response's result or error.
  nlohmann::json arguments;
  nlohmann::json result;
};

// The line for `record`, without its newline. At level metadata `arguments` and `result` are left
// out whatever they hold; at full they are written with every value under a key matching one of
// `redact_keys` (fnmatch globs, case-insensitive) replaced by "[REDACTED]".
std::string render_audit_line(const AuditRecord& record, const AuditConfig& config);
// The same line in place of `*line`'s text: a caller that renders a line per request passes the
// same string each time, so its capacity is reused rather than allocated per line.
void render_audit_line(const AuditRecord& record, const AuditConfig& config, std::string* line);

// `value` with every value under a key matching one of `redact_keys` replaced, at any depth.
nlohmann::json redact_by_key(const nlohmann::json& value,
                             const std::vector<std::string>& redact_keys);

// Where audit lines go: stdout (core/audit_sink.h), or a test's recorder.
using perimeter::AuditSink;
using perimeter::StdoutAuditSink;

}  // namespace perimeter::mcpguard
