#include "sim/api_reply.h"

namespace perimeter::sim {

const std::string* ApiRequest::header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? nullptr : &it->second;
}

const std::string* ApiRequest::query_param(std::string_view name) const {
  auto it = query.find(std::string(name));
  return it == query.end() ? nullptr : &it->second;
}

ApiReply json_reply(int status, const nlohmann::json& body) {
  ApiReply reply;
  reply.status = status;
  reply.body = body.dump();
  return reply;
}

ApiReply error_reply(int status, std::string_view error_type, std::string_view message,
                     const nlohmann::json& details) {
  nlohmann::json error = {{"type", error_type}, {"message", message}};
  if (!details.is_null()) error["details"] = details;
  return json_reply(status, {{"type", "error"}, {"error", error}});
}

std::string_view error_type_for_status(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 409:
      return "conflict_error";
    case 412:
      return "precondition_failed_error";
    case 429:
      return "rate_limit_error";
    case 529:
      return "overloaded_error";
    default:
      return "api_error";
  }
}

std::optional<ApiReply> bearer_token(const ApiRequest& request, std::string* token,
                                     std::string_view api_key_refusal) {
  const std::string* authorization = request.header("authorization");
  const std::string* api_key = request.header("x-api-key");
  if (authorization && api_key) {
    return error_reply(401, "authentication_error",
                       "send either x-api-key or Authorization: Bearer, not both");
  }
  if (!authorization) {
    return error_reply(401, "authentication_error",
                       api_key ? api_key_refusal : "missing Authorization: Bearer <token>");
  }
  constexpr std::string_view kPrefix = "Bearer ";
  if (authorization->size() <= kPrefix.size() ||
      authorization->compare(0, kPrefix.size(), kPrefix) != 0) {
    return error_reply(401, "authentication_error", "Authorization must be `Bearer <token>`");
  }
  *token = authorization->substr(kPrefix.size());
  return std::nullopt;
}

}  // namespace perimeter::sim
