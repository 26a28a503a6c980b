#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "sim/api_reply.h"
#include "sim/faults.h"
#include "sim/metrics.h"
#include "sim/simulator.h"
#include "sim/tunnels.h"

namespace perimeter::sim {

// What the transport should do with one request. Most requests get a reply at once; a blocking
// poll waits for work, an event stream stays open, and a fault may cut the connection.
struct RouteDecision {
  enum class Kind { kReply, kLongPoll, kStream, kReset };
  Kind kind = Kind::kReply;
  std::string route;  // metric label, e.g. "work.poll"
  ApiReply reply;
  std::chrono::milliseconds latency{0};
  // kLongPoll: called until it yields a reply or `block` runs out (then JSON null).
  std::function<std::optional<ApiReply>()> retry;
  std::chrono::milliseconds block{0};
  // kStream.
  std::string session_id;
  std::string last_event_id;
  int drop_after_events = -1;  // cut the stream after this many frames (fault), -1 never
  // Who to wake after replying: a long-poll of this environment (work was enqueued), the
  // streams of this session (events were appended). Targeted, so a thousand idle waiters are not
  // all sent back to the state on every change.
  std::string wake_environment;
  std::string wake_session;
  // kLongPoll / kStream: what this request waits on, for targeted wakes.
  std::string environment_id;
};

// Maps HTTP requests to the Simulator: the public API (header and credential rules, input
// validation, faults), the admin API, /metrics and /healthz. No sockets here.
class ApiRouter {
 public:
  // `tunnels` serves /v1/oauth/token, /v1/tunnels... and their admin calls; without it those
  // paths are 404 like any unknown one.
  ApiRouter(Simulator& simulator, Faults& faults, SimMetrics& metrics,
            TunnelService* tunnels = nullptr)
      : simulator_(simulator), faults_(faults), metrics_(metrics), tunnels_(tunnels) {}

  RouteDecision route(const ApiRequest& request);

 private:
  RouteDecision route_api(const ApiRequest& request, const std::vector<std::string>& parts);
  RouteDecision route_admin(const ApiRequest& request, const std::vector<std::string>& parts);
  // /v1/memory_stores/{store}/memories[/{memory}], after the headers and the bearer token.
  ApiReply route_memories(const ApiRequest& request, const std::vector<std::string>& parts,
                          const std::string& route, const std::string& token);

  Simulator& simulator_;
  Faults& faults_;
  SimMetrics& metrics_;
  TunnelService* tunnels_;
};

// Splits "/a/b/c" into {"a","b","c"}; empty segments are kept so "//" does not match a route.
std::vector<std::string> split_path(const std::string& path);
// Parses a whole decimal integer; false for anything else (signs allowed, no spaces).
bool parse_int(const std::string& text, std::int64_t* out);

}  // namespace perimeter::sim
