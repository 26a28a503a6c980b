#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "core/random.h"

namespace perimeter::sim {

// Fault knobs, each a probability per request (or per stream) unless named otherwise. They apply
// to the public API only, never to /admin or /metrics, so a test can always read back results.
struct FaultConfig {
  double error_5xx_rate = 0;           // answer 503 overloaded... before touching any state
  double error_429_rate = 0;           // answer 429 with retry-after-ms
  double reset_rate = 0;               // close the connection without a reply
  double non_json_rate = 0;            // answer 200 with a body that is not JSON
  double heartbeat_412_rate = 0;       // a heartbeat finds its lease taken by another worker
  double undecodable_secret_rate = 0;  // a polled item carries a secret that does not decode
  double sse_drop_rate = 0;            // an event stream is cut after `sse_drop_after_events`
  int sse_drop_after_events = 2;
  int sse_drop_first_streams = 0;  // cut the first N streams of every session (deterministic)
  int latency_ms = 0;              // added to every API reply
  // A reclaimed item goes out with a new sessions token (so a new secret); the old one stops
  // working at once, as when the hosted queue re-issues a secret on reclaim.
  bool reissue_secret_on_reclaim = false;

  nlohmann::json to_json() const;
  // Applies the fields present in `patch`; on a bad field returns false and says why.
  bool merge(const nlohmann::json& patch, std::string* error);
};

// The live configuration plus the dice, shared by the request handlers.
class Faults {
 public:
  explicit Faults(RandomSource& random) : random_(random) {}
  FaultConfig config() const;
  bool update(const nlohmann::json& patch, std::string* error);
  void set(const FaultConfig& config);
  // True with the given probability.
  bool roll(double probability);

 private:
  mutable std::mutex mutex_;
  FaultConfig config_;
  RandomSource& random_;
};

}  // namespace perimeter::sim
