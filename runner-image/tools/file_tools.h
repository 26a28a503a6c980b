#pragma once

#include <cstdint>
#include <optional>

#include "tools/tool.h"
#include "tools/workspace.h"

namespace perimeter::tools {

// Size cap for a whole-file read and for edit, which load the whole file (the SDK's default).
inline constexpr std::uint64_t kDefaultMaxFileBytes = 256 * 1024;

// read {file_path, view_range?}: a UTF-8 text file, whole or lines [start, end] (1-based,
// inclusive; end <= 0 means to the end). A file over the cap needs a view_range and is streamed.
class ReadTool final : public Tool {
 public:
  // `max_file_bytes` nullopt disables the cap (the SDK's `maxFileBytes: null`).
  ReadTool(const Workspace& workspace, std::optional<std::uint64_t> max_file_bytes)
      : workspace_(workspace), max_file_bytes_(max_file_bytes) {}
  std::string_view name() const override { return "read"; }
  std::string run(const nlohmann::json& input) override;

 private:
  const Workspace& workspace_;
  std::optional<std::uint64_t> max_file_bytes_;
};

// write {file_path, content}: atomic replace, parent directories created (0700).
class WriteTool final : public Tool {
 public:
  explicit WriteTool(const Workspace& workspace) : workspace_(workspace) {}
  std::string_view name() const override { return "write"; }
  std::string run(const nlohmann::json& input) override;

 private:
  const Workspace& workspace_;
};

// edit {file_path, old_string, new_string, replace_all?}: old_string must occur exactly once
// unless replace_all.
class EditTool final : public Tool {
 public:
  EditTool(const Workspace& workspace, std::optional<std::uint64_t> max_file_bytes)
      : workspace_(workspace), max_file_bytes_(max_file_bytes) {}
  std::string_view name() const override { return "edit"; }
  std::string run(const nlohmann::json& input) override;

 private:
  const Workspace& workspace_;
  std::optional<std::uint64_t> max_file_bytes_;
};

// The SDK destructures its input first: `null` input fails there with this JavaScript error.
void reject_null_input(const nlohmann::json& input, std::string_view first_property);

}  // namespace perimeter::tools
