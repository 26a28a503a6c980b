#include "tools/line_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tools/tool_error.h"

namespace perimeter::tools {

struct LineRegex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* match_context = nullptr;
  ~Impl() {
    if (match_context) pcre2_match_context_free(match_context);
    if (match_data) pcre2_match_data_free(match_data);
    if (code) pcre2_code_free(code);
  }
};

namespace {

// V8's wording for the syntax errors a model is likely to make; others keep PCRE2's own text.
std::string v8_wording(int error_code, const std::string& pcre_text) {
  switch (error_code) {
    case 114:
      return "Unterminated group";
    case 122:
      return "Unmatched ')'";
    case 109:
      return "Nothing to repeat";
    case 106:
      return "Unterminated character class";
    case 101:
      return "\\ at end of pattern";
    case 104:
      return "numbers out of order in {} quantifier";
    case 108:
      return "Range out of order in character class";
    default:
      return pcre_text;
  }
}

// JavaScript's \s: ASCII whitespace plus the Unicode spaces and line terminators.
constexpr std::string_view kJsSpaces =
    "\\t\\n\\x0B\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
    "\\u205f\\u3000\\ufeff";

bool is_ascii_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Length of a `{n}`, `{n,}` or `{n,m}` quantifier at p[i], or 0 when the brace is a literal.
std::size_t quantifier_length(const std::string& p, std::size_t i) {
  std::size_t j = i + 1;
  if (j >= p.size() || !is_digit(p[j])) return 0;
  while (j < p.size() && is_digit(p[j])) ++j;
  if (j < p.size() && p[j] == ',') {
    ++j;
    while (j < p.size() && is_digit(p[j])) ++j;
  }
  return j < p.size() && p[j] == '}' ? j - i + 1 : 0;
}

[[noreturn]] void invalid(const std::string& pattern, std::string_view why) {
  throw ToolError("grep: invalid regex: Invalid regular expression: /" + pattern +
                  "/: " + std::string(why));
}

}  // namespace

// Rewrites a JavaScript pattern (no flags, Annex B) into PCRE2 syntax with the same meaning where
// the two dialects part: `.` and `\s` as JavaScript defines them, identity escapes (`\p` is "p"),
// `\v`, and `[` inside a class. Syntax JavaScript refuses but PCRE2 would take (inline flags and
// other `(?` groups, possessive quantifiers) is refused with V8's words.
std::string translate_js_pattern(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  bool after_quantifier = false;
  std::size_t i = 0;
  const std::size_t n = pattern.size();
  while (i < n) {
    const char c = pattern[i];
    const bool was_quantifier = after_quantifier;
    after_quantifier = false;
    if (c == '\\') {
      if (i + 1 >= n) {
        out += c;  // PCRE2 reports it, worded as V8 does
        ++i;
        continue;
      }
      const char e = pattern[i + 1];
      const auto lead = static_cast<unsigned char>(e);
      if (lead >= 0x80) {
        // An identity escape of a non-ASCII character is the character.
        std::size_t len = 1;
        while (i + 1 + len < n && (static_cast<unsigned char>(pattern[i + 1 + len]) & 0xC0) == 0x80)
          ++len;
        out.append(pattern, i + 1, len);
        i += 1 + len;
        continue;
      }
      switch (e) {
        case 's':
          out += in_class ? std::string(kJsSpaces) : "[" + std::string(kJsSpaces) + "]";
          break;
        case 'S':
          out += in_class ? std::string("\\S") : "[^" + std::string(kJsSpaces) + "]";
          break;
        case 'v':
          out += "\\x0B";
          break;
        case 'd':
        case 'D':
        case 'w':
        case 'W':
        case 'b':
        case 'B':
        case 'f':
        case 'n':
        case 'r':
        case 't':
        case 'c':
        case 'x':
        case 'u':
        case 'k':
          out += c;
          out += e;
          break;
        default:
          if (is_ascii_letter(e)) {
            out += e;  // an identity escape: `\p{L}` is "p{L}" without the u flag
          } else {
            out += c;
            out += e;
          }
      }
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      out += c == '[' ? std::string("\\[") : std::string(1, c);
      ++i;
      continue;
    }
    switch (c) {
      case '[':
        in_class = true;
        out += c;
        ++i;
        if (i < n && pattern[i] == '^') {
          out += '^';
          ++i;
        }
        if (i < n && pattern[i] == ']') {
          // `[]` and `[^]`: the empty class, closed at once (PCRE2_ALLOW_EMPTY_CLASS).
          out += ']';
          in_class = false;
          ++i;
        }
        continue;
      case '.':
        out += "[^\\n\\r\\u2028\\u2029]";
        ++i;
        continue;
      case '(':
        if (i + 1 < n && pattern[i + 1] == '?') {
          const char k = i + 2 < n ? pattern[i + 2] : '\0';
          const char k2 = i + 3 < n ? pattern[i + 3] : '\0';
          const bool lookaround_or_plain = k == ':' || k == '=' || k == '!';
          const bool lookbehind = k == '<' && (k2 == '=' || k2 == '!');
          const bool named = k == '<' && (is_ascii_letter(k2) || k2 == '_' || k2 == '$');
          if (!lookaround_or_plain && !lookbehind && !named) invalid(pattern, "Invalid group");
        }
        out += c;
        ++i;
        continue;
      case '*':
      case '+':
      case '?':
        if (was_quantifier && c == '+') invalid(pattern, "Nothing to repeat");
        out += c;
        ++i;
        // A `?` right after a quantifier makes it lazy; a `+` there would be possessive.
        after_quantifier = true;
        continue;
      case '{': {
        const std::size_t len = quantifier_length(pattern, i);
        if (len > 0) {
          out.append(pattern, i, len);
          i += len;
          after_quantifier = true;
          continue;
        }
        out += c;
        ++i;
        continue;
      }
      default:
        out += c;
        ++i;
    }
  }
  return out;
}

LineRegex::LineRegex(const std::string& pattern) : impl_(std::make_unique<Impl>()) {
  pcre2_compile_context* compile_context = pcre2_compile_context_create(nullptr);
  // JavaScript's reading: \uhhhh and \xhh escapes, `$` only at the very end, an unset
  // backreference matches empty, `[]` matches nothing and `[^]` anything.
  pcre2_set_compile_extra_options(compile_context, PCRE2_EXTRA_ALT_BSUX);
  const uint32_t options = PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_DOLLAR_ENDONLY |
                           PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS;
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  const std::string translated = translate_js_pattern(pattern);
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              options, &error_code, &error_offset, compile_context);
  pcre2_compile_context_free(compile_context);
  if (impl_->code == nullptr) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error_code, buffer, sizeof(buffer));
    throw ToolError("grep: invalid regex: Invalid regular expression: /" + pattern +
                    "/: " + v8_wording(error_code, reinterpret_cast<const char*>(buffer)));
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if it fails
  impl_->match_data = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  impl_->match_context = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(impl_->match_context, 10'000'000);
  pcre2_set_depth_limit(impl_->match_context, 100'000);
}

LineRegex::~LineRegex() = default;

bool LineRegex::test(std::string_view line) const {
  const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(line.data()), line.size(), 0,
                             PCRE2_NO_UTF_CHECK, impl_->match_data, impl_->match_context);
  return rc >= 0;
}

}  // namespace perimeter::tools
