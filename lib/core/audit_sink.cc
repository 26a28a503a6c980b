#include "core/audit_sink.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace perimeter {

void StdoutAuditSink::write_line(std::string_view line) {
  // The line and its newline as two pieces of one writev: no copy of the line to append it.
  char newline = '\n';
  iovec pieces[2] = {{const_cast<char*>(line.data()), line.size()}, {&newline, 1}};
  iovec* next = pieces;
  int left = 2;
  std::lock_guard lock(mutex_);
  while (left > 0) {
    const ssize_t n = ::writev(STDOUT_FILENO, next, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Nowhere left to say it: stdout is gone (the container runtime's pipe closed).
      return;
    }
    // A short write (a pipe nearly full, a signal): on from the first byte not written.
    auto written = static_cast<std::size_t>(n);
    while (left > 0 && written >= next->iov_len) {
      written -= next->iov_len;
      ++next;
      --left;
    }
    if (left > 0) {
      next->iov_base = static_cast<char*>(next->iov_base) + written;
      next->iov_len -= written;
    }
  }
}

}  // namespace perimeter
