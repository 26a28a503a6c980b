#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace perimeter::runner {

// A path the store refuses (`..`, a symlink, not a regular file, not UTF-8): the SDK's
// FileStoreError, with its wording (`path "<rel>" <reason>`).
class FileStoreError : public std::runtime_error {
 public:
  FileStoreError(const std::string& reason, const std::string& rel_path);
};

// Any other I/O failure (the SDK's errno errors): what the caller logs and carries on from.
class FileStoreIoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One memory store's folder on disk, as the SDK's LocalFileStore (`internal/file-store.ts`,
// opened with utf8: true): files written through a temporary (`.fs-<hex>.tmp`, 0600, O_EXCL and
// O_NOFOLLOW, then renamed), directories 0700, never a symlink followed, never a path out of the
// root. Paths are relative, `/`-separated; a leading `/` is ignored.
class MemoryFileStore {
 public:
  // `root` is resolved (absolute, normalized); whether something already sits there is noted
  // now: only a root that did not exist is removed by dispose().
  explicit MemoryFileStore(const std::string& root);

  const std::string& root() const { return root_; }
  bool removed_on_dispose() const { return removed_on_dispose_; }

  // The root and its missing ancestors (0700).
  void create_root() const;
  // Writes `data` (must be UTF-8) at `rel`, making directories below the root (never the root).
  void put(const std::string& rel, const std::string& data) const;
  // The file's bytes, or nullopt when it does not exist; refuses symlinks, non-files, non-UTF-8.
  std::optional<std::string> get(const std::string& rel) const;
  // Every regular file below the root (symlinks neither followed nor listed): rel -> sha256.
  std::map<std::string, std::string> hashtree() const;
  // The file's sha256, or nullopt when it does not exist.
  std::optional<std::string> hash_file(const std::string& rel) const;
  // Removes a file, or a directory with everything in it; absent is fine.
  void remove(const std::string& rel) const;
  // Removes the root with everything in it, when this store created it.
  void dispose() const;

 private:
  std::string resolve_under_root(const std::string& rel) const;

  std::string root_;
  bool removed_on_dispose_ = false;
};

}  // namespace perimeter::runner
