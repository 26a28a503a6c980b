#include "agentapi/api_error.h"

namespace perimeter::agentapi {
namespace {

std::string describe(const std::string& operation, int status, const nlohmann::json& body,
                     const std::string& raw) {
  std::string text = operation + ": HTTP " + std::to_string(status);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const auto& error = body["error"];
    text += " " + error.value("type", std::string("?")) + ": " +
            error.value("message", std::string(""));
  } else if (!raw.empty()) {
    text += ": " + raw.substr(0, 200);
  }
  return text;
}

}  // namespace

ApiError::ApiError(std::string operation, int status, std::string body, std::string request_id)
    : std::runtime_error(
          describe(operation, status, nlohmann::json::parse(body, nullptr, false), body)),
      operation_(std::move(operation)),
      status_(status),
      raw_body_(std::move(body)),
      body_(nlohmann::json::parse(raw_body_, nullptr, false)),
      request_id_(std::move(request_id)) {
  if (body_.is_discarded()) body_ = nullptr;
  if (body_.is_object() && body_.contains("error") && body_["error"].is_object()) {
    const auto& error = body_["error"];
    if (error.contains("type") && error["type"].is_string()) error_type_ = error["type"];
    if (error.contains("message") && error["message"].is_string()) api_message_ = error["message"];
  }
}

ProtocolError::ProtocolError(std::string operation, std::string problem, int status,
                             std::string body_excerpt)
    : std::runtime_error(operation + ": " + problem + " (HTTP " + std::to_string(status) +
                         ", body: " + body_excerpt + ")"),
      operation_(std::move(operation)),
      problem_(std::move(problem)),
      status_(status),
      body_excerpt_(std::move(body_excerpt)) {}

bool ApiError::fatal() const {
  return is_fatal_4xx(status_);
}

nlohmann::json ApiError::lease_state() const {
  const nlohmann::json* node = &body_;
  for (const char* key : {"error", "details", "current_state"}) {
    if (!node->is_object() || !node->contains(key)) return nullptr;
    node = &(*node)[key];
  }
  return node->is_object() ? *node : nlohmann::json(nullptr);
}

bool is_fatal_4xx(int status) {
  return status >= 400 && status < 500 && status != 408 && status != 409 && status != 429;
}

bool is_retryable_status(int status) {
  return status == 408 || status == 409 || status == 429 || status >= 500;
}

}  // namespace perimeter::agentapi
