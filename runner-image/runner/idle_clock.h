#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "core/clock.h"

namespace perimeter::runner {

// The max-idle stop countdown of the official SessionToolRunner, as a deadline on an injected
// clock rather than a timer: arms on a session.status_idle that ends the turn, disarms on any
// other event but a tool confirmation or a thread's termination, and is held pending while a
// confirmation-gated call is outstanding. Thread-safe: the watchdog reads it.
class IdleClock {
 public:
  IdleClock(const Clock& clock, std::chrono::milliseconds max_idle)
      : clock_(clock), max_idle_(max_idle) {}

  void note_event(const std::string& type, const std::string& stop_reason_type);
  void note_history_read(bool succeeded);
  void block(const std::string& tool_use_id);
  void unblock(const std::string& tool_use_id);
  void abandon(const std::string& tool_use_id);
  void arm();
  void disarm();
  // True once an armed countdown has run out.
  bool expired() const;
  bool armed() const;

 private:
  void arm_locked();
  void disarm_locked();

  const Clock& clock_;
  const std::chrono::milliseconds max_idle_;
  mutable std::mutex mutex_;
  std::set<std::string> blockers_;
  bool arm_pending_ = false;
  bool idle_may_be_stale_ = false;
  std::optional<Clock::TimePoint> deadline_;
};

// Whether a session.status_idle ends the turn: every stop reason but requires_action does.
bool ends_turn(const std::string& type, const std::string& stop_reason_type);
bool is_idle_neutral(const std::string& type);

}  // namespace perimeter::runner
