#include "sim/tunnels_router.h"

#include "sim/router.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

constexpr std::string_view kTunnelsBeta = "mcp-tunnels-2026-06-22";
constexpr std::string_view kFederationBeta = "oidc-federation-2026-04-01";

ApiReply bad_request(const std::string& message) {
  return error_reply(400, "invalid_request_error", message);
}

// Whether the comma-separated anthropic-beta header lists `beta`.
bool has_beta(const ApiRequest& request, std::string_view beta) {
  const std::string* header = request.header("anthropic-beta");
  if (!header) return false;
  std::size_t start = 0;
  while (start <= header->size()) {
    std::size_t comma = header->find(',', start);
    if (comma == std::string::npos) comma = header->size();
    std::string item = header->substr(start, comma - start);
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    if (first != std::string::npos && item.substr(first, last - first + 1) == beta) return true;
    start = comma + 1;
  }
  return false;
}

std::optional<ApiReply> check_tunnels_headers(const ApiRequest& request) {
  if (!has_beta(request, kTunnelsBeta)) {
    return bad_request("this endpoint requires the anthropic-beta header `" +
                       std::string(kTunnelsBeta) + "`");
  }
  if (!request.header("anthropic-version")) {
    return bad_request("the anthropic-version header is required");
  }
  return std::nullopt;
}

std::optional<json> parse_body(const ApiRequest& request) {
  if (request.body.empty()) return json::object();
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded()) return std::nullopt;
  return body;
}

struct ListQuery {
  bool include_archived = false;
  int limit = 0;
  std::string page;
};

std::optional<ApiReply> parse_list_query(const ApiRequest& request, ListQuery* query) {
  if (const std::string* text = request.query_param("include_archived")) {
    if (*text == "true") {
      query->include_archived = true;
    } else if (*text != "false") {
      return bad_request("include_archived must be true or false, not `" + *text + "`");
    }
  }
  if (const std::string* text = request.query_param("limit")) {
    std::int64_t value = 0;
    if (!parse_int(*text, &value) || value < 1 || value > 1000) {
      return bad_request("limit must be an integer between 1 and 1000, not `" + *text + "`");
    }
    query->limit = static_cast<int>(value);
  }
  if (const std::string* text = request.query_param("page")) query->page = *text;
  return std::nullopt;
}

std::optional<std::string> string_field(const json& body, const char* name) {
  if (!body.is_object() || !body.contains(name) || !body[name].is_string()) return std::nullopt;
  return body[name].get<std::string>();
}

}  // namespace

std::string tunnels_route_name(const std::string& method, const std::vector<std::string>& parts) {
  const std::size_t n = parts.size();
  if (n == 3 && parts[1] == "oauth" && parts[2] == "token" && method == "POST") {
    return "oauth.token";
  }
  if (n < 2 || parts[1] != "tunnels") return "";
  if (n == 2) return method == "POST" ? "tunnels.create" : method == "GET" ? "tunnels.list" : "";
  if (n == 3 && method == "GET") return "tunnels.retrieve";
  if (n == 4 && method == "POST") {
    if (parts[3] == "reveal_token") return "tunnels.reveal_token";
    if (parts[3] == "rotate_token") return "tunnels.rotate_token";
    if (parts[3] == "archive") return "tunnels.archive";
  }
  if (n >= 4 && parts[3] == "certificates") {
    if (n == 4 && method == "POST") return "tunnels.certificates.create";
    if (n == 4 && method == "GET") return "tunnels.certificates.list";
    if (n == 5 && method == "GET") return "tunnels.certificates.retrieve";
    if (n == 6 && method == "POST" && parts[5] == "archive") return "tunnels.certificates.archive";
  }
  return "";
}

