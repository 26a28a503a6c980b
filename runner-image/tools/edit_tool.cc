#include <sys/stat.h>

#include <cerrno>

#include "tools/file_io.h"
#include "tools/file_tools.h"
#include "tools/js_value.h"
#include "tools/text.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

// Non-overlapping occurrences, left to right: what `data.split(old).length - 1` counts.
std::size_t count_occurrences(std::string_view data, std::string_view needle) {
  std::size_t count = 0;
  for (std::size_t pos = data.find(needle); pos != std::string_view::npos;
       pos = data.find(needle, pos + needle.size())) {
    ++count;
  }
  return count;
}

std::string replace_all(std::string_view data, std::string_view needle, std::string_view with) {
  std::string out;
  out.reserve(data.size());
  std::size_t from = 0;
  for (std::size_t pos = data.find(needle); pos != std::string_view::npos;
       pos = data.find(needle, from)) {
    out.append(data.substr(from, pos - from));
    out.append(with);
    from = pos + needle.size();
  }
  out.append(data.substr(from));
  return out;
}

}  // namespace

std::string EditTool::run(const nlohmann::json& input) {
  reject_null_input(input, "file_path");
  const nlohmann::json* file_path_value = field(input, "file_path");
  const nlohmann::json* old_value = field(input, "old_string");
  if (!js_truthy(file_path_value)) throw ToolError("edit: file_path is required");
  if (!js_truthy(old_value)) throw ToolError("edit: old_string is required");
  const std::string abs = workspace_.confine(*file_path_value);
  const std::string file_path = js_to_string(*file_path_value);
  if (const std::string ro = workspace_.read_only_root_for(abs); !ro.empty()) {
    throw ToolError("edit: " + file_path + " is inside read-only directory " + ro);
  }
  std::string data;
  try {
    // Same guard as read: the cap bounds memory and a FIFO is never opened.
    struct stat st {};
    if (::stat(abs.c_str(), &st) != 0) throw_errno(errno, "stat");
    if (!S_ISREG(st.st_mode)) throw ToolError("edit: " + file_path + " is not a regular file");
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (max_file_bytes_ && size > *max_file_bytes_) {
      throw ToolError("edit: " + file_path + " is " + std::to_string(size) + " bytes, exceeds " +
                      std::to_string(*max_file_bytes_) +
                      "-byte limit. The edit tool loads the whole file and cannot modify a file "
                      "this large.");
    }
    data = decode_utf8_lossy(read_file(abs));
  } catch (const FsError& e) {
    throw ToolError("edit: " + fs_error_message(e.code(), file_path));
  }
  // String.prototype.split coerces the separator and the SDK never checks its type.
  const std::string old_string = js_to_string(*old_value);
  const std::size_t count = count_occurrences(data, old_string);
  if (count == 0) throw ToolError("edit: old_string not found in " + file_path);
  const nlohmann::json* new_value = field(input, "new_string");
  const bool all = js_truthy(field(input, "replace_all"));
  std::string updated;
  if (all) {
    // Array#join: an undefined separator is ",".
    const std::string with = new_value == nullptr ? "," : js_to_string(*new_value);
    updated = replace_all(data, old_string, with);
  } else {
    if (count > 1) {
      throw ToolError("edit: old_string appears " + std::to_string(count) + " times in " +
                      file_path + " (must be unique)");
    }
    // Inserted literally (the SDK's callback form of replace), so `$&` stays `$&`.
    const std::string with = new_value == nullptr ? "undefined" : js_to_string(*new_value);
    const std::size_t pos = data.find(old_string);
    updated = data.substr(0, pos) + with + data.substr(pos + old_string.size());
  }
  try {
    atomic_write_file(abs, updated);
  } catch (const FsError& e) {
    throw ToolError("edit: write: " + fs_error_message(e.code(), file_path));
  }
  return "edited " + file_path + " (" + std::to_string(all ? count : 1) + " replacement(s))";
}

}  // namespace perimeter::tools
