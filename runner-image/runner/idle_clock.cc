#include "runner/idle_clock.h"

namespace perimeter::runner {

bool ends_turn(const std::string& type, const std::string& stop_reason_type) {
  return type == "session.status_idle" && stop_reason_type != "requires_action";
}

bool is_idle_neutral(const std::string& type) {
  return type == "user.tool_confirmation" || type == "session.thread_status_terminated";
}

void IdleClock::note_event(const std::string& type, const std::string& stop_reason_type) {
  std::lock_guard lock(mutex_);
  if (idle_may_be_stale_ && type == "session.thread_status_terminated") disarm_locked();
  if (is_idle_neutral(type)) return;
  idle_may_be_stale_ = false;
  if (ends_turn(type, stop_reason_type)) {
    arm_locked();
  } else {
    disarm_locked();
  }
}

void IdleClock::note_history_read(bool succeeded) {
  std::lock_guard lock(mutex_);
  idle_may_be_stale_ = !succeeded;
}

void IdleClock::block(const std::string& tool_use_id) {
  std::lock_guard lock(mutex_);
  blockers_.insert(tool_use_id);
  // A countdown running when gated work appears is stale: hold it pending instead.
  if (deadline_) {
    arm_pending_ = true;
    deadline_.reset();
  }
}

void IdleClock::unblock(const std::string& tool_use_id) {
  std::lock_guard lock(mutex_);
  blockers_.erase(tool_use_id);
  if (blockers_.empty() && arm_pending_) arm_locked();
}

void IdleClock::abandon(const std::string& tool_use_id) {
  std::lock_guard lock(mutex_);
  if (idle_may_be_stale_) disarm_locked();
  blockers_.erase(tool_use_id);
  if (blockers_.empty() && arm_pending_) arm_locked();
}

void IdleClock::arm() {
  std::lock_guard lock(mutex_);
  arm_locked();
}

void IdleClock::disarm() {
  std::lock_guard lock(mutex_);
  disarm_locked();
}

bool IdleClock::expired() const {
  std::lock_guard lock(mutex_);
  return deadline_.has_value() && clock_.now() >= *deadline_;
}

bool IdleClock::armed() const {
  std::lock_guard lock(mutex_);
  return deadline_.has_value();
}

void IdleClock::arm_locked() {
  if (max_idle_.count() <= 0) return;
  if (!blockers_.empty()) {
    arm_pending_ = true;
    return;
  }
  arm_pending_ = false;
  deadline_ = clock_.now() + max_idle_;
}

void IdleClock::disarm_locked() {
  arm_pending_ = false;
  deadline_.reset();
}

}  // namespace perimeter::runner
