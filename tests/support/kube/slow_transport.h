#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "kube/api_error.h"
#include "kube/transport.h"

namespace perimeter::testing {

// Latency injection in front of another Transport (usually a FakeApiServer), on the test's clock:
// an apiserver, or the path to it, made slow. While a latency is set, each request waits until the
// clock has moved that far past its arrival and is then served. A request whose timeout (or, when
// it carries none, the client's default, kube::Config's 30 s) runs out first fails with a
// TransportError at that moment, unserved, as the real client's timeout would end it.
//
// Time moves only when the test moves the clock; call clock_moved() after each move so held
// requests look at it again. Watches pass through without delay. Destroying it (or release_all())
// fails whatever is still held, so no test thread stays blocked.
class SlowTransport final : public kube::Transport {
 public:
  SlowTransport(kube::Transport& inner, const Clock& clock) : inner_(inner), clock_(clock) {}
  ~SlowTransport() override { release_all(); }

  void set_latency(std::chrono::milliseconds latency) {
    std::lock_guard lock(mutex_);
    latency_ = latency;
  }
  void clock_moved() {
    { std::lock_guard lock(mutex_); }
    changed_.notify_all();
  }
  void release_all() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    changed_.notify_all();
  }
  // Requests waiting right now.
  int held() const {
    std::lock_guard lock(mutex_);
    return held_;
  }

  kube::HttpResponse send(const kube::HttpRequest& request) override {
    {
      std::unique_lock lock(mutex_);
      if (latency_.count() > 0) {
        const auto arrived = clock_.now();
        const auto timeout = request.timeout.count() > 0 ? request.timeout : kDefaultTimeout;
        const bool times_out = timeout < latency_;
        const auto until = arrived + (times_out ? timeout : latency_);
        ++held_;
        changed_.notify_all();
        changed_.wait(lock, [&] { return released_ || clock_.now() >= until; });
        --held_;
        if (released_ || times_out)
          throw kube::TransportError(request.method + " " + request.path_and_query +
                                     ": no answer within " + std::to_string(timeout.count()) +
                                     " ms (injected latency)");
      }
    }
    return inner_.send(request);
  }

  std::unique_ptr<kube::ResponseStream> open_stream(const kube::HttpRequest& request) override {
    return inner_.open_stream(request);
  }

  static constexpr std::chrono::milliseconds kDefaultTimeout{30000};

 private:
  kube::Transport& inner_;
  const Clock& clock_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::chrono::milliseconds latency_{0};
  int held_ = 0;
  bool released_ = false;
};

}  // namespace perimeter::testing
