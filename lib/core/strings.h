#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace perimeter {

// `text` without leading and trailing spaces and tabs.
std::string trim(std::string_view text);

// The non-empty, trimmed items of a comma-separated list ("a, b,,c" -> a, b, c): flag values,
// annotation values.
std::vector<std::string> split_commas(std::string_view list);

}  // namespace perimeter
