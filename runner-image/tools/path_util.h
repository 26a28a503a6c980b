#pragma once

#include <string>
#include <string_view>

namespace perimeter::tools::paths {

// POSIX path arithmetic with Node's `path` semantics, which decide the paths in tool output.
std::string normalize(std::string_view path);                    // path.normalize, no trailing '/'
std::string resolve(std::string_view base, std::string_view p);  // path.resolve(base, p)
std::string join(std::string_view a, std::string_view b);        // path.join(a, b)
std::string dirname(std::string_view path);                      // path.dirname
std::string basename(std::string_view path);                     // path.basename
bool is_absolute(std::string_view path);
// `p` is `root` or lexically inside it (the SDK's isWithin).
bool is_within(std::string_view root, std::string_view p);

}  // namespace perimeter::tools::paths
