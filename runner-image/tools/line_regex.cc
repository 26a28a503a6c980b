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

}  // namespace

LineRegex::LineRegex(const std::string& pattern) : impl_(std::make_unique<Impl>()) {
  pcre2_compile_context* compile_context = pcre2_compile_context_create(nullptr);
  // JavaScript's reading: \uhhhh and \xhh escapes, `$` only at the very end, an unset
  // backreference matches empty, `[]` matches nothing and `[^]` anything.
  pcre2_set_compile_extra_options(compile_context, PCRE2_EXTRA_ALT_BSUX);
  const uint32_t options = PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_DOLLAR_ENDONLY |
                           PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS;
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                              &error_code, &error_offset, compile_context);
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
