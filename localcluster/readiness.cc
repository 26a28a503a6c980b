#include "localcluster/readiness.h"

#include <thread>

#include "core/backoff.h"

namespace perimeter::localcluster {
namespace {

[[noreturn]] void fail(const ReadinessCheck& check, const std::string& problem) {
  std::string tail = check.log_tail ? check.log_tail() : "";
  bool port_in_use = tail.find("address already in use") != std::string::npos;
  throw StartFailure(check.component + " " + problem + "\n--- last lines of " + check.log_path +
                         " ---\n" + (tail.empty() ? "(empty)\n" : tail),
                     port_in_use);
}

}  // namespace

void ThreadSleeper::sleep_for(std::chrono::milliseconds duration) {
  std::this_thread::sleep_for(duration);
}

ThreadSleeper& ThreadSleeper::instance() {
  static ThreadSleeper sleeper;
  return sleeper;
}

ReadinessResult wait_until_ready(const ReadinessCheck& check, const Clock& clock, Sleeper& sleeper,
                                 RandomSource& random) {
  const auto deadline = clock.now() + check.timeout;
  Backoff backoff({std::chrono::milliseconds(20), std::chrono::milliseconds(500), 1.5, 0.2},
                  random);
  ReadinessResult result;
  std::string complaint = "no answer yet";
  while (true) {
    if (auto exited = check.exit_description ? check.exit_description() : std::nullopt) {
      fail(check, "exited before it was ready (" + *exited + ")");
    }
    ++result.probes;
    try {
      if (check.probe(&complaint)) return result;
    } catch (const std::exception& e) {
      complaint = e.what();  // not listening yet, most likely
    }
    if (check.abort_requested && check.abort_requested()) {
      throw StartFailure("start of " + check.component + " abandoned: shutdown requested while " +
                             "waiting for " + check.what + " (last: " + complaint + ")",
                         false);
    }
    if (clock.now() >= deadline) {
      fail(check, "not ready (" + check.what + ") after " +
                      std::to_string(
                          std::chrono::duration_cast<std::chrono::seconds>(check.timeout).count()) +
                      "s: " + complaint);
    }
    sleeper.sleep_for(backoff.next());
  }
}

}  // namespace perimeter::localcluster
