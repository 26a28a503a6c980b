#include "runner/memory_file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "pki/hmac.h"
#include "tools/path_util.h"
#include "tools/text.h"

namespace perimeter::runner {
namespace {

namespace paths = tools::paths;

constexpr const char* kEscapesRoot = "escapes the store root";
constexpr const char* kIsASymlink = "is a symlink";
constexpr const char* kNotAFile = "is not a regular file";
constexpr const char* kNotADirectory = "is not a directory";
constexpr const char* kNotUtf8 = "is not valid utf-8";

[[noreturn]] void throw_io(const std::string& what, int err) {
  throw FileStoreIoError(what + ": " + std::strerror(err));
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  RAND_bytes(buffer.data(), static_cast<int>(bytes));
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : buffer) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 15]);
  }
  return out;
}

bool valid_utf8(const std::string& data) {
  return tools::decode_utf8_lossy(data) == data;
}

// Opens a regular file for reading without following a symlink (the SDK's openRegularFile).
int open_regular(const std::string& rel, const std::string& full) {
  const int fd = ::open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP || err == EMLINK) throw FileStoreError(kIsASymlink, rel);
    if (err == ENOENT) return -1;
    throw_io("open " + full, err);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FileStoreError(kNotAFile, rel);
  }
  return fd;
}

std::string read_all(int fd, const std::string& full) {
  std::string out;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw_io("read " + full, err);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

void make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_io("mkdir " + dir, errno);
}

}  // namespace

FileStoreError::FileStoreError(const std::string& reason, const std::string& rel_path)
    : std::runtime_error("path \"" + rel_path + "\" " + reason) {}

MemoryFileStore::MemoryFileStore(const std::string& root) {
  char* cwd = ::getcwd(nullptr, 0);
  const std::string base = cwd != nullptr ? cwd : "/";
  std::free(cwd);
  root_ = paths::resolve(base, root);
  struct stat st {};
  if (::lstat(root.c_str(), &st) != 0) {
    if (errno != ENOENT) throw_io("lstat " + root, errno);
    removed_on_dispose_ = true;
  }
}

std::string MemoryFileStore::resolve_under_root(const std::string& rel) const {
  std::string norm = rel;
  std::replace(norm.begin(), norm.end(), '\\', '/');
  const std::size_t first = norm.find_first_not_of('/');
  norm = first == std::string::npos ? "" : norm.substr(first);
  std::string out = root_;
  std::size_t start = 0;
  bool any = false;
  while (start <= norm.size()) {
    std::size_t slash = norm.find('/', start);
    if (slash == std::string::npos) slash = norm.size();
    const std::string part = norm.substr(start, slash - start);
    if (part == "..") throw FileStoreError(kEscapesRoot, rel);
    if (!part.empty() && part != ".") {
      out = paths::join(out, part);
      any = true;
    }
    start = slash + 1;
  }
  return any ? out : root_;
}

void MemoryFileStore::create_root() const {
  std::vector<std::string> missing;
  std::string current = root_;
  for (;;) {
    struct stat st {};
    if (::stat(current.c_str(), &st) == 0) break;
    if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP) throw_io("stat " + current, errno);
    missing.push_back(current);
    const std::string parent = paths::dirname(current);
    if (parent == current) break;
    current = parent;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) make_dir(*it);
}

