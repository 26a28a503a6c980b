#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace perimeter::tools {

// Every symlink in `abs` resolved, including a dangling leaf, for paths that may not exist yet
// (the SDK's canonicalize). Throws FsError (ELOOP after 40 links).
std::string canonicalize(const std::string& abs);

// The directory the file tools are confined to (plus `allowed_roots`), symlink-aware.
class Workspace {
 public:
  explicit Workspace(const std::string& workdir, std::vector<std::string> allowed_roots = {},
                     std::vector<std::string> read_only_roots = {});

  // path.resolve(workdir): the root as configured, not canonicalized.
  const std::string& workdir() const { return workdir_; }
  // The model's path resolved against the workdir with every symlink followed, or ToolError with
  // the SDK's wording when it lands outside (or cannot be resolved). `p` may be any JSON value.
  std::string confine(const nlohmann::json& p) const;
  // The first read-only root (as configured) whose canonical form holds the already-canonical
  // `target`, or empty: write and edit refuse there (the SDK's readOnlyRootFor).
  std::string read_only_root_for(const std::string& target) const;

 private:
  std::string workdir_;
  std::vector<std::string> allowed_roots_;
  std::vector<std::string> read_only_roots_;
};

}  // namespace perimeter::tools
