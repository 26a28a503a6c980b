#include "agentapi/request_executor.h"

#include <cstdlib>

namespace perimeter::agentapi {
namespace {

constexpr std::size_t kBodyExcerpt = 200;

double seconds_since(std::chrono::steady_clock::time_point started) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace

std::optional<std::chrono::milliseconds> server_retry_delay(const HttpResponse& response) {
  if (const std::string* ms = response.header("retry-after-ms")) {
    char* end = nullptr;
    const double value = std::strtod(ms->c_str(), &end);
    if (end != ms->c_str() && value >= 0 && value < 60000) {
      return std::chrono::milliseconds(static_cast<long long>(value));
    }
  }
  if (const std::string* seconds = response.header("retry-after")) {
    char* end = nullptr;
    const double value = std::strtod(seconds->c_str(), &end);
    if (end != seconds->c_str() && *end == '\0' && value >= 0 && value < 60) {
      return std::chrono::milliseconds(static_cast<long long>(value * 1000));
    }
  }
  return std::nullopt;
}

std::string url_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

RequestExecutor::RequestExecutor(HttpTransport& transport, BackoffPolicy backoff,
                                 RandomSource& random, Sleeper& sleeper, ApiMetrics* metrics,
                                 Logger logger)
    : transport_(transport),
      backoff_(backoff),
      random_(random),
      sleeper_(sleeper),
      metrics_(metrics),
      logger_(std::move(logger)) {}

HttpResponse RequestExecutor::send(std::string_view operation, const HttpRequest& request,
                                   const CallPolicy& policy) {
  Backoff backoff(backoff_, random_);
  for (int attempt = 0;; ++attempt) {
    const auto started = std::chrono::steady_clock::now();
    HttpResponse response;
    try {
      response = transport_.send(request);
    } catch (const TransportError& e) {
      if (metrics_) metrics_->on_response(operation, 0, seconds_since(started));
      // Without an answer the request may have been carried out: only a repeatable call retries.
      if (policy.mode != RetryMode::kIdempotent || attempt >= policy.max_retries) throw;
      const auto delay = backoff.next();
      if (metrics_) metrics_->on_retry(operation, 0, delay);
      logger_.warn("request failed, retrying",
                   {{"operation", operation}, {"error", e.what()}, {"delay_ms", delay.count()}});
      sleeper_.sleep_for(delay);
      continue;
    }
    if (metrics_) metrics_->on_response(operation, response.status, seconds_since(started));
    if (response.status >= 200 && response.status < 300) return response;
    const std::string* should_retry = response.header("x-should-retry");
    bool retryable = false;
    if (response.status != policy.answer_status) {
      if (policy.mode == RetryMode::kIdempotent) {
        retryable = should_retry ? *should_retry == "true" : is_retryable_status(response.status);
      } else {
        retryable = response.status == 429 && !(should_retry && *should_retry == "false");
      }
    }
    if (!retryable || attempt >= policy.max_retries) {
      const std::string* request_id = response.header("request-id");
      throw ApiError(std::string(operation), response.status, response.body,
                     request_id ? *request_id : "");
    }
    const auto delay = server_retry_delay(response).value_or(backoff.next());
    if (metrics_) metrics_->on_retry(operation, response.status, delay);
    logger_.warn(
        "request answered with a retryable status, retrying",
        {{"operation", operation}, {"status", response.status}, {"delay_ms", delay.count()}});
    sleeper_.sleep_for(delay);
  }
}

nlohmann::json RequestExecutor::parse_json(std::string_view operation, const HttpResponse& response,
                                           BodyDisclosure disclosure) {
  nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
  if (body.is_discarded()) protocol_error(operation, "the body is not JSON", response, disclosure);
  return body;
}

void RequestExecutor::protocol_error(std::string_view operation, std::string_view problem,
                                     const HttpResponse& response, BodyDisclosure disclosure) {
  std::string excerpt;
  if (disclosure == BodyDisclosure::kWithheld) {
    excerpt =
        "<withheld: it may carry a credential; " + std::to_string(response.body.size()) + " bytes>";
  } else {
    excerpt = response.body.substr(0, kBodyExcerpt);
    if (response.body.size() > kBodyExcerpt) {
      excerpt += "... (" + std::to_string(response.body.size()) + " bytes)";
    }
  }
  if (metrics_) metrics_->on_protocol_error(operation);
  ProtocolError error(std::string(operation), std::string(problem), response.status,
                      std::move(excerpt));
  logger_.warn("answer does not match the API",
               {{"operation", operation}, {"error", error.what()}});
  throw error;
}

}  // namespace perimeter::agentapi
