#pragma once

#include <string>
#include <utility>
#include <vector>

namespace perimeter::sim {

struct ArchiveFile {
  std::string path;  // relative, '/'-separated
  std::string content;
  bool executable = false;
};

// A POSIX ustar archive of `files` wrapped in one top-level directory `root`, the way skill
// bundles are packaged (`<skill>/SKILL.md`, `<skill>/scripts/...`). Paths must already be
// validated (relative, no "..", short enough for ustar).
std::string make_tar_archive(const std::string& root, const std::vector<ArchiveFile>& files);

}  // namespace perimeter::sim
