#include "proxy/audit.h"

#include <fnmatch.h>

#include <cstdio>

#include "core/time_format.h"

namespace perimeter::mcpguard {
namespace {

// A JSON string literal; nlohmann's serializer is exact but needs a json value per field.
void append_string(std::string* out, std::string_view text) {
  out->push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out->append(escaped);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void append_optional_string(std::string* out, const std::optional<std::string>& text) {
  if (text) {
    append_string(out, *text);
  } else {
    out->append("null");
  }
}

// Invalid UTF-8 from a peer must not make the line unwritable.
std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool key_matches(const std::string& key, const std::vector<std::string>& redact_keys) {
  for (const auto& pattern : redact_keys) {
    if (fnmatch(pattern.c_str(), key.c_str(), FNM_CASEFOLD) == 0) return true;
  }
  return false;
}

}  // namespace

nlohmann::json redact_by_key(const nlohmann::json& value,
                             const std::vector<std::string>& redact_keys) {
  if (value.is_object()) {
    nlohmann::json copy = nlohmann::json::object();
    for (const auto& [key, member] : value.items()) {
      copy[key] = key_matches(key, redact_keys) ? nlohmann::json("[REDACTED]")
                                                : redact_by_key(member, redact_keys);
    }
    return copy;
  }
  if (value.is_array()) {
    nlohmann::json copy = nlohmann::json::array();
    for (const auto& member : value) copy.push_back(redact_by_key(member, redact_keys));
    return copy;
  }
  return value;
}

std::string render_audit_line(const AuditRecord& record, const AuditConfig& config) {
  std::string line;
  line.reserve(512);
  line.append("{\"type\":");
  append_string(&line, kAuditType);
  line.append(",\"time\":");
  line += '"';
  line += format_rfc3339_millis(record.time);
  line += '"';
  line.append(",\"level\":");
  append_string(&line, to_string(config.level));
  line.append(",\"route\":");
  append_string(&line, record.route);
  line.append(record.from_server ? ",\"direction\":\"server\"" : ",\"direction\":\"client\"");
  line.append(",\"session\":");
  append_optional_string(&line, record.session);
  line.append(",\"protocol_version\":");
  append_optional_string(&line, record.protocol_version);
  line.append(",\"method\":");
  append_string(&line, record.method);
  line.append(",\"id\":");
  line.append(record.id.is_string() || record.id.is_number() ? dump(record.id) : "null");
  line.append(",\"name\":");
  append_optional_string(&line, record.name);
  line.append(record.allowed ? ",\"decision\":\"allowed\"" : ",\"decision\":\"denied\"");
  line.append(",\"reason\":");
  append_optional_string(&line, record.reason);
  line.append(",\"upstream_status\":");
  line.append(record.upstream_status ? std::to_string(*record.upstream_status) : "null");
  line.append(",\"outcome\":");
  append_string(&line, record.outcome);
  line.append(",\"rpc_error_code\":");
  line.append(record.rpc_error_code ? std::to_string(*record.rpc_error_code) : "null");
  line.append(",\"duration_ms\":");
  line.append(std::to_string(record.duration_ms));
  line.append(",\"bytes_in\":");
  line.append(std::to_string(record.bytes_in));
  line.append(",\"bytes_out\":");
  line.append(std::to_string(record.bytes_out));
  if (config.level == AuditLevel::kFull) {
    line.append(",\"arguments\":");
    line.append(dump(redact_by_key(record.arguments, config.redact_keys)));
    line.append(",\"result\":");
    line.append(dump(redact_by_key(record.result, config.redact_keys)));
  }
  line.push_back('}');
  return line;
}

}  // namespace perimeter::mcpguard
