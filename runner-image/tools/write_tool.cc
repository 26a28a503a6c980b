#include "tools/file_io.h"
#include "tools/file_tools.h"
#include "tools/js_value.h"
#include "tools/path_util.h"
#include "tools/tool_error.h"

namespace perimeter::tools {

std::string WriteTool::run(const nlohmann::json& input) {
  reject_null_input(input, "file_path");
  const nlohmann::json* file_path_value = field(input, "file_path");
  if (!js_truthy(file_path_value)) throw ToolError("write: file_path is required");
  const std::string abs = workspace_.confine(*file_path_value);
  const std::string file_path = js_to_string(*file_path_value);
  if (const std::string ro = workspace_.read_only_root_for(abs); !ro.empty()) {
    throw ToolError("write: " + file_path + " is inside read-only directory " + ro);
  }
  const nlohmann::json* content_value = field(input, "content");
  // `content ?? ''`: absent or null writes an empty file.
  const bool has_content = content_value != nullptr && !content_value->is_null();
  try {
    make_directories(paths::dirname(abs));
    if (has_content && !content_value->is_string()) {
      // fs.writeFile refuses a non-string; the SDK reports that code as an i/o error.
      throw FsError("ERR_INVALID_ARG_TYPE", "content must be a string");
    }
    atomic_write_file(abs, has_content ? content_value->get_ref<const std::string&>() : "");
  } catch (const FsError& e) {
    throw ToolError("write: " + fs_error_message(e.code(), file_path));
  }
  const std::size_t bytes = has_content ? content_value->get_ref<const std::string&>().size() : 0;
  return "wrote " + std::to_string(bytes) + " bytes to " + file_path;
}

}  // namespace perimeter::tools
