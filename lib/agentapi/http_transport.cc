// What every HttpTransport shares, kept apart from the cpprestsdk transport so a binary with a
// transport of its own (perimeter-runner) does not link, and load, cpprestsdk.
#include "agentapi/http_transport.h"

#include <thread>

namespace perimeter::agentapi {

void RealSleeper::sleep_for(std::chrono::milliseconds delay) {
  std::this_thread::sleep_for(delay);
}

const std::string* HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return &value;
  }
  return nullptr;
}

}  // namespace perimeter::agentapi
