#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "tools/file_io.h"
#include "tools/glob_pattern.h"
#include "tools/js_value.h"
#include "tools/path_util.h"
#include "tools/search_tools.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

enum class EntryType { kDirectory, kFile, kSymlink, kOther };

struct DirEntry {
  std::string name;
  EntryType type;
};

EntryType type_of(mode_t mode) {
  if (S_ISDIR(mode)) return EntryType::kDirectory;
  if (S_ISREG(mode)) return EntryType::kFile;
  if (S_ISLNK(mode)) return EntryType::kSymlink;
  return EntryType::kOther;
}

// Entries of `dir` sorted by name, as Node's readdir returns them; empty when unreadable.
std::vector<DirEntry> list_directory(const std::string& dir) {
  std::vector<DirEntry> entries;
  DIR* handle = ::opendir(dir.c_str());
  if (handle == nullptr) return entries;
  // Each DIR stream is private to this call, which is all readdir needs to be thread-safe.
  while (const dirent* d = ::readdir(handle)) {  // NOLINT(concurrency-mt-unsafe)
    const std::string_view name(d->d_name);
    if (name == "." || name == "..") continue;
    EntryType type;
    switch (d->d_type) {
      case DT_DIR:
        type = EntryType::kDirectory;
        break;
      case DT_REG:
        type = EntryType::kFile;
        break;
      case DT_LNK:
        type = EntryType::kSymlink;
        break;
      case DT_UNKNOWN: {
        struct stat st {};
        type = ::lstat((dir + "/" + d->d_name).c_str(), &st) == 0 ? type_of(st.st_mode)
                                                                  : EntryType::kOther;
        break;
      }
      default:
        type = EntryType::kOther;
    }
    entries.push_back({std::string(name), type});
  }
  ::closedir(handle);
  std::sort(entries.begin(), entries.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

struct Match {
  std::string path;
  double mtime_ms;
};

// Segment indexes, per brace alternative, that a directory's children are tested against.
using PatternStates = std::vector<std::pair<std::size_t, std::set<std::size_t>>>;

// Walks every brace alternative at once, the way fs.glob does: each directory carries, per
// alternative, the set of segment indexes its children are tested against.
class GlobWalk {
 public:
  GlobWalk(const std::vector<std::vector<GlobSegment>>& alternatives, std::string root,
           std::string real_root, std::vector<Match>* matches)
      : alternatives_(alternatives),
        root_(std::move(root)),
        real_root_(std::move(real_root)),
        root_is_real_(root_ == real_root_),
        matches_(matches) {}

  // Returns false once the entry budget is spent.
  bool visit(const std::string& rel, const PatternStates& states, bool via_symlink) {
    const std::string dir = rel.empty() ? root_ : root_ + "/" + rel;
    std::vector<DirEntry> children = children_of(dir, states);
    // Subdirectories to visit, in the order first met, each with its states per alternative.
    std::vector<std::pair<std::string, PatternStates>> pending;
    std::map<std::string, std::size_t> pending_index;
    for (const auto& [alt, positions] : states) {
      const auto& segments = alternatives_[alt];
      const std::size_t last = segments.size() - 1;
      for (const auto& entry : children) {
        std::set<std::size_t> next;
        bool candidate = false;
        for (std::size_t i : positions) {
          const GlobSegment& segment = segments[i];
          if (segment.kind == GlobSegment::Kind::kGlobstar) {
            // `**` itself never matches a dot entry nor walks into node_modules, but the
            // segment after it is still tested against every entry (`**/.env` finds ./.env).
            const bool skipped = entry.name[0] == '.' || entry.name == "node_modules";
            if (!skipped && entry.type == EntryType::kDirectory) {
              next.insert(i);
            } else if (!skipped && i == last) {
              candidate = true;
            }
            if (i + 1 <= last && segments[i + 1].matches(entry.name)) {
              if (i + 1 == last) {
                candidate = true;
              } else if (entry.type == EntryType::kDirectory) {
                next.insert(i + 2);
              }
              if (entry.type == EntryType::kDirectory || entry.type == EntryType::kSymlink) {
                next.insert(i + 1);
              }
            }
          } else if (segment.matches(entry.name)) {
            if (i == last) {
              candidate = true;
            } else if (entry.type == EntryType::kDirectory ||
                       (segment.kind == GlobSegment::Kind::kLiteral &&
                        entry.type == EntryType::kSymlink)) {
              // fs.glob follows a symlinked directory only when a literal segment names it.
              next.insert(i + 1);
            }
          }
        }
        const std::string child_rel = rel.empty() ? entry.name : rel + "/" + entry.name;
        if (candidate && results_.insert(child_rel).second) {
          if (remaining_-- == 0) return false;
          if (entry.type == EntryType::kFile) add(child_rel, via_symlink);
        }
        if (!next.empty() &&
            (entry.type == EntryType::kDirectory || entry.type == EntryType::kSymlink)) {
          auto [it, inserted] = pending_index.emplace(child_rel, pending.size());
          if (inserted) pending.push_back({child_rel, {}});
          pending[it->second].second.push_back({alt, std::move(next)});
        }
      }
    }
    // fs.glob queues the subdirectories it meets and pops the last one first: a depth-first walk
    // in reverse order of discovery. That order is what breaks ties between equal mtimes.
    for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
      const bool through_link = via_symlink || is_symlink(it->first);
      if (!visit(it->first, it->second, through_link)) return false;
    }
    return true;
  }

 private:
  std::vector<DirEntry> children_of(const std::string& dir, const PatternStates& states) {
    std::set<std::string> names;
    for (const auto& [alt, positions] : states) {
      for (std::size_t i : positions) {
        const GlobSegment& segment = alternatives_[alt][i];
        if (segment.kind != GlobSegment::Kind::kLiteral) return list_directory(dir);
        names.insert(segment.text);
      }
    }
    // Only named children can match: look them up instead of listing the directory.
    std::vector<DirEntry> children;
    for (const auto& name : names) {
      struct stat st {};
      const std::string path =
          dir + "/" + name;  // NOLINT(performance-inefficient-string-concatenation)
      if (::lstat(path.c_str(), &st) == 0) children.push_back({name, type_of(st.st_mode)});
    }
    return children;
  }

  bool is_symlink(const std::string& rel) const {
    struct stat st {};
    return ::lstat((root_ + "/" + rel).c_str(), &st) == 0 && S_ISLNK(st.st_mode);
  }

  void add(const std::string& rel, bool via_symlink) {
    const std::string full = root_ + "/" + rel;
    // A match reached through a symlinked directory may live outside the root: the realpath
    // filter is the boundary. Below a canonical root with no link on the way, the path is real.
    if (via_symlink || !root_is_real_) {
      try {
        if (!paths::is_within(real_root_, real_path(full))) return;
      } catch (const FsError&) {
        return;
      }
    }
    double mtime_ms = 0;
    struct stat st {};
    if (::stat(full.c_str(), &st) == 0) {
      mtime_ms = static_cast<double>(st.st_mtim.tv_sec) * 1e3 +
                 static_cast<double>(st.st_mtim.tv_nsec) / 1e6;
    }
    matches_->push_back({full, mtime_ms});
  }

  const std::vector<std::vector<GlobSegment>>& alternatives_;
  std::string root_;
  std::string real_root_;
  bool root_is_real_;
  std::set<std::string> results_;
  std::vector<Match>* matches_;
  std::size_t remaining_ = kWalkMaxEntries;
};

// Stops fs.glob walking out of the root through a literal or brace-expanded `..`.
bool pattern_can_ascend(std::string_view pattern) {
  std::size_t i = 0;
  while (i <= pattern.size()) {
    std::size_t j = pattern.find_first_of("\\/{},", i);
    if (j == std::string_view::npos) j = pattern.size();
    if (pattern.substr(i, j - i) == "..") return true;
    i = j + 1;
  }
  return false;
}

}  // namespace

