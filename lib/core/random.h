#pragma once

#include <mutex>
#include <random>

namespace perimeter {

// Randomness as an I/O boundary: jitter is injected so tests can assert exact delays.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // A uniformly distributed value in [0, 1).
  virtual double uniform01() = 0;
};

class SystemRandom final : public RandomSource {
 public:
  SystemRandom() : engine_(std::random_device{}()) {}
  double uniform01() override {
    std::lock_guard lock(mutex_);
    return std::uniform_real_distribution<double>(0.0, 1.0)(engine_);
  }
  static SystemRandom& instance() {
    static SystemRandom random;
    return random;
  }

 private:
  std::mutex mutex_;
  std::mt19937_64 engine_;
};

}  // namespace perimeter
