#include "localcluster/tools.h"

#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

namespace perimeter::localcluster {

std::string tools_bin_dir() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  if (const char* dir = std::getenv("PERIMETER_TOOLS_BIN"); dir && *dir) return dir;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache && *cache) {
    return std::string(cache) + "/perimeter/tools/bin";
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.cache/perimeter/tools/bin";
}

std::string require_tool(const std::string& bin_dir, const std::string& name) {
  std::string path = bin_dir + "/" + name;
  if (::access(path.c_str(), X_OK) != 0) {
    throw std::runtime_error(name + " not found at " + path +
                             ": run `make tools` to build the pinned control-plane binaries "
                             "(or point PERIMETER_TOOLS_BIN at a directory that has them)");
  }
  return path;
}

}  // namespace perimeter::localcluster
