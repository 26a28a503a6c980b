#pragma once

#include <mutex>
#include <string_view>

namespace perimeter {

// Where audit lines go (the runner's per tool call, the MCP guard's per JSON-RPC request).
// write_line must have handed the whole line to the kernel when it returns, so a crash right
// after loses nothing.
class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual void write_line(std::string_view line) = 0;
};

// stdout, unbuffered: writev(2) of the line and its newline in one call, retried until whole, under
// a lock so lines from different threads never interleave. The operational log stays on stderr.
class StdoutAuditSink final : public AuditSink {
 public:
  void write_line(std::string_view line) override;

 private:
  std::mutex mutex_;
};

}  // namespace perimeter
