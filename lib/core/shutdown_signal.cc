#include "core/shutdown_signal.h"

#include <pthread.h>

#include <cerrno>
#include <ctime>

namespace perimeter {

ShutdownSignal::ShutdownSignal() {
  sigemptyset(&signals_);
  sigaddset(&signals_, SIGINT);
  sigaddset(&signals_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
}

ShutdownSignal::~ShutdownSignal() {
  pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

int ShutdownSignal::wait() {
  int signal = 0;
  while (sigwait(&signals_, &signal) != 0) {
  }
  return signal;
}

int ShutdownSignal::wait_for(int timeout_ms) {
  timespec timeout{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1000000L};
  for (;;) {
    const int signal = sigtimedwait(&signals_, nullptr, &timeout);
    if (signal > 0) return signal;
    if (errno == EAGAIN) return 0;
    // EINTR: another signal interrupted the wait; waiting again is correct for a shutdown wait.
  }
}

}  // namespace perimeter
