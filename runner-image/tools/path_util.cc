#include "tools/path_util.h"

#include <vector>

namespace perimeter::tools::paths {

bool is_absolute(std::string_view path) {
  return !path.empty() && path[0] == '/';
}

std::string normalize(std::string_view path) {
  const bool absolute = is_absolute(path);
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part.empty() || part == ".") {
      // skip
    } else if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!absolute) {
        parts.push_back(part);
      }
    } else {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  if (absolute) out.push_back('/');
  for (std::size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) out += '/';
    out.append(parts[k]);
  }
  if (out.empty()) return std::string(1, '.');
  return out;
}

std::string resolve(std::string_view base, std::string_view p) {
  if (is_absolute(p)) return normalize(p);
  std::string joined(base);
  joined += '/';
  joined.append(p);
  return normalize(joined);
}

std::string join(std::string_view a, std::string_view b) {
  if (b.empty()) return normalize(a);
  if (a.empty()) return normalize(b);
  std::string joined(a);
  joined += '/';
  joined.append(b);
  return normalize(joined);
}

std::string dirname(std::string_view path) {
  if (path.empty()) return ".";
  std::size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  const std::size_t slash = path.substr(0, end).rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  std::size_t cut = slash;
  while (cut > 1 && path[cut - 1] == '/') --cut;
  return std::string(path.substr(0, cut));
}

std::string basename(std::string_view path) {
  std::size_t end = path.size();
  while (end > 0 && path[end - 1] == '/') --end;
  const std::size_t slash = path.substr(0, end).rfind('/');
  const std::size_t start = slash == std::string_view::npos ? 0 : slash + 1;
  return std::string(path.substr(start, end - start));
}

bool is_within(std::string_view root, std::string_view p) {
  const std::string from = normalize(root);
  const std::string to = normalize(p);
  if (to == from) return true;
  std::string prefix = from;
  if (prefix.back() != '/') prefix.push_back('/');
  return to.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace perimeter::tools::paths
