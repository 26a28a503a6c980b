#pragma once

#include <mutex>

namespace perimeter::agentenvironment {

// How many extra poll threads every environment of the operator may run together. Each poller
// always has its first thread; the others join in while its queue has work (SessionPoller), and
// each of them holds a place of this budget for as long as it runs. A burst over hundreds of
// environments therefore runs at most this many extra threads, not three per environment.
class PollThreadBudget {
 public:
  explicit PollThreadBudget(int places) : available_(places) {}
  PollThreadBudget(const PollThreadBudget&) = delete;
  PollThreadBudget& operator=(const PollThreadBudget&) = delete;

  // A place of the budget, given back when destroyed; empty when none was left.
  class Place {
   public:
    Place() = default;
    explicit Place(PollThreadBudget* budget) : budget_(budget) {}
    Place(Place&& other) noexcept : budget_(other.budget_) { other.budget_ = nullptr; }
    Place& operator=(Place&&) = delete;
    Place(const Place&) = delete;
    Place& operator=(const Place&) = delete;
    ~Place() {
      if (budget_ != nullptr) budget_->give_back();
    }
    explicit operator bool() const { return budget_ != nullptr; }

   private:
    PollThreadBudget* budget_ = nullptr;
  };

  Place try_take() {
    std::lock_guard lock(mutex_);
    if (available_ == 0) return Place();
    --available_;
    return Place(this);
  }
  int available() const {
    std::lock_guard lock(mutex_);
    return available_;
  }

 private:
  void give_back() {
    std::lock_guard lock(mutex_);
    ++available_;
  }

  mutable std::mutex mutex_;
  int available_;
};

}  // namespace perimeter::agentenvironment
