#include "tools/glob_pattern.h"

#include <cctype>
#include <cstdlib>
#include <optional>

#include "tools/text.h"

namespace perimeter::tools {
namespace {

// Decodes the code point at `s[i]` (input is valid UTF-8: it came from JSON or a file name that
// is compared bytewise when it is not).
char32_t code_point_at(std::string_view s, std::size_t i, std::size_t* len) {
  const auto lead = static_cast<unsigned char>(s[i]);
  std::size_t n = utf8_sequence_length(lead);
  if (i + n > s.size()) n = 1;
  *len = n;
  if (n == 1) return lead;
  char32_t cp = lead & (0xFF >> (n + 1));
  for (std::size_t k = 1; k < n; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

bool posix_class(std::string_view name, char32_t c) {
  if (c > 0x7F) return false;
  const int ch = static_cast<int>(c);
  if (name == "alpha") return std::isalpha(ch);
  if (name == "digit") return std::isdigit(ch);
  if (name == "alnum") return std::isalnum(ch);
  if (name == "upper") return std::isupper(ch);
  if (name == "lower") return std::islower(ch);
  if (name == "space") return std::isspace(ch);
  if (name == "punct") return std::ispunct(ch);
  if (name == "xdigit") return std::isxdigit(ch);
  if (name == "blank") return ch == ' ' || ch == '\t';
  if (name == "cntrl") return std::iscntrl(ch);
  if (name == "print") return std::isprint(ch);
  if (name == "graph") return std::isgraph(ch);
  if (name == "word") return std::isalnum(ch) || ch == '_';
  return false;
}

// Matches the bracket expression starting at pattern[p] == '['. Returns the index after ']' and
// sets *matched, or nullopt when the bracket is unterminated (then '[' is literal).
std::optional<std::size_t> match_class(std::string_view pattern, std::size_t p, char32_t c,
                                       bool* matched) {
  std::size_t i = p + 1;
  bool negate = false;
  if (i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^')) {
    negate = true;
    ++i;
  }
  bool found = false;
  bool first = true;
  while (i < pattern.size()) {
    if (pattern[i] == ']' && !first) {
      *matched = found != negate;
      return i + 1;
    }
    first = false;
    if (pattern[i] == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const std::size_t close = pattern.find(":]", i + 2);
      if (close != std::string_view::npos) {
        if (posix_class(pattern.substr(i + 2, close - i - 2), c)) found = true;
        i = close + 2;
        continue;
      }
    }
    std::size_t len = 0;
    const char32_t lo = code_point_at(pattern, i, &len);
    i += len;
    if (i + 1 < pattern.size() && pattern[i] == '-' && pattern[i + 1] != ']') {
      std::size_t len2 = 0;
      const char32_t hi = code_point_at(pattern, i + 1, &len2);
      i += 1 + len2;
      if (c >= lo && c <= hi) found = true;
    } else if (c == lo) {
      found = true;
    }
  }
  return std::nullopt;
}

bool match_from(std::string_view pattern, std::size_t p, std::string_view name, std::size_t n) {
  // Iterative with one backtrack point for the last '*', the classic linear-ish glob matcher.
  std::size_t star_p = std::string_view::npos;
  std::size_t star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size()) {
      const char pc = pattern[p];
      if (pc == '*') {
        while (p < pattern.size() && pattern[p] == '*') ++p;
        star_p = p;
        star_n = n;
        continue;
      }
      std::size_t name_len = 0;
      const char32_t c = code_point_at(name, n, &name_len);
      if (pc == '?') {
        ++p;
        n += name_len;
        continue;
      }
      if (pc == '[') {
        bool matched = false;
        if (auto after = match_class(pattern, p, c, &matched)) {
          if (matched) {
            p = *after;
            n += name_len;
            continue;
          }
        } else if (c == '[') {
          ++p;
          n += name_len;
          continue;
        }
      } else {
        std::size_t pat_len = 0;
        const char32_t want = code_point_at(pattern, p, &pat_len);
        if (want == c) {
          p += pat_len;
          n += name_len;
          continue;
        }
      }
    }
    if (star_p == std::string_view::npos) return false;
    std::size_t len = 0;
    code_point_at(name, star_n, &len);
    star_n += len;
    n = star_n;
    p = star_p;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool has_magic(std::string_view segment) {
  return segment.find_first_of("*?[") != std::string_view::npos;
}

struct BraceRange {
  std::vector<std::string> items;
};

std::optional<long> parse_long(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (std::size_t k = i; k < s.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(s[k]))) return std::nullopt;
  return std::strtol(std::string(s).c_str(), nullptr, 10);
}

// {x..y[..step]} over integers (zero padding kept) or single letters.
std::optional<std::vector<std::string>> expand_range(std::string_view body) {
  const std::size_t dots = body.find("..");
  if (dots == std::string_view::npos) return std::nullopt;
  std::string_view a = body.substr(0, dots);
  std::string_view rest = body.substr(dots + 2);
  std::string_view b = rest;
  long step = 1;
  if (const std::size_t dots2 = rest.find(".."); dots2 != std::string_view::npos) {
    b = rest.substr(0, dots2);
    auto s = parse_long(rest.substr(dots2 + 2));
    if (!s) return std::nullopt;
    step = std::labs(*s == 0 ? 1 : *s);
  }
  std::vector<std::string> out;
  auto na = parse_long(a);
  auto nb = parse_long(b);
  if (na && nb) {
    const bool pad = (a.size() > 1 && (a[0] == '0' || (a[0] == '-' && a[1] == '0'))) ||
                     (b.size() > 1 && (b[0] == '0' || (b[0] == '-' && b[1] == '0')));
    const std::size_t width = std::max(a.size(), b.size());
    const long dir = *na <= *nb ? 1 : -1;
    for (long v = *na; dir > 0 ? v <= *nb : v >= *nb; v += dir * step) {
      std::string s = std::to_string(std::labs(v));
      if (pad) {
        const std::size_t w = width - (v < 0 ? 1 : 0);
        while (s.size() < w) s.insert(s.begin(), '0');
      }
      out.push_back(v < 0 ? "-" + s : s);
      if (out.size() > 100000) break;
    }
    return out;
  }
  if (a.size() == 1 && b.size() == 1 && std::isalpha(static_cast<unsigned char>(a[0])) &&
      std::isalpha(static_cast<unsigned char>(b[0]))) {
    const int from = static_cast<unsigned char>(a[0]);
    const int to = static_cast<unsigned char>(b[0]);
    const int dir = from <= to ? 1 : -1;
    for (int c = from; dir > 0 ? c <= to : c >= to; c += dir * static_cast<int>(step))
      out.push_back(std::string(1, static_cast<char>(c)));
    return out;
  }
  return std::nullopt;
}

}  // namespace

namespace {

// minimatch keeps a wildcard from matching a leading dot when the segment starts with `*`, `?` or
// a bracket expression; a one-character bracket such as `[.]` is a literal and may match it.
bool starts_with_dot_guard(std::string_view pattern) {
  if (pattern.empty()) return false;
  if (pattern[0] == '*' || pattern[0] == '?') return true;
  if (pattern[0] != '[') return false;
  if (pattern.size() < 3 || pattern[1] == '!' || pattern[1] == '^') return true;
  const std::size_t len = utf8_sequence_length(static_cast<unsigned char>(pattern[1]));
  const bool single = 1 + len < pattern.size() && pattern[1 + len] == ']' && pattern[1] != '[';
  return !single;
}

}  // namespace

bool wildcard_match(std::string_view pattern, std::string_view name) {
  if (!name.empty() && name[0] == '.') {
    if (pattern.empty() || (pattern[0] != '.' && starts_with_dot_guard(pattern))) return false;
  }
  return match_from(pattern, 0, name, 0);
}

bool GlobSegment::matches(std::string_view name) const {
  switch (kind) {
    case Kind::kLiteral:
      return name == text;
    case Kind::kWildcard:
      return wildcard_match(text, name);
    case Kind::kGlobstar:
      return true;
  }
  return false;
}

std::vector<std::string> expand_braces(std::string_view pattern) {
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '{') continue;
    int depth = 0;
    std::size_t close = std::string_view::npos;
    std::vector<std::size_t> commas;
    for (std::size_t j = i; j < pattern.size(); ++j) {
      if (pattern[j] == '{') ++depth;
      if (pattern[j] == '}' && --depth == 0) {
        close = j;
        break;
      }
      if (pattern[j] == ',' && depth == 1) commas.push_back(j);
    }
    if (close == std::string_view::npos) break;
    const std::string_view pre = pattern.substr(0, i);
    const std::string_view body = pattern.substr(i + 1, close - i - 1);
    const std::string_view post = pattern.substr(close + 1);
    std::vector<std::string> parts;
    if (!commas.empty()) {
      std::size_t from = i + 1;
      for (std::size_t c : commas) {
        parts.emplace_back(pattern.substr(from, c - from));
        from = c + 1;
      }
      parts.emplace_back(pattern.substr(from, close - from));
    } else if (auto range = expand_range(body)) {
      parts = std::move(*range);
    } else {
      continue;  // not a brace expression: a literal '{'
    }
    std::vector<std::string> out;
    const std::vector<std::string> tails = expand_braces(post);
    for (const auto& part : parts) {
      for (const auto& middle :
           commas.empty() ? std::vector<std::string>{part} : expand_braces(part)) {
        for (const auto& tail : tails) {
          std::string expanded(pre);
          expanded += middle;
          expanded += tail;
          out.push_back(std::move(expanded));
        }
      }
    }
    return out;
  }
  return {std::string(pattern)};
}

GlobPattern GlobPattern::compile(std::string_view pattern) {
  GlobPattern compiled;
  std::string slashed(pattern);
  for (auto& c : slashed)
    if (c == '\\') c = '/';
  for (const auto& alternative : expand_braces(slashed)) {
    std::vector<GlobSegment> segments;
    bool directory_only = !alternative.empty() && alternative.back() == '/';
    std::size_t i = 0;
    while (i <= alternative.size()) {
      std::size_t j = alternative.find('/', i);
      if (j == std::string::npos) j = alternative.size();
      std::string part = alternative.substr(i, j - i);
      i = j + 1;
      if (part.empty() || part == ".") continue;
      GlobSegment segment;
      if (part == "**") {
        if (!segments.empty() && segments.back().kind == GlobSegment::Kind::kGlobstar) continue;
        segment.kind = GlobSegment::Kind::kGlobstar;
      } else {
        segment.kind = has_magic(part) ? GlobSegment::Kind::kWildcard : GlobSegment::Kind::kLiteral;
      }
      segment.text = std::move(part);
      segments.push_back(std::move(segment));
    }
    if (directory_only || segments.empty()) continue;
    compiled.alternatives_.push_back(std::move(segments));
  }
  return compiled;
}

}  // namespace perimeter::tools
