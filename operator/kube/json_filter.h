#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace perimeter::kube {

// Which parts of a JSON document to keep, decided while it is parsed: a document reduced after
// parsing has first been built whole (for a watched Pod, `managedFields` and the spec the operator
// wrote itself are most of it), and building what is then thrown away was most of the decode's
// cost.
//
// A filter either keeps a value whole, or keeps only the listed members of an object, each with
// a filter of its own. Applied to an array, a filter applies to each element; applied to a
// string, number, boolean or null, every filter keeps it.
class JsonFilter {
 public:
  // Keeps the value whole.
  static JsonFilter everything() { return JsonFilter(true); }
  // Keeps no member until members are added with keep().
  static JsonFilter members() { return JsonFilter(false); }

  // Keeps the member `key` (filtered by `filter`); returns *this for chaining.
  JsonFilter& keep(std::string key, JsonFilter filter = everything());

  bool keeps_everything() const { return keep_all_; }
  // The filter of member `key`, or null when the member is dropped.
  const JsonFilter* member(std::string_view key) const;

 private:
  explicit JsonFilter(bool keep_all) : keep_all_(keep_all) {}
  bool keep_all_;
  std::vector<std::pair<std::string, JsonFilter>> members_;
};

// Parses `text`, building only what `filter` keeps. Returns a discarded value (is_discarded())
// when `text` is not JSON; dropped parts are still read, so the verdict is the full parser's.
nlohmann::json parse_filtered(std::string_view text, const JsonFilter& filter);

// How many texts parse_filtered has read twice, in this process: the one-pass reader
// (core/json_reader.h) gave up on them and nlohmann read them again. Text that is not JSON, or
// starts with a byte-order mark; the apiserver's objects never should.
std::uint64_t filtered_parse_fallbacks();

}  // namespace perimeter::kube
