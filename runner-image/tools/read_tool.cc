#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <limits>
#include <vector>

#include "tools/file_io.h"
#include "tools/file_tools.h"
#include "tools/js_value.h"
#include "tools/text.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

constexpr std::size_t kReadChunkBytes = std::size_t{64} * 1024;

// JavaScript's `.length` of a value, when it has one that is a number.
std::size_t js_length(const nlohmann::json* value) {
  if (value == nullptr) return 0;
  if (value->is_array()) return value->size();
  if (value->is_string()) return utf16_length(value->get_ref<const std::string&>());
  return 0;
}

double element(const nlohmann::json& range, std::size_t i) {
  if (range.is_array()) return js_to_number(range[i]);
  // A two-character string destructures into its characters.
  const auto& s = range.get_ref<const std::string&>();
  std::size_t pos = 0;
  for (std::size_t k = 0; k < i; ++k)
    pos += utf8_sequence_length(static_cast<unsigned char>(s[pos]));
  return js_to_number(
      nlohmann::json(s.substr(pos, utf8_sequence_length(static_cast<unsigned char>(s[pos])))));
}

// Array#slice's ToIntegerOrInfinity, clamped to [0, len].
std::size_t slice_index(double v, std::size_t len) {
  if (std::isnan(v)) return 0;
  if (v < 0) {
    const double from_end = static_cast<double>(len) + std::trunc(v);
    return from_end < 0 ? 0 : static_cast<std::size_t>(from_end);
  }
  if (v >= static_cast<double>(len)) return len;
  return static_cast<std::size_t>(std::trunc(v));
}

// Lines [startLine, endLine] of a file over the cap, read in chunks so that memory stays bounded
// by the cap plus one chunk; the selected bytes are capped too (the SDK's LineRangeCollector).
std::string read_range_streaming(const std::string& abs, const std::string& file_path,
                                 double start_line, double end_line, std::uint64_t limit) {
  const double start = std::max(0.0, start_line - 1);
  const double end = end_line > 0 ? end_line : std::numeric_limits<double>::infinity();
  if (end <= start) return "";
  UniqueFd fd(::open(abs.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open");
  std::string collected;
  double line = 0;
  auto over_limit = [&]() {
    if (end - start == 1) {
      return ToolError("read: line " + js_number_to_string(start + 1) + " of " + file_path +
                       " alone exceeds " + std::to_string(limit) +
                       "-byte limit. The read tool cannot return part of a line, so view_range "
                       "cannot narrow this further.");
    }
    return ToolError("read: view_range [" + js_number_to_string(start_line) + ", " +
                     js_number_to_string(end_line) + "] of " + file_path + " exceeds " +
                     std::to_string(limit) +
                     "-byte limit. Narrow the view_range to read a smaller portion.");
  };
  std::vector<char> chunk(kReadChunkBytes);
  while (line < end) {
    const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read");
    }
    if (n == 0) break;
    std::string_view data(chunk.data(), static_cast<size_t>(n));
    std::size_t line_start = 0;
    while (line_start < data.size() && line < end) {
      const std::size_t newline = data.find('\n', line_start);
      const std::size_t line_end = newline == std::string_view::npos ? data.size() : newline;
      if (line >= start) {
        collected.append(data.substr(line_start, line_end - line_start));
        if (newline != std::string_view::npos && line + 1 < end) collected += '\n';
        if (collected.size() > limit) throw over_limit();
      }
      if (newline == std::string_view::npos) break;
      line += 1;
      line_start = newline + 1;
    }
  }
  return decode_utf8_lossy(collected);
}

}  // namespace

void reject_null_input(const nlohmann::json& input, std::string_view first_property) {
  if (input.is_null()) {
    throw ToolError("Error: Cannot destructure property '" + std::string(first_property) +
                    "' of 'object null' as it is null.");
  }
}

std::string ReadTool::run(const nlohmann::json& input) {
  reject_null_input(input, "file_path");
  const nlohmann::json* file_path_value = field(input, "file_path");
  if (!js_truthy(file_path_value)) throw ToolError("read: file_path is required");
  const std::string abs = workspace_.confine(*file_path_value);
  const std::string file_path = js_to_string(*file_path_value);
  const nlohmann::json* view_range = field(input, "view_range");
  const std::size_t range_length = js_length(view_range);
  if (range_length != 0 && range_length != 2) {
    throw ToolError("read: view_range must be [start_line, end_line]");
  }
  std::string data;
  try {
    // stat before open: the cap stops a huge file, and a FIFO must never be opened (it blocks).
    struct stat st {};
    if (::stat(abs.c_str(), &st) != 0) throw_errno(errno, "stat");
    if (!S_ISREG(st.st_mode)) throw ToolError("read: " + file_path + " is not a regular file");
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (max_file_bytes_ && size > *max_file_bytes_) {
      if (range_length == 0) {
        throw ToolError("read: " + file_path + " is " + std::to_string(size) + " bytes, exceeds " +
                        std::to_string(*max_file_bytes_) +
                        "-byte limit. Use the view_range parameter to read specific line ranges, "
                        "e.g. view_range: [1, 500].");
      }
      return read_range_streaming(abs, file_path, element(*view_range, 0), element(*view_range, 1),
                                  *max_file_bytes_);
    }
    data = decode_utf8_lossy(read_file(abs));
  } catch (const FsError& e) {
    throw ToolError("read: " + fs_error_message(e.code(), file_path));
  }
  if (range_length == 0) return data;
  std::vector<std::string_view> lines;
  std::string_view rest(data);
  for (;;) {
    const std::size_t newline = rest.find('\n');
    lines.push_back(rest.substr(0, newline));
    if (newline == std::string_view::npos) break;
    rest.remove_prefix(newline + 1);
  }
  const double start_line = element(*view_range, 0);
  const double end_line = element(*view_range, 1);
  const double start = std::isnan(start_line) ? start_line : std::max(0.0, start_line - 1);
  const double end = end_line > 0 ? end_line : static_cast<double>(lines.size());
  const std::size_t from = slice_index(start, lines.size());
  const std::size_t to = slice_index(end, lines.size());
  std::string out;
  for (std::size_t i = from; i < to; ++i) {
    if (i > from) out += '\n';
    out.append(lines[i]);
  }
  return out;
}

}  // namespace perimeter::tools