ApiReply route_tunnels_api(TunnelService& service, const ApiRequest& request,
                           const std::vector<std::string>& parts, const std::string& route) {
  if (route == "oauth.token") {
    // The SDK sends no anthropic-version here, only the OAuth and federation betas.
    if (!has_beta(request, kFederationBeta)) {
      return json_reply(400, {{"error", "invalid_request"},
                              {"error_description",
                               "the jwt-bearer grant requires the "
                               "anthropic-beta header `" +
                                   std::string(kFederationBeta) + "`"}});
    }
    std::optional<json> body = parse_body(request);
    if (!body) {
      return json_reply(400, {{"error", "invalid_request"},
                              {"error_description", "the request body is not valid JSON"}});
    }
    return service.exchange_token(*body);
  }

  if (auto refused = check_tunnels_headers(request)) return *refused;
  TunnelService::Caller caller;
  if (auto refused = bearer_token(request, &caller.token,
                                  "the Tunnels API does not accept API keys: send "
                                  "Authorization: Bearer <access token from /v1/oauth/token>"))
    return *refused;
  if (const std::string* workspace = request.header("anthropic-workspace-id")) {
    caller.workspace_header = *workspace;
  }
  const bool reads = route == "tunnels.list" || route == "tunnels.retrieve" ||
                     route == "tunnels.certificates.list" ||
                     route == "tunnels.certificates.retrieve";
  std::optional<json> body = json::object();
  if (!reads) {
    body = parse_body(request);
    if (!body) return bad_request("the request body is not valid JSON");
  }

  if (route == "tunnels.create") return service.create_tunnel(caller, *body);
  if (route == "tunnels.list" || route == "tunnels.certificates.list") {
    ListQuery query;
    if (auto refused = parse_list_query(request, &query)) return *refused;
    if (route == "tunnels.list") {
      return service.list_tunnels(caller, query.include_archived, query.limit, query.page);
    }
    return service.list_certificates(caller, parts[2], query.include_archived, query.limit,
                                     query.page);
  }
  const std::string& tunnel_id = parts[2];
  if (route == "tunnels.retrieve") return service.retrieve_tunnel(caller, tunnel_id);
  if (route == "tunnels.reveal_token") return service.reveal_token(caller, tunnel_id);
  if (route == "tunnels.rotate_token") return service.rotate_token(caller, tunnel_id, *body);
  if (route == "tunnels.archive") return service.archive_tunnel(caller, tunnel_id);
  if (route == "tunnels.certificates.create") {
    return service.create_certificate(caller, tunnel_id, *body);
  }
  if (route == "tunnels.certificates.retrieve") {
    return service.retrieve_certificate(caller, tunnel_id, parts[4]);
  }
  // tunnels.certificates.archive
  return service.archive_certificate(caller, tunnel_id, parts[4]);
}

std::optional<std::pair<std::string, ApiReply>> route_tunnels_admin(
    TunnelService& service, const ApiRequest& request, const std::vector<std::string>& parts) {
  const std::string& method = request.method;
  const std::size_t n = parts.size();
  if (n < 2) return std::nullopt;
  const std::string& area = parts[1];
  if (area != "organizations" && area != "federation_rules" && area != "federation_issuers" &&
      area != "access_tokens" && area != "tunnels") {
    return std::nullopt;
  }
  const std::string route = "admin." + area;
  std::optional<json> body = parse_body(request);
  if (!body) return std::pair{route, bad_request("the request body is not valid JSON")};

  if (n == 2 && method == "POST" && area == "organizations") {
    return std::pair{route, service.create_organization(*body)};
  }
  if (n == 2 && method == "POST" && area == "federation_rules") {
    return std::pair{route, service.create_federation_rule(*body)};
  }
  if (n == 2 && method == "POST" && area == "federation_issuers") {
    const auto issuer = string_field(*body, "issuer");
    if (!issuer || issuer->empty() || !body->contains("jwks") || !(*body)["jwks"].is_object() ||
        !(*body)["jwks"].contains("keys") || !(*body)["jwks"]["keys"].is_array()) {
      return std::pair{route, bad_request("body must be {\"issuer\": \"...\", \"jwks\": "
                                          "{\"keys\": [...]}}")};
    }
    service.register_issuer(*issuer, std::make_shared<StaticKeySource>((*body)["jwks"]));
    return std::pair{route, json_reply(201, {{"issuer", *issuer}})};
  }
  if (n == 2 && method == "POST" && area == "access_tokens") {
    return std::pair{route, service.mint_access_token(*body)};
  }
  if (area == "tunnels") {
    if (n == 2 && method == "GET") {
      const std::string* organization = request.query_param("organization_id");
      return std::pair{route, service.admin_list_tunnels(organization ? *organization : "")};
    }
    if (n == 3 && method == "POST" && parts[2] == "reset") {
      service.reset_tunnels();
      return std::pair{route, json_reply(200, {{"reset", true}})};
    }
    if (n == 3 && method == "GET") return std::pair{route, service.admin_tunnel(parts[2])};
    if (n == 4 && method == "POST" && parts[3] == "connect") {
      return std::pair{route, service.admin_connect(parts[2], *body)};
    }
  }
  return std::pair{route, error_reply(404, "not_found_error",
                                      "no admin route for " + method + " " + request.path)};
}

}  // namespace perimeter::sim
