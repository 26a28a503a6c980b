#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::agentapi {

// One server-sent event. `event` is empty when the frame had no `event:` line.
struct SseFrame {
  std::string event;
  std::string id;
  std::string data;
};

// Incremental text/event-stream parser (WHATWG rules): bytes in, whole frames out. Lines end in
// LF, CRLF or CR; `data:` lines join with LF; comments (":...") and unknown fields are ignored;
// a frame is dispatched at a blank line.
class SseParser {
 public:
  std::vector<SseFrame> feed(std::string_view bytes);
  // The id of the last dispatched frame that carried one (for Last-Event-ID).
  const std::string& last_event_id() const { return last_event_id_; }

 private:
  void line(std::string_view text, std::vector<SseFrame>* out);

  std::string partial_;
  bool pending_cr_ = false;
  SseFrame current_;
  bool has_data_ = false;
  std::string last_event_id_;
};

}  // namespace perimeter::agentapi