std::string GlobTool::run(const nlohmann::json& input) {
  if (input.is_null()) {
    throw ToolError("Error: Cannot destructure property 'pattern' of 'object null' as it is null.");
  }
  const nlohmann::json* pattern_value = field(input, "pattern");
  if (!js_truthy(pattern_value)) throw ToolError("glob: pattern is required");
  if (!pattern_value->is_string()) {
    throw ToolError("Error: The \"path\" argument must be of type string. Received " +
                    node_received(*pattern_value));
  }
  const std::string& pattern = pattern_value->get_ref<const std::string&>();
  if (paths::is_absolute(pattern)) {
    throw ToolError(
        "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)");
  }
  if (pattern_can_ascend(pattern)) throw ToolError("glob: \"..\" is not permitted in the pattern");
  const nlohmann::json* path_value = field(input, "path");
  std::string root;
  std::string real_root;
  if (js_truthy(path_value)) {
    root = workspace_.confine(*path_value);
    real_root = root;
  } else {
    root = workspace_.workdir();
    try {
      real_root = canonicalize(root);
    } catch (const FsError& e) {
      throw ToolError(std::string("Error: ") + e.what());
    }
  }
  const GlobPattern compiled = GlobPattern::compile(pattern);
  std::vector<Match> matches;
  if (!compiled.alternatives().empty()) {
    PatternStates initial;
    for (std::size_t alt = 0; alt < compiled.alternatives().size(); ++alt)
      initial.push_back({alt, {0}});
    GlobWalk walk(compiled.alternatives(), root, real_root, &matches);
    walk.visit("", initial, false);
  }
  if (matches.empty()) return "no matches";
  std::stable_sort(matches.begin(), matches.end(),
                   [](const Match& a, const Match& b) { return a.mtime_ms > b.mtime_ms; });
  std::string out;
  for (std::size_t i = 0; i < matches.size() && i < kGlobResultLimit; ++i) {
    if (i > 0) out += '\n';
    out += matches[i].path;
  }
  return out;
}

}  // namespace perimeter::tools
