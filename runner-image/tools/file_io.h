#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace perimeter::tools {

// A failed system call, carrying the errno name ("ENOENT") the SDK's messages are keyed on.
class FsError : public std::runtime_error {
 public:
  FsError(std::string code, const std::string& what)
      : std::runtime_error(what), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// "ENOENT" for ENOENT, etc.; "E<number>" for one without a name.
std::string errno_name(int err);
[[noreturn]] void throw_errno(int err, std::string_view what);

// The SDK's fsErrorMessage: "<file>: no such file or directory", never the host's own text.
std::string fs_error_message(const std::string& code, std::string_view file);

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Whole-file read; throws FsError.
std::string read_file(const std::string& path);
// The SDK's atomicWriteFile: sibling temp file (0600, or the old file's mode), fsync, rename.
void atomic_write_file(const std::string& path, std::string_view content);
// mkdir -p with mode 0700 for what it creates (fs.mkdir recursive); throws FsError.
void make_directories(const std::string& path);
// realpath(3); throws FsError.
std::string real_path(const std::string& path);

}  // namespace perimeter::tools
