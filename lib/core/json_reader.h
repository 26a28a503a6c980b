#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter {

// JSON read in one pass without nlohmann's lexer, which copies every byte of every token into a
// buffer one call at a time (the largest cost of parsing when profiled, in the MCP guard and in
// the operator's watch decode alike). It checks what nlohmann's lexer and parser check (the
// grammar, control characters and escapes in strings, well-formed UTF-8, numbers that overflow a
// double) and calls the handler as nlohmann::json::sax_parse would, with keys and strings as
// views into the text where it can.
//
// It is a fast path, not a second parser to trust: read() returning false means "not accepted
// here", either because the text is not JSON or because the reader does not handle it (a
// byte-order mark; unless the handler decodes escapes, a key holding escapes or a string holding
// escapes whose text the handler wants). Its callers then read the text again with nlohmann, whose
// verdict and messages stand; only what the reader accepts must match nlohmann, and the tests
// and the guard's fuzz target check that it does.
//
// Handler: bool start_object(), end_object(), start_array(), end_array(), key(std::string_view),
// string(std::string_view), boolean(bool), null(), number_integer(std::int64_t),
// number_unsigned(std::uint64_t), number_float(double); bool wants_text() const (whether the
// next string's text is read, else only that a string came); and
// `static constexpr bool kDecodesEscapes`: when true, a key or a wanted string holding escapes is
// decoded (into a buffer of the reader's, the view valid until the next call) instead of given
// up on.
// Any handler call returning false stops the read with false.
template <class Handler>
class JsonReader {
 public:
  // `stack` holds '{' or '[' per open container; a caller reading many documents on one thread
  // passes the same one so its capacity is reused.
  JsonReader(std::string_view text, Handler& handler, std::vector<char>& stack)
      : p_(text.data()), end_(text.data() + text.size()), handler_(handler), stack_(stack) {
    stack_.clear();
  }

  bool read() {
    if (p_ != end_ && static_cast<unsigned char>(*p_) == 0xEF) return false;  // a BOM
    for (;;) {
      // A value.
      skip_space();
      if (p_ == end_) return false;
      const char c = *p_;
      if (c == '{') {
        ++p_;
        if (!handler_.start_object()) return false;
        skip_space();
        if (p_ != end_ && *p_ == '}') {
          ++p_;
          if (!handler_.end_object()) return false;
        } else {
          stack_.push_back('{');
          if (!read_key()) return false;
          continue;
        }
      } else if (c == '[') {
        ++p_;
        if (!handler_.start_array()) return false;
        skip_space();
        if (p_ != end_ && *p_ == ']') {
          ++p_;
          if (!handler_.end_array()) return false;
        } else {
          stack_.push_back('[');
          continue;
        }
      } else if (c == '"') {
        ++p_;
        bool escaped = false;
        const char* start = p_;
        if (!skip_string(&escaped)) return false;
        const std::string_view raw(start, p_ - 1 - start);
        if (escaped && handler_.wants_text()) {
          if constexpr (Handler::kDecodesEscapes) {
            decode(raw);
            if (!handler_.string(decoded_)) return false;
          } else {
            return false;
          }
        } else if (!handler_.string(raw)) {
          return false;
        }
      } else if (c == 't') {
        if (!literal("true") || !handler_.boolean(true)) return false;
      } else if (c == 'f') {
        if (!literal("false") || !handler_.boolean(false)) return false;
      } else if (c == 'n') {
        if (!literal("null") || !handler_.null()) return false;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (!number()) return false;
      } else {
        return false;
      }
      // After a value: the next member or element, or the end of containers.
      for (;;) {
        skip_space();
        if (stack_.empty()) return p_ == end_;
        if (p_ == end_) return false;
        const char open = stack_.back();
        if (*p_ == ',') {
          ++p_;
          if (open == '{' && !read_key()) return false;
          break;
        }
        if (*p_ != (open == '{' ? '}' : ']')) return false;
        ++p_;
        stack_.pop_back();
        if (!(open == '{' ? handler_.end_object() : handler_.end_array())) return false;
      }
    }
  }

