#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::mcpguard {

// One event of a text/event-stream, with its bytes exactly as they arrived (the blank line that
// ends it included), so an event the guard does not change is forwarded byte for byte.
struct RawSseEvent {
  std::string raw;
  // The fields as the WHATWG rules read them: `data` lines joined with LF; empty when absent.
  std::string event;
  std::string id;
  std::string data;
  bool has_data = false;
};

// Splits a text/event-stream into whole events as bytes arrive. Lines end in LF, CRLF or CR
// (a CR at the end of one chunk and an LF at the start of the next are one line end). Comment
// lines (`:` keep-alives) belong to the event they precede, or are an event of their own
// (has_data false) when a blank line follows them.
//
// Details a caller may meet: an event ends as soon as its blank line's terminator arrives, so a
// blank line ending in CR at the end of a chunk hands the event out at once and an LF that follows
// in the next chunk becomes the first byte of the next event's `raw` (not a blank line of its
// own); a blank line with nothing before it is an event of its own (raw "\n", no fields); `id` is
// the event's own `id:` field, not the last id of earlier events. The concatenation of every
// `raw` and pending() is always exactly the bytes fed. Each feed scans only the new bytes; memory
// is the unfinished event plus the chunk being fed (feed bounded reads), and the events handed
// out.
class SseEventSplitter {
 public:
  explicit SseEventSplitter(std::size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

  // Appends `bytes` and moves every completed event to `out`. Returns false when the event being
  // assembled grew beyond max_event_bytes (the stream must be cut; the splitter is then spent).
  // Events completed before the oversized one, in the same feed, are still moved to `out`.
  bool feed(std::string_view bytes, std::vector<RawSseEvent>* out);

  // Bytes of an event that had not ended when the stream did.
  const std::string& pending() const { return pending_; }

 private:
  // Reads one complete line (terminator excluded) of the event in pending_; false when it ended
  // an event that is too large.
  bool on_line(std::string_view line, std::size_t event_end, std::vector<RawSseEvent>* out);

  std::size_t max_event_bytes_;
  std::string pending_;
  bool spent_ = false;
  // Where the scan stopped, so a feed never reads pending_ again from the start.
  std::size_t line_start_ = 0;  // the line being read
  std::size_t scan_pos_ = 0;    // the first byte not yet looked at
  std::size_t event_end_ = 0;   // bytes of pending_ that belong to events already handed out
  bool skip_lf_ = false;        // the last line ended in CR: an LF next is part of that end
  bool first_line_ = true;      // a UTF-8 BOM may start the stream
  // The fields of the event being read.
  std::string event_;
  std::string id_;
  std::string data_;
  bool has_data_ = false;
};

// The event again with `data` replaced (its `event:` and `id:` fields kept), as `data:` lines and
// a blank line, LF line ends.
std::string serialize_sse_event(const RawSseEvent& event, std::string_view data);

}  // namespace perimeter::mcpguard
