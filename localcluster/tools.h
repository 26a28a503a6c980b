#pragma once

#include <string>

namespace perimeter::localcluster {

// Where the control-plane binaries are: $PERIMETER_TOOLS_BIN when set, else
// ~/.cache/perimeter/tools/bin (what `make tools` fills).
std::string tools_bin_dir();

// The path of tool `name` in `bin_dir`. Throws std::runtime_error naming the tool, the directory
// and the command that builds it when the tool is missing or not executable.
std::string require_tool(const std::string& bin_dir, const std::string& name);

}  // namespace perimeter::localcluster
