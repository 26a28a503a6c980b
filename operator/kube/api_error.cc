#include "kube/api_error.h"

namespace perimeter::kube {

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNotFound:
      return "NotFound";
    case ErrorKind::kConflict:
      return "Conflict";
    case ErrorKind::kAlreadyExists:
      return "AlreadyExists";
    case ErrorKind::kGone:
      return "Gone";
    case ErrorKind::kInvalid:
      return "Invalid";
    case ErrorKind::kTooManyRequests:
      return "TooManyRequests";
    case ErrorKind::kForbidden:
      return "Forbidden";
    case ErrorKind::kUnauthorized:
      return "Unauthorized";
    case ErrorKind::kBadRequest:
      return "BadRequest";
    case ErrorKind::kMethodNotAllowed:
      return "MethodNotAllowed";
    case ErrorKind::kUnsupportedMediaType:
      return "UnsupportedMediaType";
    case ErrorKind::kTimeout:
      return "Timeout";
    case ErrorKind::kInternalError:
      return "InternalError";
    case ErrorKind::kServiceUnavailable:
      return "ServiceUnavailable";
    case ErrorKind::kUnknown:
      return "Unknown";
  }
  return "Unknown";
}

namespace {

// The Status reason is authoritative (409 is both Conflict and AlreadyExists); the HTTP code
// decides only when the body is not a Status.
ErrorKind kind_from(int code, const std::string& reason) {
  if (reason == "NotFound") return ErrorKind::kNotFound;
  if (reason == "AlreadyExists") return ErrorKind::kAlreadyExists;
  if (reason == "Conflict") return ErrorKind::kConflict;
  if (reason == "Gone" || reason == "Expired") return ErrorKind::kGone;
  if (reason == "Invalid") return ErrorKind::kInvalid;
  if (reason == "TooManyRequests") return ErrorKind::kTooManyRequests;
  if (reason == "Forbidden") return ErrorKind::kForbidden;
  if (reason == "Unauthorized") return ErrorKind::kUnauthorized;
  if (reason == "BadRequest") return ErrorKind::kBadRequest;
  if (reason == "MethodNotAllowed") return ErrorKind::kMethodNotAllowed;
  if (reason == "UnsupportedMediaType") return ErrorKind::kUnsupportedMediaType;
  if (reason == "Timeout" || reason == "ServerTimeout") return ErrorKind::kTimeout;
  if (reason == "InternalError") return ErrorKind::kInternalError;
  if (reason == "ServiceUnavailable") return ErrorKind::kServiceUnavailable;
  switch (code) {
    case 400:
      return ErrorKind::kBadRequest;
    case 401:
      return ErrorKind::kUnauthorized;
    case 403:
      return ErrorKind::kForbidden;
    case 404:
      return ErrorKind::kNotFound;
    case 405:
      return ErrorKind::kMethodNotAllowed;
    case 409:
      return ErrorKind::kConflict;
    case 410:
      return ErrorKind::kGone;
    case 415:
      return ErrorKind::kUnsupportedMediaType;
    case 422:
      return ErrorKind::kInvalid;
    case 429:
      return ErrorKind::kTooManyRequests;
    case 500:
      return ErrorKind::kInternalError;
    case 503:
      return ErrorKind::kServiceUnavailable;
    case 504:
      return ErrorKind::kTimeout;
    default:
      return ErrorKind::kUnknown;
  }
}

}  // namespace

std::string truncate_for_log(const std::string& text, std::size_t max_chars) {
  if (text.size() <= max_chars) return text;
  return text.substr(0, max_chars) + "...(" + std::to_string(text.size() - max_chars) +
         " more bytes)";
}

ApiError::ApiError(const std::string& what, int code, ErrorKind kind, std::string reason,
                   std::string message, nlohmann::json details, std::string raw_body,
                   bool body_is_status)
    : std::runtime_error(what),
      code_(code),
      kind_(kind),
      reason_(std::move(reason)),
      message_(std::move(message)),
      details_(std::move(details)),
      raw_body_(std::move(raw_body)),
      body_is_status_(body_is_status) {}

ApiError ApiError::from_response(int http_status, std::string body, const std::string& context) {
  std::string reason;
  std::string message;
  nlohmann::json details = nlohmann::json::object();
  int code = http_status;
  bool is_status = false;
  const auto parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.value("kind", "") == "Status") {
    is_status = true;
    if (parsed.contains("reason") && parsed["reason"].is_string()) reason = parsed["reason"];
    if (parsed.contains("message") && parsed["message"].is_string()) message = parsed["message"];
    if (parsed.contains("details") && parsed["details"].is_object()) details = parsed["details"];
    // A watch ERROR event carries the real code inside the Status while the HTTP status is 200.
    if (parsed.contains("code") && parsed["code"].is_number_integer()) code = parsed["code"];
  }
  const ErrorKind kind = kind_from(code, reason);
  std::string what = context + ": " + std::to_string(code) + " " + to_string(kind);
  if (is_status) {
    if (!message.empty()) what += ": " + message;
  } else {
    what += " (body is not a Status: " + truncate_for_log(body, 200) + ")";
  }
  return ApiError(what, code, kind, std::move(reason), std::move(message), std::move(details),
                  std::move(body), is_status);
}

int ApiError::retry_after_seconds() const {
  if (details_.contains("retryAfterSeconds") && details_["retryAfterSeconds"].is_number_integer())
    return details_["retryAfterSeconds"];
  return 0;
}

DecodeError::DecodeError(const std::string& what, std::string offending_text)
    : std::runtime_error(what + " (input: " + truncate_for_log(offending_text, 200) + ")"),
      offending_text_(std::move(offending_text)) {}

}  // namespace perimeter::kube
