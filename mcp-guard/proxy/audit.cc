#include "proxy/audit.h"

#include <fnmatch.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

namespace perimeter::mcpguard {
namespace {

// RFC 3339 UTC with milliseconds: requests of one session often share a second.
void append_timestamp(std::string* out, std::chrono::system_clock::time_point time) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char buffer[64];
  const int length = std::snprintf(buffer, sizeof buffer, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"",
                                   utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                                   utc.tm_min, utc.tm_sec, static_cast<int>(ms % 1000));
  out->append(buffer, static_cast<std::size_t>(length));
}

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
  append_timestamp(&line, record.time);
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

void StdoutAuditSink::write_line(std::string_view line) {
  std::string whole;
  whole.reserve(line.size() + 1);
  whole.append(line);
  whole.push_back('\n');
  std::lock_guard lock(mutex_);
  std::size_t written = 0;
  while (written < whole.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, whole.data() + written, whole.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // stdout is gone; the operational log still says what happened
    }
    written += static_cast<std::size_t>(n);
  }
}

}  // namespace perimeter::mcpguard
