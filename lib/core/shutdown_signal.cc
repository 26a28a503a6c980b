#include "core/shutdown_signal.h"

#include <pthread.h>

#include <cerrno>
#include <ctime>

namespace perimeter {

ShutdownSignal::ShutdownSignal(Reload reload) {
  sigemptyset(&signals_);
  sigaddset(&signals_, SIGINT);
  sigaddset(&signals_, SIGTERM);
  if (reload == Reload::kOnSighup) sigaddset(&signals_, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
}

ShutdownSignal::~ShutdownSignal() {
  // A stop requested again while we were stopping is being honoured already: consume it rather
  // than let it kill the process once the mask is restored (a supervisor may signal the group and
  // the child, and a busy machine delivers the two apart).
  timespec none{0, 0};
  while (sigtimedwait(&signals_, nullptr, &none) > 0) {
  }
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
