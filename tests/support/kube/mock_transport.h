#pragma once

#include <gmock/gmock.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kube/api_error.h"
#include "kube/transport.h"

namespace perimeter::testing {

class MockTransport : public kube::Transport {
 public:
  MOCK_METHOD(kube::HttpResponse, send, (const kube::HttpRequest& request), (override));
  MOCK_METHOD(std::unique_ptr<kube::ResponseStream>, open_stream,
              (const kube::HttpRequest& request), (override));
};

// A response stream fed by the test: lines pushed now or later, then an end (a clean close) or a
// failure (a broken connection). read_line() blocks until one of those arrives, like a socket.
class FakeResponseStream final : public kube::ResponseStream {
 public:
  struct Script {
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<std::string> lines;
    bool ended = false;
    std::optional<std::string> failure;
    bool canceled = false;
  };

  explicit FakeResponseStream(std::shared_ptr<Script> script) : script_(std::move(script)) {}

  std::optional<std::string> read_line() override {
    std::unique_lock lock(script_->mutex);
    script_->changed.wait(lock, [&] {
      return !script_->lines.empty() || script_->ended || script_->failure || script_->canceled;
    });
    if (!script_->lines.empty()) {
      std::string line = std::move(script_->lines.front());
      script_->lines.pop_front();
      return line;
    }
    if (script_->failure) throw kube::TransportError(*script_->failure);
    return std::nullopt;
  }

  void cancel() override {
    std::lock_guard lock(script_->mutex);
    script_->canceled = true;
    script_->changed.notify_all();
  }

 private:
  std::shared_ptr<Script> script_;
};

// Helpers that write a script in one line.
inline std::shared_ptr<FakeResponseStream::Script> stream_script(std::vector<std::string> lines,
                                                                 bool ended = true) {
  auto script = std::make_shared<FakeResponseStream::Script>();
  for (auto& line : lines) script->lines.push_back(std::move(line));
  script->ended = ended;
  return script;
}

inline void push_line(FakeResponseStream::Script& script, std::string line) {
  std::lock_guard lock(script.mutex);
  script.lines.push_back(std::move(line));
  script.changed.notify_all();
}

inline void end_stream(FakeResponseStream::Script& script) {
  std::lock_guard lock(script.mutex);
  script.ended = true;
  script.changed.notify_all();
}

inline kube::HttpResponse json_response(int status, const std::string& body) {
  return kube::HttpResponse{status, body, "application/json"};
}

}  // namespace perimeter::testing
