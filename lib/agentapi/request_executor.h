#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "agentapi/api_error.h"
#include "agentapi/http_transport.h"
#include "core/backoff.h"
#include "core/log.h"
#include "core/random.h"

namespace perimeter::agentapi {

// Observes every call, for Prometheus counters owned by the binary that uses the client.
class ApiMetrics {
 public:
  virtual ~ApiMetrics() = default;
  // status 0: no HTTP answer (transport error).
  virtual void on_response(std::string_view operation, int status, double seconds) = 0;
  virtual void on_retry(std::string_view operation, int status,
                        std::chrono::milliseconds delay) = 0;
  // A 2xx answer whose body was not what the API documents (a ProtocolError was thrown).
  virtual void on_protocol_error(std::string_view /*operation*/) {}
};

// The official SDK's retry waits: 0.5 s doubling to 8 s, jittered by a quarter.
inline constexpr BackoffPolicy kSdkRetryBackoff{std::chrono::milliseconds(500),
                                                std::chrono::milliseconds(8000), 2.0, 0.25};

// Which failures a call may be sent again after.
enum class RetryMode {
  // The call can be repeated without changing the outcome (reads, and writes whose repeat
  // converges): retried on 408, 409, 429, every 5xx (or what `x-should-retry` says) and on
  // transport errors, as the official SDK retries every call.
  kIdempotent,
  // A repeat would do the work twice (create a second object, rotate twice). Retried only on a
  // 429, the one answer that says the request was refused before anything happened; never on a
  // timeout, a reset or a 5xx, after which the request may have been carried out.
  kOnlyIfRefused,
};

struct CallPolicy {
  RetryMode mode = RetryMode::kIdempotent;
  int max_retries = 2;
  // When not 0, a status that is this operation's answer rather than a transient failure (409 on
  // work.stop: already stopped): thrown, never retried.
  int answer_status = 0;
};

// Whether a 2xx body may be quoted in a ProtocolError (and so reach logs and status).
enum class BodyDisclosure {
  kQuotable,
  // The body carries a credential (a tunnel token, an access token): a parse failure names the
  // problem and the body's size only.
  kWithheld,
};

// The retry loop, backoff, error typing and metrics every Anthropic API client here shares (the
// Managed Agents client, the Tunnels client, the token exchange): one request sent until it
// succeeds or the call's CallPolicy says stop. Delays are the policy's jittered exponential
// backoff, or the server's retry-after-ms / retry-after when it asks for under a minute.
class RequestExecutor {
 public:
  RequestExecutor(HttpTransport& transport, BackoffPolicy backoff, RandomSource& random,
                  Sleeper& sleeper, ApiMetrics* metrics, Logger logger);

  // The 2xx response; throws ApiError (non-2xx after retries, the server's body kept),
  // TransportError (no answer after retries).
  HttpResponse send(std::string_view operation, const HttpRequest& request,
                    const CallPolicy& policy);

  // The 2xx body as JSON; a body that is not JSON is a ProtocolError with context.
  nlohmann::json parse_json(std::string_view operation, const HttpResponse& response,
                            BodyDisclosure disclosure = BodyDisclosure::kQuotable);

  // parse_json, then `parse` over it; a ProtocolError (or JSON type error) from `parse` is
  // rethrown with the operation, status and body excerpt, and counted.
  template <typename Parse>
  auto decode(std::string_view operation, const HttpResponse& response, Parse&& parse,
              BodyDisclosure disclosure = BodyDisclosure::kQuotable)
      -> decltype(parse(std::declval<const nlohmann::json&>())) {
    const nlohmann::json body = parse_json(operation, response, disclosure);
    try {
      return parse(body);
    } catch (const ProtocolError& e) {
      protocol_error(operation, e.what(), response, disclosure);
    } catch (const nlohmann::json::exception& e) {
      protocol_error(operation, e.what(), response, disclosure);
    }
  }

  // Counts, logs and throws a ProtocolError for `response`.
  [[noreturn]] void protocol_error(std::string_view operation, std::string_view problem,
                                   const HttpResponse& response, BodyDisclosure disclosure);

  ApiMetrics* metrics() const { return metrics_; }

 private:
  HttpTransport& transport_;
  BackoffPolicy backoff_;
  RandomSource& random_;
  Sleeper& sleeper_;
  ApiMetrics* metrics_;
  Logger logger_;
};

// The server's retry-after-ms / retry-after when it asks for a wait under a minute (as the
// official Python SDK bounds it); nullopt otherwise.
std::optional<std::chrono::milliseconds> server_retry_delay(const HttpResponse& response);

// Percent-encodes a path segment or query value (RFC 3986 unreserved characters pass through).
std::string url_encode(std::string_view text);

}  // namespace perimeter::agentapi
