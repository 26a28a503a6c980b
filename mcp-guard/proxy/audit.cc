#include "proxy/audit.h"

#include <fnmatch.h>

#include <array>
#include <charconv>
#include <cstring>
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

// Writes a line's bytes in place: the line is sized once for the most it can hold, then each
// piece is copied at a cursor, without the capacity check and call of an append per piece (a
// line is some thirty pieces).
class LineWriter {
 public:
  LineWriter(std::string& line, std::size_t most) : line_(line) {
    line_.resize(most);
    p_ = line_.data();
  }

  template <std::size_t N>
  void literal(const char (&text)[N]) {
    std::memcpy(p_, text, N - 1);
    p_ += N - 1;
  }
  void raw(std::string_view text) {
    if (text.empty()) return;
    std::memcpy(p_, text.data(), text.size());
    p_ += text.size();
  }
  // A JSON string literal, at most 6 bytes per byte of `text` and 2 quotes; nlohmann's serializer
  // is exact but needs a json value per field. Runs of bytes that need no escape are copied whole.
  void string(std::string_view text) {
    *p_++ = '"';
    std::size_t done = 0;  // bytes of `text` written so far
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (!kNeedsEscape[static_cast<unsigned char>(c)]) continue;
      raw(text.substr(done, i - done));
      done = i + 1;
      switch (c) {
        case '"':
          literal("\\\"");
          break;
        case '\\':
          literal("\\\\");
          break;
        case '\n':
          literal("\\n");
          break;
        case '\r':
          literal("\\r");
          break;
        case '\t':
          literal("\\t");
          break;
        default: {
          constexpr std::string_view kHex = "0123456789abcdef";
          const auto byte = static_cast<unsigned char>(c);  // below 0x20
          literal("\\u00");
          *p_++ = kHex[byte >> 4];
          *p_++ = kHex[byte & 0xF];
        }
      }
    }
    raw(text.substr(done));
    *p_++ = '"';
  }
  void optional_string(const std::optional<std::string>& text) {
    if (text) {
      string(*text);
    } else {
      literal("null");
    }
  }
  template <typename Integer>
  void integer(Integer value) {
    p_ = std::to_chars(p_, p_ + kMostIntegerBytes, value).ptr;
  }
  // Cuts the line to what was written.
  void finish() { line_.resize(static_cast<std::size_t>(p_ - line_.data())); }

  static constexpr std::size_t kMostIntegerBytes = 24;

 private:
  std::string& line_;
  char* p_ = nullptr;
};

// The most bytes a string takes in the line, quoted and escaped.
std::size_t most_bytes(std::string_view text) {
  return 6 * text.size() + 2;
}
std::size_t most_optional_bytes(const std::optional<std::string>& text) {
  return text ? most_bytes(*text) : 4;
}

// Invalid UTF-8 from a peer must not make the line unwritable.
std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// format_rfc3339_millis(time) as its text up to the seconds, made once a second per thread (by
// format_rfc3339_millis itself) rather than by gmtime_r and snprintf on every line, and the
// milliseconds with the Z.
struct TimeText {
  std::string_view up_to_seconds;  // "2026-11-23T06:00:00."
  std::array<char, 4> millis;      // "123Z"
};
TimeText time_text(std::chrono::system_clock::time_point time) {
  thread_local std::int64_t cached_second = std::numeric_limits<std::int64_t>::min();
  thread_local std::string cached_prefix;
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
  const auto fraction = static_cast<int>(millis - second * 1000);
  return {cached_prefix,
          {static_cast<char>('0' + fraction / 100), static_cast<char>('0' + fraction / 10 % 10),
           static_cast<char>('0' + fraction % 10), 'Z'}};
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
  const TimeText time = time_text(record.time);
  const std::string_view level = to_string(config.level);
  std::string id_text;  // an id that is not an integer, as JSON
  if (!record.id.is_number_integer()) {
    id_text = record.id.is_string() || record.id.is_number() ? dump(record.id) : "null";
  }
  constexpr std::size_t kLiteralBytes = 512;  // the keys and punctuation, with room to spare
  const std::size_t most =
      kLiteralBytes + kAuditType.size() + time.up_to_seconds.size() + time.millis.size() +
      level.size() + most_bytes(record.route) + most_optional_bytes(record.session) +
      most_optional_bytes(record.protocol_version) + most_bytes(record.method) + id_text.size() +
      most_optional_bytes(record.name) + most_optional_bytes(record.reason) +
      most_bytes(record.outcome) + 6 * LineWriter::kMostIntegerBytes;
  LineWriter line(*out, most);
  // The type, the time and the level are ours and need no escape.
  line.literal("{\"type\":\"");
  line.raw(kAuditType);
  line.literal("\",\"time\":\"");
  line.raw(time.up_to_seconds);
  line.raw(std::string_view(time.millis.data(), time.millis.size()));
  line.literal("\",\"level\":\"");
  line.raw(level);
  line.literal("\",\"route\":");
  line.string(record.route);
  if (record.from_server) {
    line.literal(",\"direction\":\"server\"");
  } else {
    line.literal(",\"direction\":\"client\"");
  }
  line.literal(",\"session\":");
  line.optional_string(record.session);
  line.literal(",\"protocol_version\":");
  line.optional_string(record.protocol_version);
  line.literal(",\"method\":");
  line.string(record.method);
  line.literal(",\"id\":");
  if (record.id.is_number_unsigned()) {
    line.integer(record.id.get<std::uint64_t>());
  } else if (record.id.is_number_integer()) {
    line.integer(record.id.get<std::int64_t>());
  } else {
    line.raw(id_text);
  }
  line.literal(",\"name\":");
  line.optional_string(record.name);
  if (record.allowed) {
    line.literal(",\"decision\":\"allowed\"");
  } else {
    line.literal(",\"decision\":\"denied\"");
  }
  line.literal(",\"reason\":");
  line.optional_string(record.reason);
  line.literal(",\"upstream_status\":");
  if (record.upstream_status) {
    line.integer(*record.upstream_status);
  } else {
    line.literal("null");
  }
  line.literal(",\"outcome\":");
  line.string(record.outcome);
  line.literal(",\"rpc_error_code\":");
  if (record.rpc_error_code) {
    line.integer(*record.rpc_error_code);
  } else {
    line.literal("null");
  }
  line.literal(",\"duration_ms\":");
  line.integer(record.duration_ms);
  line.literal(",\"bytes_in\":");
  line.integer(record.bytes_in);
  line.literal(",\"bytes_out\":");
  line.integer(record.bytes_out);
  if (config.level != AuditLevel::kFull) {
    line.literal("}");
    line.finish();
    return;
  }
  line.finish();
  out->append(",\"arguments\":");
  out->append(dump(redact_by_key(record.arguments, config.redact_keys)));
  out->append(",\"result\":");
  out->append(dump(redact_by_key(record.result, config.redact_keys)));
  out->push_back('}');
}

}  // namespace perimeter::mcpguard
