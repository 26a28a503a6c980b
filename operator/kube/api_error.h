#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace perimeter::kube {

// What kind of failure a Kubernetes API call met, told apart the way callers must react to it:
// a NotFound is often fine, a Conflict means re-read and retry, Gone means relist.
enum class ErrorKind {
  kNotFound,
  kConflict,
  kAlreadyExists,
  kGone,
  kInvalid,
  kTooManyRequests,
  kForbidden,
  kUnauthorized,
  kBadRequest,
  kMethodNotAllowed,
  kUnsupportedMediaType,
  kTimeout,
  kInternalError,
  kServiceUnavailable,
  kUnknown,
};

const char* to_string(ErrorKind kind);

// A non-2xx answer from the API server. Keeps the server's Status (code, reason, message,
// details) and the raw body, so nothing the server said is lost on the way to a log or condition.
class ApiError : public std::runtime_error {
 public:
  // Builds the error from an HTTP status and body. A body that is not a Status object (a proxy's
  // HTML page, a truncated answer) is kept as raw text; body_is_status() is then false.
  static ApiError from_response(int http_status, std::string body, const std::string& context);

  int code() const { return code_; }
  ErrorKind kind() const { return kind_; }
  const std::string& reason() const { return reason_; }
  const std::string& status_message() const { return message_; }
  const nlohmann::json& details() const { return details_; }
  const std::string& raw_body() const { return raw_body_; }
  bool body_is_status() const { return body_is_status_; }
  // Seconds the server asked us to wait (429, 503 and some 500s carry details.retryAfterSeconds).
  int retry_after_seconds() const;

 private:
  ApiError(const std::string& what, int code, ErrorKind kind, std::string reason,
           std::string message, nlohmann::json details, std::string raw_body, bool body_is_status);

  int code_;
  ErrorKind kind_;
  std::string reason_;
  std::string message_;
  nlohmann::json details_;
  std::string raw_body_;
  bool body_is_status_;
};

// The request never got an HTTP answer: connection refused or reset, TLS failure, client timeout.
class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A 2xx answer, or a watch line, that is not what the API promises (not JSON, wrong shape or
// type). The offending text is kept, shortened, for the log.
class DecodeError : public std::runtime_error {
 public:
  DecodeError(const std::string& what, std::string offending_text);
  const std::string& offending_text() const { return offending_text_; }

 private:
  std::string offending_text_;
};

// The bad configuration of a client (kubeconfig, in-cluster files): a clear message for the user.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline bool is_not_found(const std::exception& e) {
  auto* api = dynamic_cast<const ApiError*>(&e);
  return api != nullptr && api->kind() == ErrorKind::kNotFound;
}
inline bool is_conflict(const std::exception& e) {
  auto* api = dynamic_cast<const ApiError*>(&e);
  return api != nullptr && api->kind() == ErrorKind::kConflict;
}
inline bool is_already_exists(const std::exception& e) {
  auto* api = dynamic_cast<const ApiError*>(&e);
  return api != nullptr && api->kind() == ErrorKind::kAlreadyExists;
}
inline bool is_gone(const std::exception& e) {
  auto* api = dynamic_cast<const ApiError*>(&e);
  return api != nullptr && api->kind() == ErrorKind::kGone;
}

// Shortens text for error messages and logs so one huge body cannot flood them.
std::string truncate_for_log(const std::string& text, std::size_t max_chars = 512);

}  // namespace perimeter::kube
