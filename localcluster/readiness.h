#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/clock.h"
#include "core/random.h"

namespace perimeter::localcluster {

// Why a component did not come up. `port_in_use` says another process took a port we picked
// between our probe and its bind: worth a retry with new ports.
class StartFailure : public std::runtime_error {
 public:
  StartFailure(const std::string& message, bool port_in_use)
      : std::runtime_error(message), port_in_use_(port_in_use) {}
  bool port_in_use() const { return port_in_use_; }

 private:
  bool port_in_use_;
};

// Sleeping as an I/O boundary, so waits can be tested on a fake clock.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  virtual void sleep_for(std::chrono::milliseconds duration) = 0;
};

class ThreadSleeper final : public Sleeper {
 public:
  void sleep_for(std::chrono::milliseconds duration) override;
  static ThreadSleeper& instance();
};

// One component's wait for readiness.
struct ReadinessCheck {
  std::string component;  // "kube-apiserver"
  std::string what;       // what readiness means here: "/readyz"
  std::chrono::milliseconds timeout{120000};
  // Returns true when ready; otherwise says why not in *complaint. May throw (not listening).
  std::function<bool(std::string* complaint)> probe;
  // How the component exited, once it has; nullopt while it runs.
  std::function<std::optional<std::string>()> exit_description;
  // The last lines of the component's log, for the error message.
  std::function<std::string()> log_tail;
  std::string log_path;
  // Returning true abandons the wait (a shutdown was requested); may be empty.
  std::function<bool()> abort_requested;
};

struct ReadinessResult {
  int probes = 0;
};

// Probes until ready, with exponential backoff and jitter between probes (20 ms growing by 1.5
// to 500 ms). Throws StartFailure: at once when the component exits (with how it exited and its
// log tail), when abort_requested() says so, or at the timeout with the probe's last complaint.
ReadinessResult wait_until_ready(const ReadinessCheck& check, const Clock& clock, Sleeper& sleeper,
                                 RandomSource& random);

}  // namespace perimeter::localcluster
