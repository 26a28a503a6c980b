#pragma once

#include <string_view>

namespace perimeter {

// Names the calling thread as `top -H`, `ps -L`, perf and /proc/<pid>/task/<tid>/comm show it,
// so that an operator's CPU can be told apart by role (docs/operator.md). Linux keeps 15 bytes:
// longer names keep their first 15.
void name_this_thread(std::string_view name);

}  // namespace perimeter
