#include "proxy/audit.h"

#include <fnmatch.h>

#include <array>
#include <charconv>
#include <cstdio>
#include <limits>

#include "core/time_format.h"

namespace perimeter::mcpguard {
namespace {

// The bytes a JSON string must escape: control characters, the quote and the backslash.
constexpr std::array<bool, 256> kNeedsEscape = [] {
  std::array<bool, 256> table{};
  for (int c = 0; c < 0x20; ++c) table[c] = true;
  table['"'] = true;
  table['\\'] = true;
  return table;
}();

// A JSON string literal; nlohmann's serializer is exact but needs a json value per field. Runs
// of bytes that need no escape are appended whole.
void append_string(std::string* out, std::string_view text) {
  out->push_back('"');
  std::size_t done = 0;  // bytes of `text` appended so far
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!kNeedsEscape[static_cast<unsigned char>(c)]) continue;
    out->append(text.data() + done, i - done);
    done = i + 1;
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
      default: {
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
        out->append(escaped);
      }
    }
  }
  out->append(text.data() + done, text.size() - done);
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

template <typename Integer>
void append_integer(std::string* out, Integer value) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out->append(digits, end);
}

// format_rfc3339_millis(time), with the text up to the seconds made once a second per thread
// (by format_rfc3339_millis itself) rather than by gmtime_r and snprintf on every line.
void append_time(std::string* out, std::chrono::system_clock::time_point time) {
  thread_local std::int64_t cached_second = std::numeric_limits<std::int64_t>::min();
  thread_local std::string cached_prefix;  // "2026-11-23T06:00:00."
  const std::int64_t millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  // Floor division, as format_rfc3339_millis: a time before the epoch keeps a fraction in [0,
  // 1000).
  const std::int64_t second = millis >= 0 ? millis / 1000 : (millis - 999) / 1000;
  if (second != cached_second) {
    std::string whole = format_rfc3339_millis(
        std::chrono::system_clock::time_point(std::chrono::seconds(second)));  // "….000Z"
    whole.resize(whole.size() - 4);
    cached_prefix = std::move(whole);
    cached_second = second;
  }
  out->append(cached_prefix);
  const auto fraction = static_cast<int>(millis - second * 1000);
  out->push_back(static_cast<char>('0' + fraction / 100));
  out->push_back(static_cast<char>('0' + fraction / 10 % 10));
  out->push_back(static_cast<char>('0' + fraction % 10));
  out->push_back('Z');
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
  render_audit_line(record, config, &line);
  return line;
}

void render_audit_line(const AuditRecord& record, const AuditConfig& config, std::string* out) {
  std::string& line = *out;
  line.clear();
  line.reserve(512);
  // The type and the level are ours and need no escape.
  line.append("{\"type\":\"");
  line.append(kAuditType);
  line.append("\",\"time\":\"");
  append_time(&line, record.time);
  line.append("\",\"level\":\"");
  line.append(to_string(config.level));
  line.append("\",\"route\":");
  append_string(&line, record.route);
  line.append(record.from_server ? ",\"direction\":\"server\"" : ",\"direction\":\"client\"");
  line.append(",\"session\":");
  append_optional_string(&line, record.session);
  line.append(",\"protocol_version\":");
  append_optional_string(&line, record.protocol_version);
  line.append(",\"method\":");
  append_string(&line, record.method);
  line.append(",\"id\":");
  if (record.id.is_number_unsigned()) {
    append_integer(&line, record.id.get<std::uint64_t>());
  } else if (record.id.is_number_integer()) {
    append_integer(&line, record.id.get<std::int64_t>());
  } else {
    line.append(record.id.is_string() || record.id.is_number() ? dump(record.id) : "null");
  }
  line.append(",\"name\":");
  append_optional_string(&line, record.name);
  line.append(record.allowed ? ",\"decision\":\"allowed\"" : ",\"decision\":\"denied\"");
  line.append(",\"reason\":");
  append_optional_string(&line, record.reason);
  line.append(",\"upstream_status\":");
  if (record.upstream_status) {
    append_integer(&line, *record.upstream_status);
  } else {
    line.append("null");
  }
  line.append(",\"outcome\":");
  append_string(&line, record.outcome);
  line.append(",\"rpc_error_code\":");
  if (record.rpc_error_code) {
    append_integer(&line, *record.rpc_error_code);
  } else {
    line.append("null");
  }
  line.append(",\"duration_ms\":");
  append_integer(&line, record.duration_ms);
  line.append(",\"bytes_in\":");
  append_integer(&line, record.bytes_in);
  line.append(",\"bytes_out\":");
  append_integer(&line, record.bytes_out);
  if (config.level == AuditLevel::kFull) {
    line.append(",\"arguments\":");
    line.append(dump(redact_by_key(record.arguments, config.redact_keys)));
    line.append(",\"result\":");
    line.append(dump(redact_by_key(record.result, config.redact_keys)));
  }
  line.push_back('}');
}

}  // namespace perimeter::mcpguard
