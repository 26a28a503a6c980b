#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "process/process.h"

namespace perimeter::bench {

// A reverse proxy under test, run as a child process from a temporary directory of its own.
class ProxyProcess {
 public:
  virtual ~ProxyProcess() = default;
  virtual unsigned short port() const = 0;
  virtual pid_t pid() const = 0;
  // The exact configuration it runs with, for the report.
  virtual const std::string& config() const = 0;
  // Lines in its per-request log (nginx's access log, the guard's audit), or -1 when it has none
  // in a file: evidence that the logging measured did happen.
  virtual long request_log_lines() const = 0;
};

// Where a proxy's per-request log goes: nowhere (nginx `access_log off`, the guard's audit to
// /dev/null), a file in its directory, or a FIFO this process drains (as a container runtime
// drains a pod's stdout pipe), counting lines.
enum class RequestLog { kNone, kFile, kFifo };

// Debian's nginx as a plain reverse proxy to 127.0.0.1:`upstream_port`: one process
// (`daemon off; master_process off;`), keep-alive upstream connections, `proxy_buffering off`
// for SSE, the access log (unbuffered: one write per request) as `log` says.
std::unique_ptr<ProxyProcess> start_nginx(const std::string& nginx, unsigned short upstream_port,
                                          RequestLog log, int max_streams);

// perimeter-mcp-guard with one route to 127.0.0.1:`upstream_port` whose policy denies one tool
// (`delete_*`), the default audit level, the audit (stdout) as `log` says, `--threads threads`.
std::unique_ptr<ProxyProcess> start_guard(const std::string& guard, unsigned short upstream_port,
                                          RequestLog log, int threads);

// A port on 127.0.0.1 that was free a moment ago.
unsigned short free_port();

// A process's resident set (VmRSS) in KiB, and the CPU time its threads have run, in seconds.
long rss_kib(pid_t pid);
double cpu_seconds(pid_t pid);

}  // namespace perimeter::bench
