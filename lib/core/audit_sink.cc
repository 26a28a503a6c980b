#include "core/audit_sink.h"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace perimeter {

void StdoutAuditSink::write_line(std::string_view line) {
  std::string whole;
  whole.reserve(line.size() + 1);
  whole.append(line);
  whole += '\n';
  std::lock_guard lock(mutex_);
  std::size_t done = 0;
  while (done < whole.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, whole.data() + done, whole.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Nowhere left to say it: stdout is gone (the container runtime's pipe closed).
      return;
    }
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace perimeter
