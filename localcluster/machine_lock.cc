#include "localcluster/machine_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

namespace perimeter::localcluster {

namespace {

std::string read_holder(int fd) {
  char buffer[32] = {};
  const ssize_t got = ::pread(fd, buffer, sizeof(buffer) - 1, 0);
  std::string pid = got > 0 ? std::string(buffer, static_cast<size_t>(got)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return pid.empty() ? "unknown" : pid;
}

}  // namespace

MachineLock MachineLock::acquire(const std::string& path, std::chrono::milliseconds wait_limit,
                                 const Logger& logger) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw std::runtime_error("cannot open the lock file " + path + ": " + std::strerror(errno));
  }
  MachineLock lock(fd);  // closes it on every way out below
  const auto deadline = std::chrono::steady_clock::now() + wait_limit;
  bool said_waiting = false;
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      throw std::runtime_error("cannot lock " + path + ": " + std::strerror(errno));
    }
    const std::string holder = read_holder(fd);
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("another real node holds " + path + " (pid " + holder +
                               "): only one may run on a machine at a time");
    }
    if (!said_waiting) {
      logger.info("waiting for another real node on this machine to stop",
                  {{"lock", path}, {"holder_pid", holder}});
      said_waiting = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    logger.warn("cannot write this process's pid into the lock file", {{"lock", path}});
  }
  return lock;
}

MachineLock::MachineLock(MachineLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

MachineLock& MachineLock::operator=(MachineLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

MachineLock::~MachineLock() {
  // Closing the only descriptor of the open file releases the flock.
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace perimeter::localcluster
