#include "tools/workspace.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "tools/file_io.h"
#include "tools/js_value.h"
#include "tools/path_util.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

// Linux's MAXSYMLINKS, where realpath itself reports ELOOP.
constexpr int kMaxSymlinkHops = 40;

std::string read_link(const std::string& path) {
  std::string buf(256, '\0');
  for (;;) {
    const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) throw_errno(errno, "readlink");
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}

// path.resolve(workdir) resolves a relative workdir against the process's current directory.
std::string current_directory() {
  char* cwd = ::getcwd(nullptr, 0);
  if (cwd == nullptr) return "/";
  std::string out(cwd);
  std::free(cwd);
  return out;
}

}  // namespace

std::string canonicalize(const std::string& abs) {
  std::vector<std::string> tail;  // components below the longest existing prefix, innermost first
  std::string prefix = abs;
  int hops = 0;
  for (;;) {
    char* resolved = ::realpath(prefix.c_str(), nullptr);
    if (resolved != nullptr) {
      std::string real(resolved);
      std::free(resolved);
      for (auto it = tail.rbegin(); it != tail.rend(); ++it) real = paths::join(real, *it);
      return real;
    }
    const int realpath_err = errno;
    struct stat st {};
    if (::lstat(prefix.c_str(), &st) != 0) {
      const int lstat_err = errno;
      if (lstat_err != ENOENT && lstat_err != ENOTDIR) throw_errno(lstat_err, "lstat");
      const std::string parent = paths::dirname(prefix);
      if (parent == prefix) throw_errno(lstat_err, "lstat");
      tail.push_back(paths::basename(prefix));
      prefix = parent;
      continue;
    }
    if (!S_ISLNK(st.st_mode)) throw_errno(realpath_err, "realpath");
    if (++hops > kMaxSymlinkHops) throw FsError("ELOOP", "too many levels of symbolic links");
    // A dangling link: continue from its target, so a leaf pointing outside is still caught.
    const std::string parent = real_path(paths::dirname(prefix));
    std::string next = paths::resolve(parent, read_link(prefix));
    for (auto it = tail.rbegin(); it != tail.rend(); ++it) next = paths::join(next, *it);
    tail.clear();
    prefix = next;
  }
}

Workspace::Workspace(const std::string& workdir, std::vector<std::string> allowed_roots,
                     std::vector<std::string> read_only_roots)
    : workdir_(paths::resolve(current_directory(), workdir)),
      allowed_roots_(std::move(allowed_roots)),
      read_only_roots_(std::move(read_only_roots)) {}

std::string Workspace::read_only_root_for(const std::string& target) const {
  for (const auto& root : read_only_roots_) {
    try {
      if (paths::is_within(canonicalize(paths::resolve(current_directory(), root)), target)) {
        return root;
      }
    } catch (const FsError&) {
      // A root that cannot be resolved holds nothing.
    }
  }
  return "";
}

std::string Workspace::confine(const nlohmann::json& p) const {
  std::string real_root;
  try {
    real_root = canonicalize(workdir_);
  } catch (const FsError& e) {
    // The workdir itself is gone: not the model's doing, so not worded as its path.
    throw ToolError(std::string("Error: ") + e.what());
  }
  const std::string label = "path " + js_json_stringify(p);
  std::string real;
  try {
    if (!p.is_string()) {
      // path.resolve refuses anything but a string; the SDK reports that code as an i/o error.
      throw FsError("ERR_INVALID_ARG_TYPE", "path must be a string");
    }
    real = canonicalize(paths::resolve(real_root, p.get<std::string>()));
  } catch (const FsError& e) {
    throw ToolError(fs_error_message(e.code(), label));
  }
  if (paths::is_within(real_root, real)) return real;
  for (const auto& root : allowed_roots_) {
    try {
      if (paths::is_within(canonicalize(paths::normalize(root)), real)) return real;
    } catch (const FsError&) {
      // An allowed root that cannot be resolved grants nothing.
    }
  }
  const char* permitted =
      allowed_roots_.empty()
          ? "the session's working directory"
          : "the session's working directory and its other permitted directories";
  throw ToolError(label + " is outside " + permitted);
}

}  // namespace perimeter::tools
