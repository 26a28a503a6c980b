#include "runner/audit_log.h"

#include <openssl/evp.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/time_format.h"

namespace perimeter::runner {

using nlohmann::json;

namespace {

constexpr std::string_view kRedacted = "[REDACTED]";

void replace_all(std::string* text, std::string_view needle, std::string_view with) {
  if (needle.empty()) return;
  std::size_t at = 0;
  while ((at = text->find(needle, at)) != std::string::npos) {
    text->replace(at, needle.size(), with);
    at += with.size();
  }
}

// The credential shapes, in the order they are applied (docs/audit.md lists them). PCRE2 without
// UTF mode: the text is matched as bytes, so no output can make a pattern fail.
struct PatternSpec {
  const char* pattern;
  const char* replacement;
};
constexpr PatternSpec kPatterns[] = {
    // A PEM private key block, whole; an unterminated one (cut output) up to the end.
    {R"(-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z))",
     "[REDACTED]"},
    // Anthropic API keys, then other sk- keys of 20 or more characters (OpenAI's shape).
    {R"(sk-ant-[A-Za-z0-9_\-]+)", "[REDACTED]"},
    {R"(\bsk-[A-Za-z0-9_\-]{20,})", "[REDACTED]"},
    // AWS access key ids.
    {R"(\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b)", "[REDACTED]"},
    // GitHub and Slack tokens.
    {R"(\bgh[pousr]_[A-Za-z0-9]{36,})", "[REDACTED]"},
    {R"(\bxox[abprs]-[A-Za-z0-9\-]{10,})", "[REDACTED]"},
    // JSON Web Tokens.
    {R"(\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*)", "[REDACTED]"},
    // An Authorization header's credential, and any Bearer token.
    {R"((?i)(authorization\s*[:=]\s*["']?(?:basic|digest|negotiate)\s+)[^\s"']+)",
     "${1}[REDACTED]"},
    {R"((?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*)", "${1}[REDACTED]"},
    // name=value / name: value where the name says it is a credential; the name is kept.
    {R"((?i)([A-Za-z0-9_.\-]*(?:password|passwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|credential)["']?\s*[:=]\s*["']?)[^\s"'&,;]+)",
     "${1}[REDACTED]"},
};

}  // namespace

const char* to_string(AuditLevel level) {
  return level == AuditLevel::kFull ? "full" : "metadata";
}

std::optional<AuditLevel> parse_audit_level(std::string_view text) {
  if (text == "metadata") return AuditLevel::kMetadata;
  if (text == "full") return AuditLevel::kFull;
  return std::nullopt;
}

const char* to_string(AuditDecision decision) {
  switch (decision) {
    case AuditDecision::kAllowed:
      return "allowed";
    case AuditDecision::kAskedAndConfirmed:
      return "asked_and_confirmed";
    case AuditDecision::kDenied:
      return "denied";
    case AuditDecision::kNotOwned:
      return "not_owned";
    case AuditDecision::kAbandoned:
      return "abandoned";
  }
  return "unknown";
}

struct Redactor::Patterns {
  struct Compiled {
    pcre2_code* code;
    std::string replacement;
  };
  std::vector<Compiled> compiled;
  ~Patterns() {
    for (auto& c : compiled) pcre2_code_free(c.code);
  }
};

Redactor::Redactor(std::vector<std::string> secrets) : patterns_(std::make_unique<Patterns>()) {
  for (auto& secret : secrets) {
    if (!secret.empty()) secrets_.push_back(std::move(secret));
  }
  for (const auto& spec : kPatterns) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(spec.pattern),
                                     PCRE2_ZERO_TERMINATED, 0, &error, &offset, nullptr);
    // The patterns are constants: one that does not compile is a bug.
    if (code == nullptr) std::abort();
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is fine too
    patterns_->compiled.push_back({code, spec.replacement});
  }
}

Redactor::~Redactor() = default;

std::string Redactor::remove_secrets(std::string_view text) const {
  std::string out(text);
  for (const auto& secret : secrets_) {
    replace_all(&out, secret, kRedacted);
    // As it reads inside a JSON string, should it hold characters JSON escapes.
    const std::string escaped = json(secret).dump();
    replace_all(&out, std::string_view(escaped).substr(1, escaped.size() - 2), kRedacted);
  }
  return out;
}