 private:
  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  // `"key":`, its text handed to the handler (a key with escapes: decoded for a handler that
  // decodes escapes, given up on otherwise).
  bool read_key() {
    skip_space();
    if (p_ == end_ || *p_ != '"') return false;
    ++p_;
    bool escaped = false;
    const char* start = p_;
    if (!skip_string(&escaped)) return false;
    const std::string_view raw(start, p_ - 1 - start);
    if (escaped) {
      if constexpr (Handler::kDecodesEscapes) {
        decode(raw);
        if (!handler_.key(decoded_)) return false;
      } else {
        return false;
      }
    } else if (!handler_.key(raw)) {
      return false;
    }
    skip_space();
    if (p_ == end_ || *p_ != ':') return false;
    ++p_;
    return true;
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits at `at`, or -1.
  static int codepoint_at(const char* at, const char* end) {
    if (end - at < 4) return -1;
    int value = 0;
    for (int i = 0; i < 4; ++i) {
      const int digit = hex(at[i]);
      if (digit < 0) return -1;
      value = value * 16 + digit;
    }
    return value;
  }

  // After `\u`: four hex digits, or -1.
  int codepoint() {
    const int value = codepoint_at(p_, end_);
    if (value >= 0) p_ += 4;
    return value;
  }

  // `n` bytes in [low, high] pairs, as the lexer's next_byte_in_range.
  bool bytes_in(std::initializer_list<unsigned char> ranges) {
    for (const auto* range = ranges.begin(); range != ranges.end(); range += 2) {
      if (p_ == end_) return false;
      const auto byte = static_cast<unsigned char>(*p_);
      if (byte < range[0] || byte > range[1]) return false;
      ++p_;
    }
    return true;
  }

  // From after the opening quote to after the closing one; what the lexer's scan_string refuses
  // is refused. `escaped`: the text holds an escape (its bytes are not its value).
  bool skip_string(bool* escaped) {
    for (;;) {
      // Plain ASCII runs first: most of any document.
      while (p_ != end_) {
        const auto byte = static_cast<unsigned char>(*p_);
        if (byte < 0x20 || byte == '"' || byte == '\\' || byte >= 0x80) break;
        ++p_;
      }
      if (p_ == end_) return false;
      const auto byte = static_cast<unsigned char>(*p_++);
      if (byte == '"') return true;
      if (byte < 0x20) return false;
      if (byte == '\\') {
        *escaped = true;
        if (p_ == end_) return false;
        switch (*p_++) {
          case '"':
          case '\\':
          case '/':
          case 'b':
          case 'f':
          case 'n':
          case 'r':
          case 't':
            continue;
          case 'u': {
            const int first = codepoint();
            if (first < 0) return false;
            if (first >= 0xDC00 && first <= 0xDFFF) return false;  // a lone low surrogate
            if (first >= 0xD800 && first <= 0xDBFF) {
              if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
              p_ += 2;
              const int second = codepoint();
              if (second < 0xDC00 || second > 0xDFFF) return false;
            }
            continue;
          }
          default:
            return false;
        }
      }
      // UTF-8, well-formed as RFC 3629 has it (the lexer's table).
      bool ok = false;
      if (byte >= 0xC2 && byte <= 0xDF) {
        ok = bytes_in({0x80, 0xBF});
      } else if (byte == 0xE0) {
        ok = bytes_in({0xA0, 0xBF, 0x80, 0xBF});
      } else if ((byte >= 0xE1 && byte <= 0xEC) || byte == 0xEE || byte == 0xEF) {
        ok = bytes_in({0x80, 0xBF, 0x80, 0xBF});
      } else if (byte == 0xED) {
        ok = bytes_in({0x80, 0x9F, 0x80, 0xBF});
      } else if (byte == 0xF0) {
        ok = bytes_in({0x90, 0xBF, 0x80, 0xBF, 0x80, 0xBF});
      } else if (byte >= 0xF1 && byte <= 0xF3) {
        ok = bytes_in({0x80, 0xBF, 0x80, 0xBF, 0x80, 0xBF});
      } else if (byte == 0xF4) {
        ok = bytes_in({0x80, 0x8F, 0x80, 0xBF, 0x80, 0xBF});
      }
      if (!ok) return false;
    }
  }

  void append_utf8(std::uint32_t cp) {
    if (cp < 0x80) {
      decoded_.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      decoded_.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      decoded_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      decoded_.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      decoded_.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      decoded_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      decoded_.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      decoded_.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      decoded_.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      decoded_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // The value of a string's text that skip_string accepted (so every escape in it is whole and
  // every surrogate paired) into decoded_, as the lexer unescapes it.
  void decode(std::string_view raw) {
    decoded_.clear();
    const char* at = raw.data();
    const char* const end = raw.data() + raw.size();
    while (at != end) {
      if (*at != '\\') {
        decoded_.push_back(*at++);
        continue;
      }
      ++at;
      const char kind = *at++;
      switch (kind) {
        case 'b':
          decoded_.push_back('\b');
          break;
        case 'f':
          decoded_.push_back('\f');
          break;
        case 'n':
          decoded_.push_back('\n');
          break;
        case 'r':
          decoded_.push_back('\r');
          break;
        case 't':
          decoded_.push_back('\t');
          break;
        case 'u': {
          std::uint32_t cp = static_cast<std::uint32_t>(codepoint_at(at, end));
          at += 4;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            const auto low = static_cast<std::uint32_t>(codepoint_at(at + 2, end));
            at += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(cp);
          break;
        }
        default:  // '"', '\\', '/'
          decoded_.push_back(kind);
      }
    }
  }

  static bool digit(char c) { return c >= '0' && c <= '9'; }

  // A number as the lexer reads it, and its value as the lexer converts it: unsigned or signed
  // when strtoull/strtoll take it whole, else a double, refused when not finite.
  bool number() {
    const char* start = p_;
    const bool negative = *p_ == '-';
    if (negative) ++p_;
    if (p_ == end_ || !digit(*p_)) return false;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    bool integer = true;
    if (p_ != end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || !digit(*p_)) return false;
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !digit(*p_)) return false;
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    const std::size_t length = static_cast<std::size_t>(p_ - start);
    const std::size_t digits = length - (negative ? 1 : 0);
    if (integer && digits <= 18) {
      // No overflow is possible: the value directly.
      std::uint64_t value = 0;
      for (const char* d = negative ? start + 1 : start; d != p_; ++d) {
        value = value * 10 + static_cast<std::uint64_t>(*d - '0');
      }
      if (negative) return handler_.number_integer(-static_cast<std::int64_t>(value));
      return handler_.number_unsigned(value);
    }
    text_.assign(start, length);  // NUL-terminated for the C conversions
    char* stop = nullptr;
    if (integer) {
      errno = 0;
      if (negative) {
        const long long value = std::strtoll(text_.c_str(), &stop, 10);
        if (errno == 0) return handler_.number_integer(value);
      } else {
        const unsigned long long value = std::strtoull(text_.c_str(), &stop, 10);
        if (errno == 0) return handler_.number_unsigned(value);
      }
    }
    const double value = std::strtod(text_.c_str(), &stop);
    if (!std::isfinite(value)) return false;
    return handler_.number_float(value);
  }

  const char* p_;
  const char* end_;
  Handler& handler_;
  std::vector<char>& stack_;
  std::string text_;     // a number for the C conversions
  std::string decoded_;  // a string's value, for a handler that decodes escapes
};

}  // namespace perimeter
