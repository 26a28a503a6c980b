#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace perimeter::tools {

// The model's grep pattern as a JavaScript RegExp (no flags) would read it, on PCRE2 with JIT and
// a match limit, so a pathological pattern costs bounded time instead of a thread.
class LineRegex {
 public:
  // Throws ToolError("grep: invalid regex: ...") when the pattern does not compile.
  explicit LineRegex(const std::string& pattern);
  ~LineRegex();
  LineRegex(const LineRegex&) = delete;
  LineRegex& operator=(const LineRegex&) = delete;

  // RegExp#test on one line (valid UTF-8). A match that hits the limit counts as no match.
  bool test(std::string_view line) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The JavaScript pattern in PCRE2 syntax with the same meaning (see line_regex.cc); throws
// ToolError with V8's wording for syntax JavaScript refuses. Exposed for tests.
std::string translate_js_pattern(const std::string& pattern);

}  // namespace perimeter::tools