std::string Redactor::redact(std::string_view text) const {
  std::string out = remove_secrets(text);
  for (const auto& pattern : patterns_->compiled) {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(pattern.code, nullptr);
    std::string result(out.size() + 64, '\0');
    bool done = false;
    for (int attempt = 0; attempt < 2 && !done; ++attempt) {
      PCRE2_SIZE length = result.size();
      const int rc = pcre2_substitute(
          pattern.code, reinterpret_cast<PCRE2_SPTR>(out.data()), out.size(), 0,
          PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, match, nullptr,
          reinterpret_cast<PCRE2_SPTR>(pattern.replacement.data()), pattern.replacement.size(),
          reinterpret_cast<PCRE2_UCHAR*>(result.data()), &length);
      if (rc == PCRE2_ERROR_NOMEMORY) {
        result.resize(length);  // the size it needs: the second attempt fits
        continue;
      }
      done = rc >= 0;
      if (rc > 0) {
        result.resize(length);
        out.swap(result);
      }
      break;
    }
    // A match limit hit on hostile output, or any other failure: fail closed, nothing of the
    // text can be vouched for.
    if (!done) out = std::string(kRedacted);
    pcre2_match_data_free(match);
  }
  return out;
}

json Redactor::redact_json(const json& value) const {
  if (value.is_string()) return redact(value.get_ref<const std::string&>());
  if (value.is_array()) {
    json out = json::array();
    for (const auto& item : value) out.push_back(redact_json(item));
    return out;
  }
  if (value.is_object()) {
    json out = json::object();
    for (const auto& [key, item] : value.items()) out[redact(key)] = redact_json(item);
    return out;
  }
  return value;
}

AuditLog::AuditLog(AuditSink& sink, AuditLevel level, AuditIdentity identity,
                   std::vector<std::string> secrets, const Clock& clock)
    : sink_(sink),
      level_(level),
      identity_(std::move(identity)),
      redactor_(std::move(secrets)),
      clock_(clock) {}

std::string AuditLog::canonical_input(const json& input) {
  // Invalid UTF-8 (never from the API's JSON, but input is the model's) is replaced, not thrown.
  return input.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string AuditLog::input_digest(const json& input) {
  const std::string canonical = canonical_input(input);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(canonical.data(), canonical.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned int i = 0; i < length; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

std::string AuditLog::render(const AuditRecord& record) const {
  const std::string canonical = canonical_input(record.input);
  nlohmann::ordered_json line;
  line["type"] = kAuditType;
  line["time"] = format_rfc3339_millis(clock_.wall_now());
  line["level"] = to_string(level_);
  line["session_id"] = identity_.session_id;
  line["work_id"] = identity_.work_id;
  line["environment_id"] = identity_.environment_id;
  line["tool_use_id"] = redactor_.redact(record.tool_use_id);
  line["event_type"] = record.event_type;
  line["tool"] = redactor_.redact(record.tool);
  line["input_sha256"] = input_digest(record.input);
  line["input_bytes"] = canonical.size();
  line["decision"] = to_string(record.decision);
  line["denied_by"] = record.denied_by.empty() ? nlohmann::ordered_json(nullptr)
                                               : nlohmann::ordered_json(record.denied_by);
  line["outcome"] = record.outcome;
  line["exit_code"] = record.exit_code ? nlohmann::ordered_json(*record.exit_code)
                                       : nlohmann::ordered_json(nullptr);
  line["duration_ms"] = record.duration.count();
  line["output_bytes"] = record.output.size();
  if (level_ == AuditLevel::kFull) {
    line["input"] = redactor_.redact_json(record.input);
    line["output"] = redactor_.redact(record.output);
  }
  // Whatever the fields above missed (a secret in an id): never the token, at any level.
  return redactor_.remove_secrets(line.dump(-1, ' ', false, json::error_handler_t::replace));
}

void AuditLog::record(const AuditRecord& record) {
  sink_.write_line(render(record));
}

}  // namespace perimeter::runner
