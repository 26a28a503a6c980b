#include "mcp/sse_event_splitter.h"

#include <cstring>
#include <utility>

namespace perimeter::mcpguard {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

// The first CR or LF in [from, size) of `text`, or npos. Two memchr calls (vectorised) rather than
// a byte loop; the CR search stops at the LF found.
std::size_t find_line_end(const std::string& text, std::size_t from) {
  const char* begin = text.data() + from;
  const std::size_t size = text.size() - from;
  const void* lf = std::memchr(begin, '\n', size);
  const std::size_t lf_at = lf ? static_cast<const char*>(lf) - begin : size;
  const void* cr = std::memchr(begin, '\r', lf_at);
  if (cr) return from + (static_cast<const char*>(cr) - begin);
  return lf ? from + lf_at : std::string::npos;
}

}  // namespace

bool SseEventSplitter::feed(std::string_view bytes, std::vector<RawSseEvent>* out) {
  if (spent_) return false;
  pending_.append(bytes);
  const std::size_t size = pending_.size();
  while (scan_pos_ < size) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (pending_[scan_pos_] == '\n') {
        line_start_ = ++scan_pos_;
        continue;
      }
    }
    const std::size_t at = find_line_end(pending_, scan_pos_);
    if (at == std::string::npos) {
      scan_pos_ = size;
      break;
    }
    std::size_t next = at + 1;
    if (pending_[at] == '\r') {
      if (next < size) {
        if (pending_[next] == '\n') ++next;
      } else {
        skip_lf_ = true;  // the LF, if it comes, is in the next chunk
      }
    }
    const std::string_view line(pending_.data() + line_start_, at - line_start_);
    line_start_ = scan_pos_ = next;
    if (!on_line(line, next, out)) return false;
  }
  if (pending_.size() - event_end_ > max_event_bytes_) {
    spent_ = true;
    return false;
  }
  if (event_end_ > 0) {
    // One move of the unfinished tail per feed, not per event.
    pending_.erase(0, event_end_);
    line_start_ -= event_end_;
    scan_pos_ -= event_end_;
    event_end_ = 0;
  }
  return true;
}

bool SseEventSplitter::on_line(std::string_view line, std::size_t event_end,
                               std::vector<RawSseEvent>* out) {
  if (first_line_) {
    first_line_ = false;
    if (line.starts_with(kBom)) line.remove_prefix(kBom.size());
  }
  if (line.empty()) {
    if (event_end - event_end_ > max_event_bytes_) {
      spent_ = true;
      return false;
    }
    RawSseEvent event;
    event.raw.assign(pending_, event_end_, event_end - event_end_);
    event.event = std::move(event_);
    event.id = std::move(id_);
    if (!data_.empty()) data_.pop_back();  // the LF after the last data line
    event.data = std::move(data_);
    event.has_data = has_data_;
    out->push_back(std::move(event));
    event_.clear();
    id_.clear();
    data_.clear();
    has_data_ = false;
    event_end_ = event_end;
    return true;
  }
  if (line.front() == ':') return true;  // a comment
  std::string_view name = line;
  std::string_view value;
  if (const auto colon = line.find(':'); colon != std::string_view::npos) {
    name = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (name == "data") {
    data_.append(value);
    data_.push_back('\n');
    has_data_ = true;
  } else if (name == "event") {
    event_.assign(value);
  } else if (name == "id") {
    if (value.find('\0') == std::string_view::npos) id_.assign(value);
  }
  // `retry` and unknown fields: nothing the guard needs.
  return true;
}

std::string serialize_sse_event(const RawSseEvent& event, std::string_view data) {
  std::string out;
  out.reserve(data.size() + event.event.size() + event.id.size() + 32);
  if (!event.event.empty()) out.append("event: ").append(event.event).push_back('\n');
  if (!event.id.empty()) out.append("id: ").append(event.id).push_back('\n');
  // Every line end the reader knows (LF, CR, CRLF) starts a new data line.
  std::size_t start = 0;
  while (true) {
    const std::size_t end = data.find_first_of("\r\n", start);
    out.append("data: ").append(data.substr(start, end - start)).push_back('\n');
    if (end == std::string_view::npos) break;
    start = end + 1;
    if (data[end] == '\r' && start < data.size() && data[start] == '\n') ++start;
  }
  out.push_back('\n');
  return out;
}

}  // namespace perimeter::mcpguard
