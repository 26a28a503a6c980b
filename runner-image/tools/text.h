#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace perimeter::tools {

// Decodes bytes as UTF-8 the way Node's Buffer#toString('utf8') does (WHATWG: each maximal
// invalid subpart becomes one U+FFFD), so tool output is the same text the SDK would send.
std::string decode_utf8_lossy(std::string_view bytes);

// Incremental form for streams: holds back an incomplete trailing sequence until more bytes come,
// as Node's StringDecoder does; `finish` turns a leftover into U+FFFD.
class Utf8StreamDecoder {
 public:
  std::string write(std::string_view bytes);
  std::string finish();

 private:
  std::string pending_;
};

// Length in UTF-16 code units, the unit of JavaScript's `string.length` that the SDK's limits use.
std::size_t utf16_length(std::string_view utf8);
// Bytes in the UTF-8 sequence starting with `lead`.
std::size_t utf8_sequence_length(unsigned char lead);

// JSON.stringify of a string, as the SDK quotes paths in its messages.
std::string json_quote(std::string_view text);

}  // namespace perimeter::tools
