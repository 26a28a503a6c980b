#pragma once

#include <deque>
#include <mutex>

#include "core/random.h"

namespace perimeter::testing {

// Returns queued values in order, then `fallback` forever.
class FakeRandom final : public RandomSource {
 public:
  explicit FakeRandom(double fallback = 0.5) : fallback_(fallback) {}
  void push(double value) {
    std::lock_guard lock(mutex_);
    values_.push_back(value);
  }
  double uniform01() override {
    std::lock_guard lock(mutex_);
    if (values_.empty()) return fallback_;
    const double v = values_.front();
    values_.pop_front();
    return v;
  }

 private:
  std::mutex mutex_;
  std::deque<double> values_;
  double fallback_;
};

}  // namespace perimeter::testing
