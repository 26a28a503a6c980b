#include "agentapi/sse_parser.h"

namespace perimeter::agentapi {

std::vector<SseFrame> SseParser::feed(std::string_view bytes) {
  std::vector<SseFrame> out;
  for (char c : bytes) {
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') continue;  // the LF of a CRLF
    }
    if (c == '\r' || c == '\n') {
      pending_cr_ = c == '\r';
      line(partial_, &out);
      partial_.clear();
      continue;
    }
    partial_.push_back(c);
  }
  return out;
}

void SseParser::line(std::string_view text, std::vector<SseFrame>* out) {
  if (text.empty()) {
    if (has_data_ || !current_.event.empty()) {
      if (!current_.id.empty()) last_event_id_ = current_.id;
      out->push_back(std::move(current_));
    }
    current_ = SseFrame{};
    has_data_ = false;
    return;
  }
  if (text.front() == ':') return;  // comment
  const std::size_t colon = text.find(':');
  std::string_view field = text.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = text.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "event") {
    current_.event = value;
  } else if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) current_.id = value;
  }
}

}  // namespace perimeter::agentapi
