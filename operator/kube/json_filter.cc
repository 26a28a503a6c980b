#include "kube/json_filter.h"

#include <atomic>

#include "core/json_reader.h"

namespace perimeter::kube {

using nlohmann::json;

JsonFilter& JsonFilter::keep(std::string key, JsonFilter filter) {
  keep_all_ = false;
  members_.emplace_back(std::move(key), std::move(filter));
  return *this;
}

const JsonFilter* JsonFilter::member(std::string_view key) const {
  if (keep_all_) return this;
  for (const auto& [name, filter] : members_) {
    if (name == key) return &filter;
  }
  return nullptr;
}

namespace {

std::atomic<std::uint64_t> fallbacks{0};

// Builds the kept values in place, driven by core/json_reader.h (keys and strings as views into
// the text, a dropped string never copied) or, for what that reader does not accept, by
// nlohmann's SAX interface. A dropped object or array is only counted through (skip_depth_), so
// nothing of it is allocated.
class FilteringBuilder {
 public:
  static constexpr bool kDecodesEscapes = true;

  explicit FilteringBuilder(const JsonFilter& filter) : root_filter_(filter) {}

  json take() { return std::move(root_); }

  bool null() { return put(json(nullptr)); }
  bool boolean(bool value) { return put(json(value)); }
  bool number_integer(json::number_integer_t value) { return put(json(value)); }
  bool number_unsigned(json::number_unsigned_t value) { return put(json(value)); }
  bool number_float(json::number_float_t value) { return put(json(value)); }
  bool number_float(json::number_float_t value, const json::string_t& /*text*/) {
    return put(json(value));
  }
  bool string(std::string_view value) {
    if (!wants_text()) return true;
    return put(json(std::string(value)));
  }
  bool string(json::string_t& value) { return put(json(std::move(value))); }
  bool binary(json::binary_t& value) { return put(json::binary(std::move(value))); }
  // Whether the next string is kept, so that its text is worth reading.
  bool wants_text() const { return skip_depth_ == 0 && filter_here() != nullptr; }

  bool start_object(std::size_t /*elements*/ = 0) { return open(json::object()); }
  bool start_array(std::size_t /*elements*/ = 0) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(std::string_view name) {
    if (skip_depth_ > 0) return true;
    next_filter_ = frames_.back().filter->member(name);
    if (next_filter_ != nullptr) key_.assign(name);
    return true;
  }
  bool key(json::string_t& name) { return key(std::string_view(name)); }

  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& /*error*/) {
    return false;
  }

 private:
  struct Frame {
    json* value;
    const JsonFilter* filter;  // for an object: of its members; for an array: of each element
  };

  // The filter of the value being read now, or null when it is dropped.
  const JsonFilter* filter_here() const {
    if (frames_.empty()) return &root_filter_;
    if (frames_.back().value->is_array()) return frames_.back().filter;
    return next_filter_;
  }

  // Stores a kept value where it belongs; returns where it went.
  json* place(json&& value) {
    if (frames_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    json& parent = *frames_.back().value;
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(value);
    return &slot;
  }

  bool put(json&& value) {
    if (skip_depth_ > 0 || filter_here() == nullptr) return true;
    place(std::move(value));
    return true;
  }

  bool open(json&& container) {
    if (skip_depth_ > 0) {
      ++skip_depth_;
      return true;
    }
    const JsonFilter* filter = filter_here();
    if (filter == nullptr) {
      skip_depth_ = 1;
      return true;
    }
    frames_.push_back({place(std::move(container)), filter});
    return true;
  }

  bool close() {
    if (skip_depth_ > 0) {
      --skip_depth_;
      return true;
    }
    frames_.pop_back();
    return true;
  }

  const JsonFilter& root_filter_;
  json root_;
  std::vector<Frame> frames_;
  std::string key_;
  const JsonFilter* next_filter_ = nullptr;
  int skip_depth_ = 0;
};

}  // namespace

json parse_filtered(std::string_view text, const JsonFilter& filter) {
  {
    thread_local std::vector<char> containers;
    FilteringBuilder builder(filter);
    if (JsonReader<FilteringBuilder>(text, builder, containers).read()) return builder.take();
    if (containers.capacity() > 256) containers = {};
  }
  // Not accepted by the fast reader (not JSON, or a case it leaves to nlohmann): nlohmann's
  // verdict, and its value.
  fallbacks.fetch_add(1, std::memory_order_relaxed);
  FilteringBuilder builder(filter);
  if (!json::sax_parse(text, &builder, json::input_format_t::json, /*strict=*/true))
    return json(json::value_t::discarded);
  return builder.take();
}

std::uint64_t filtered_parse_fallbacks() {
  return fallbacks.load(std::memory_order_relaxed);
}

}  // namespace perimeter::kube
