#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace perimeter::tools {

// One path segment of a glob, as Node's fs.glob (minimatch, `dot: false`) reads it.
struct GlobSegment {
  enum class Kind { kGlobstar, kLiteral, kWildcard };
  Kind kind = Kind::kLiteral;
  std::string text;
  // Whether a directory entry called `name` matches this segment (not for kGlobstar).
  bool matches(std::string_view name) const;
};

// A glob compiled to one segment list per brace alternative. Backslashes are path separators
// (fs.glob's windowsPathsNoEscape), so nothing is escaped. A pattern ending in '/' names
// directories only, so an alternative like that is dropped: the glob tool returns files.
class GlobPattern {
 public:
  static GlobPattern compile(std::string_view pattern);
  const std::vector<std::vector<GlobSegment>>& alternatives() const { return alternatives_; }

 private:
  std::vector<std::vector<GlobSegment>> alternatives_;
};

// Brace expansion as minimatch does it: {a,b}, nesting, {1..3}, {a..c}, {1..9..2}.
std::vector<std::string> expand_braces(std::string_view pattern);

// `*`, `?` and `[...]` (ranges, `!`/`^` negation, POSIX classes) over code points; a name that
// starts with '.' matches only a pattern that starts with '.'.
bool wildcard_match(std::string_view pattern, std::string_view name);

}  // namespace perimeter::tools
