#include "tools/text.h"

#include <nlohmann/json.hpp>

namespace perimeter::tools {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Valid continuation range for the byte after `lead` (the WHATWG decoder's bounds).
struct Bounds {
  unsigned char lower;
  unsigned char upper;
  std::size_t needed;
};

bool lead_bounds(unsigned char b, Bounds* out) {
  if (b >= 0xC2 && b <= 0xDF) {
    *out = {0x80, 0xBF, 1};
  } else if (b >= 0xE0 && b <= 0xEF) {
    *out = {static_cast<unsigned char>(b == 0xE0 ? 0xA0 : 0x80),
            static_cast<unsigned char>(b == 0xED ? 0x9F : 0xBF), 2};
  } else if (b >= 0xF0 && b <= 0xF4) {
    *out = {static_cast<unsigned char>(b == 0xF0 ? 0x90 : 0x80),
            static_cast<unsigned char>(b == 0xF4 ? 0x8F : 0xBF), 3};
  } else {
    return false;
  }
  return true;
}

// Decodes `bytes`; when `hold_incomplete`, a valid-so-far sequence cut off by the end is left in
// `*rest` instead of being replaced.
std::string decode(std::string_view bytes, bool hold_incomplete, std::string* rest) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  const std::size_t n = bytes.size();
  while (i < n) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (b < 0x80) {
      // Copy the ASCII run in one go: most text is ASCII.
      std::size_t j = i + 1;
      while (j < n && static_cast<unsigned char>(bytes[j]) < 0x80) ++j;
      out.append(bytes.substr(i, j - i));
      i = j;
      continue;
    }
    Bounds bounds;
    if (!lead_bounds(b, &bounds)) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    std::size_t seen = 0;
    unsigned char lower = bounds.lower;
    unsigned char upper = bounds.upper;
    while (seen < bounds.needed && j < n) {
      const auto c = static_cast<unsigned char>(bytes[j]);
      if (c < lower || c > upper) break;
      lower = 0x80;
      upper = 0xBF;
      ++j;
      ++seen;
    }
    if (seen == bounds.needed) {
      out.append(bytes.substr(i, j - i));
    } else if (j == n && hold_incomplete) {
      rest->assign(bytes.substr(i));
      return out;
    } else {
      out.append(kReplacement);
    }
    i = j;
  }
  return out;
}

}  // namespace

std::string decode_utf8_lossy(std::string_view bytes) {
  return decode(bytes, false, nullptr);
}

std::string Utf8StreamDecoder::write(std::string_view bytes) {
  std::string input;
  if (!pending_.empty()) {
    input = std::move(pending_);
    pending_.clear();
    input.append(bytes);
    bytes = input;
  }
  return decode(bytes, true, &pending_);
}

std::string Utf8StreamDecoder::finish() {
  std::string rest = std::move(pending_);
  pending_.clear();
  return decode(rest, false, nullptr);
}

std::size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  return 2;
}

std::size_t utf16_length(std::string_view utf8) {
  std::size_t units = 0;
  for (unsigned char c : utf8) {
    // Count lead bytes; a 4-byte sequence is a surrogate pair, two units.
    if ((c & 0xC0) != 0x80) units += (c >= 0xF0) ? 2 : 1;
  }
  return units;
}

std::string json_quote(std::string_view text) {
  return nlohmann::json(std::string(text))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace perimeter::tools
