#include "tools/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>
#include <system_error>

#include "tools/path_util.h"

namespace perimeter::tools {

std::string errno_name(int err) {
  switch (err) {
    case ENOENT:
      return "ENOENT";
    case EACCES:
      return "EACCES";
    case EPERM:
      return "EPERM";
    case ENOTDIR:
      return "ENOTDIR";
    case EISDIR:
      return "EISDIR";
    case ELOOP:
      return "ELOOP";
    case ENAMETOOLONG:
      return "ENAMETOOLONG";
    case ENOSPC:
      return "ENOSPC";
    case EMFILE:
      return "EMFILE";
    case ENFILE:
      return "ENFILE";
    case EEXIST:
      return "EEXIST";
    case EIO:
      return "EIO";
    case EROFS:
      return "EROFS";
    case EBUSY:
      return "EBUSY";
    case EXDEV:
      return "EXDEV";
    case ENOTEMPTY:
      return "ENOTEMPTY";
    case EINVAL:
      return "EINVAL";
    case EDQUOT:
      return "EDQUOT";
    case EFBIG:
      return "EFBIG";
    case ETXTBSY:
      return "ETXTBSY";
    default:
      return "E" + std::to_string(err);
  }
}

void throw_errno(int err, std::string_view what) {
  throw FsError(errno_name(err), std::string(what) + ": " + std::system_category().message(err));
}

std::string fs_error_message(const std::string& code, std::string_view file) {
  const std::string f(file);
  if (code == "ENOENT") return f + ": no such file or directory";
  if (code == "EACCES" || code == "EPERM") return f + ": permission denied";
  if (code == "ENOTDIR") return f + ": not a directory";
  if (code == "EISDIR") return f + ": is a directory";
  if (code == "ELOOP") return f + ": too many levels of symbolic links";
  if (code == "ENAMETOOLONG") return f + ": file name too long";
  if (code == "ENOSPC") return f + ": no space left on device";
  if (code == "EMFILE" || code == "ENFILE") return f + ": too many open files";
  return f + ": " + (code.empty() ? "i/o error" : "i/o error (" + code + ")");
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open");
  std::string data;
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0 && st.st_size > 0) data.reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read");
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

namespace {

std::string random_hex(std::size_t chars) {
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < chars; ++i) out += kHex[engine() & 0xF];
  return out;
}

void write_all(int fd, std::string_view content) {
  while (!content.empty()) {
    const ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "write");
    }
    content.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

void atomic_write_file(const std::string& path, std::string_view content) {
  const std::string temp = paths::join(paths::dirname(path),
                                       ".tmp-" + std::to_string(::getpid()) + "-" + random_hex(32));
  struct stat existing {};
  const bool exists = ::stat(path.c_str(), &existing) == 0;
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) throw_errno(errno, "open");
  try {
    // An edit must not strip +x or sharing the owner chose: the rename replaces the inode.
    if (exists && ::fchmod(fd.get(), existing.st_mode & 0777) != 0) throw_errno(errno, "fchmod");
    write_all(fd.get(), content);
    if (::fsync(fd.get()) != 0) throw_errno(errno, "fsync");
    fd.reset();
    if (::rename(temp.c_str(), path.c_str()) != 0) throw_errno(errno, "rename");
  } catch (...) {
    fd.reset();
    ::unlink(temp.c_str());
    throw;
  }
}

void make_directories(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return;
    throw_errno(EEXIST, "mkdir");
  }
  const std::string parent = paths::dirname(path);
  if (parent != path) make_directories(parent);
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) throw_errno(errno, "mkdir");
}

std::string real_path(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) throw_errno(errno, "realpath");
  std::string out(resolved);
  std::free(resolved);
  return out;
}

}  // namespace perimeter::tools
