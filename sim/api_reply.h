#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace perimeter::sim {

// One HTTP request as the simulator's routing layer sees it: transport-free, so the whole API can
// be exercised in unit tests without a socket.
struct ApiRequest {
  std::string method;
  std::string path;                            // without the query string
  std::map<std::string, std::string> query;    // percent-decoded
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  const std::string* header(std::string_view name) const;
  const std::string* query_param(std::string_view name) const;
};

struct ApiReply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

ApiReply json_reply(int status, const nlohmann::json& body);

// The Managed Agents API error shape: {"type":"error","error":{"type","message",details?}}.
// The SDK reads error.type for the class of error and error.details.error_code when present.
ApiReply error_reply(int status, std::string_view error_type, std::string_view message,
                     const nlohmann::json& details = nullptr);

// The bearer token of a request, or the 401 the API gives: both credentials at once, none, or an
// Authorization that is not `Bearer <token>`. `api_key_refusal` is what a request that sent only
// x-api-key is told.
std::optional<ApiReply> bearer_token(const ApiRequest& request, std::string* token,
                                     std::string_view api_key_refusal);

// The error type the API uses for a status code (400 invalid_request_error, 404
// not_found_error...).
std::string_view error_type_for_status(int status);

}  // namespace perimeter::sim
