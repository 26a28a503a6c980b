#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace perimeter::agentapi {

// A non-2xx answer from the API. Keeps the status and the API's error JSON
// ({"type":"error","error":{"type","message",details?}}) exactly as received.
class ApiError : public std::runtime_error {
 public:
  ApiError(std::string operation, int status, std::string body, std::string request_id);

  int status() const { return status_; }
  const std::string& operation() const { return operation_; }
  // error.type, e.g. "not_found_error"; empty when the body was not the API's shape.
  const std::string& error_type() const { return error_type_; }
  const std::string& api_message() const { return api_message_; }
  // The parsed body (null when it was not JSON) and the raw text.
  const nlohmann::json& body() const { return body_; }
  const std::string& raw_body() const { return raw_body_; }
  const std::string& request_id() const { return request_id_; }

  // A 4xx that retrying cannot fix (bad key, unknown environment): everything in 400..499 except
  // 408, 409 and 429, as the official SDK's isFatal4xx decides.
  bool fatal() const;
  // For a 412 heartbeat: error.details.current_state, or null.
  nlohmann::json lease_state() const;

 private:
  std::string operation_;
  int status_;
  std::string raw_body_;
  nlohmann::json body_;
  std::string error_type_;
  std::string api_message_;
  std::string request_id_;
};

// The request never got an HTTP answer: connection refused or reset, timeout, TLS failure.
class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A 2xx answer whose body is not what the API documents (not JSON, missing fields). Built by
// RequestExecutor with its context: the operation, the problem, the status and the start of the
// offending body (withheld when the body would carry a credential).
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ProtocolError(std::string operation, std::string problem, int status, std::string body_excerpt);

  // Empty when thrown by a parser without context (the executor adds it before it leaves).
  const std::string& operation() const { return operation_; }
  const std::string& problem() const { return problem_; }
  int status() const { return status_; }
  const std::string& body_excerpt() const { return body_excerpt_; }

 private:
  std::string operation_;
  std::string problem_;
  int status_ = 0;
  std::string body_excerpt_;
};

bool is_fatal_4xx(int status);
// Statuses the official SDK's client retries: 408, 409, 429 and every 5xx.
bool is_retryable_status(int status);

}  // namespace perimeter::agentapi