void MemoryFileStore::put(const std::string& rel, const std::string& data) const {
  std::string tail = rel;
  std::replace(tail.begin(), tail.end(), '\\', '/');
  const auto ends_with = [&tail](const char* suffix) {
    const std::size_t n = std::strlen(suffix);
    return tail.size() >= n && tail.compare(tail.size() - n, n, suffix) == 0;
  };
  if (ends_with("/") || ends_with("/.") || tail.empty() || tail == ".") {
    throw FileStoreError(kNotAFile, rel);
  }
  const std::string dest = resolve_under_root(rel);
  if (!valid_utf8(data)) throw FileStoreError(kNotUtf8, rel);
  // Directories below the root, never the root itself: a vanished store folder stays vanished.
  const std::string dir = paths::dirname(dest);
  if (dir != root_) {
    std::string current = root_;
    const std::string below = dir.substr(root_.size() + (root_ == "/" ? 0 : 1));
    std::size_t start = 0;
    while (start <= below.size()) {
      std::size_t slash = below.find('/', start);
      if (slash == std::string::npos) slash = below.size();
      current = paths::join(current, below.substr(start, slash - start));
      make_dir(current);
      start = slash + 1;
    }
  }
  const std::string tmp = paths::join(dir, ".fs-" + random_hex(8) + ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw_io("open " + tmp, errno);
  std::size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw_io("write " + tmp, err);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), dest.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw_io("rename " + dest, err);
  }
}

std::optional<std::string> MemoryFileStore::get(const std::string& rel) const {
  const std::string dest = resolve_under_root(rel);
  const int fd = open_regular(rel, dest);
  if (fd < 0) return std::nullopt;
  std::string data = read_all(fd, dest);
  if (!valid_utf8(data)) throw FileStoreError(kNotUtf8, rel);
  return data;
}

std::optional<std::string> MemoryFileStore::hash_file(const std::string& rel) const {
  const std::string dest = resolve_under_root(rel);
  struct stat st {};
  if (::lstat(dest.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw_io("lstat " + dest, errno);
  }
  if (S_ISLNK(st.st_mode)) throw FileStoreError(kIsASymlink, rel);
  if (!S_ISREG(st.st_mode)) throw FileStoreError(kNotAFile, rel);
  const int fd = open_regular(rel, dest);
  if (fd < 0) return std::nullopt;
  return pki::sha256_hex(read_all(fd, dest));
}

std::map<std::string, std::string> MemoryFileStore::hashtree() const {
  std::map<std::string, std::string> out;
  struct stat st {};
  if (::lstat(root_.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return out;
    throw_io("lstat " + root_, errno);
  }
  if (!S_ISDIR(st.st_mode)) throw FileStoreError(kNotADirectory, "/");
  std::vector<std::string> stack = {root_};
  while (!stack.empty()) {
    const std::string dir = stack.back();
    stack.pop_back();
    DIR* handle = ::opendir(dir.c_str());
    if (handle == nullptr) {
      if (errno == ENOENT) continue;  // a listing is a snapshot, not a lock
      throw_io("opendir " + dir, errno);
    }
    while (dirent* entry = ::readdir(handle)) {
      const std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      const std::string full = paths::join(dir, name);
      struct stat entry_stat {};
      if (::lstat(full.c_str(), &entry_stat) != 0) continue;
      if (S_ISDIR(entry_stat.st_mode)) {
        stack.push_back(full);
      } else if (S_ISREG(entry_stat.st_mode)) {
        const std::string rel = full.substr(root_.size() + (root_ == "/" ? 0 : 1));
        const int fd = ::open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;  // vanished since the walk, or swapped for a link
        out[rel] = pki::sha256_hex(read_all(fd, full));
      }
    }
    ::closedir(handle);
  }
  return out;
}

void MemoryFileStore::remove(const std::string& rel) const {
  const std::string dest = resolve_under_root(rel);
  if (dest == root_) return;
  struct stat st {};
  if (::lstat(dest.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw_io("lstat " + dest, errno);
  }
  std::error_code error;
  if (S_ISDIR(st.st_mode)) {
    std::filesystem::remove_all(dest, error);
    if (error) throw FileStoreIoError("rm " + dest + ": " + error.message());
  } else if (::unlink(dest.c_str()) != 0 && errno != ENOENT) {
    throw_io("unlink " + dest, errno);
  }
}

void MemoryFileStore::dispose() const {
  if (!removed_on_dispose_) return;
  std::error_code error;
  std::filesystem::remove_all(root_, error);
  if (error) throw FileStoreIoError("rm " + root_ + ": " + error.message());
}

}  // namespace perimeter::runner
