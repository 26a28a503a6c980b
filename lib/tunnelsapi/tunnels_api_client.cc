#include "tunnelsapi/tunnels_api_client.h"

#include <stdexcept>

#include "agentapi/api_error.h"
#include "agentapi/json_fields.h"

namespace perimeter::tunnelsapi {
namespace {

using agentapi::BodyDisclosure;
using agentapi::RetryMode;
using agentapi::url_encode;
using nlohmann::json;

constexpr int kMaxListLimit = 1000;

std::string list_query(bool include_archived, int limit, const std::string& page,
                       std::string_view operation) {
  if (limit < 0 || limit > kMaxListLimit) {
    throw std::invalid_argument(std::string(operation) + ": limit must be 1..1000 (0: default)");
  }
  std::string query;
  auto add = [&query](const std::string& name, const std::string& value) {
    query += (query.empty() ? "?" : "&") + name + "=" + url_encode(value);
  };
  if (include_archived) add("include_archived", "true");
  if (limit > 0) add("limit", std::to_string(limit));
  if (!page.empty()) add("page", page);
  return query;
}

template <typename Item, typename Page, typename Parse>
Page parse_page(const json& body, Parse parse_item, std::string_view what) {
  if (!body.is_object() || !body.contains("data") || !body["data"].is_array()) {
    throw agentapi::ProtocolError(std::string(what) + ": field `data` is missing or not a list");
  }
  Page page;
  for (const json& item : body["data"]) page.data.push_back(parse_item(item));
  page.next_page = agentapi::nullable_string(body, "next_page", what);
  if (page.next_page && page.next_page->empty()) page.next_page.reset();
  return page;
}

std::string tunnel_path(const std::string& tunnel_id, std::string_view suffix = "") {
  if (tunnel_id.empty()) throw std::invalid_argument("a tunnel id is required");
  return "/v1/tunnels/" + url_encode(tunnel_id) + std::string(suffix);
}

std::string certificate_path(const std::string& tunnel_id, const std::string& certificate_id,
                             std::string_view suffix = "") {
  if (certificate_id.empty()) throw std::invalid_argument("a certificate id is required");
  return tunnel_path(tunnel_id, "/certificates/") + url_encode(certificate_id) +
         std::string(suffix);
}

}  // namespace

Tunnel parse_tunnel(const json& object) {
  agentapi::require_type(object, "tunnel", "tunnel");
  Tunnel tunnel;
  tunnel.id = agentapi::require_string(object, "id", "tunnel");
  const std::string what = "tunnel " + tunnel.id;
  tunnel.display_name = agentapi::nullable_string(object, "display_name", what);
  tunnel.domain = agentapi::require_string(object, "domain", what);
  tunnel.created_at = agentapi::require_string(object, "created_at", what);
  tunnel.archived_at = agentapi::nullable_string(object, "archived_at", what);
  return tunnel;
}

TunnelToken parse_tunnel_token(const json& object) {
  agentapi::require_type(object, "tunnel_token", "tunnel token");
  TunnelToken token;
  token.id = agentapi::require_string(object, "id", "tunnel token");
  token.tunnel_token = Secret(agentapi::require_string(object, "tunnel_token", "tunnel token"));
  if (token.tunnel_token.empty()) {
    throw agentapi::ProtocolError("tunnel token: field `tunnel_token` is empty");
  }
  return token;
}

TunnelCertificate parse_tunnel_certificate(const json& object) {
  agentapi::require_type(object, "tunnel_certificate", "tunnel certificate");
  TunnelCertificate certificate;
  certificate.id = agentapi::require_string(object, "id", "tunnel certificate");
  const std::string what = "tunnel certificate " + certificate.id;
  certificate.tunnel_id = agentapi::require_string(object, "tunnel_id", what);
  certificate.fingerprint = agentapi::require_string(object, "fingerprint", what);
  certificate.created_at = agentapi::require_string(object, "created_at", what);
  certificate.expires_at = agentapi::nullable_string(object, "expires_at", what);
  certificate.archived_at = agentapi::nullable_string(object, "archived_at", what);
  return certificate;
}

TunnelsApiClient::TunnelsApiClient(TunnelsClientConfig config, AccessTokenSource& tokens,
                                   std::unique_ptr<agentapi::HttpTransport> transport,
                                   RandomSource& random, agentapi::Sleeper& sleeper,
                                   agentapi::ApiMetrics* metrics, Logger logger)
    : config_(std::move(config)),
      tokens_(tokens),
      transport_(std::move(transport)),
      logger_(std::move(logger)),
      executor_(*transport_, config_.retry_backoff, random, sleeper, metrics, logger_) {
  while (!config_.base_url.empty() && config_.base_url.back() == '/') config_.base_url.pop_back();
}

agentapi::HttpResponse TunnelsApiClient::call(std::string_view operation, const std::string& method,
                                              const std::string& path, const std::string& body,
                                              RetryMode mode) {
  agentapi::CallPolicy policy;
  policy.mode = mode;
  policy.max_retries = config_.max_retries;
  for (bool refreshed = false;; refreshed = true) {
    const Secret token = tokens_.access_token();
    agentapi::HttpRequest request;
    request.method = method;
    request.url = config_.base_url + path;
    request.timeout = config_.request_timeout;
    request.headers = {{"Authorization", "Bearer " + token.expose()},
                       {"anthropic-version", std::string(kAnthropicVersion)},
                       {"anthropic-beta", std::string(kTunnelsBeta) + ",oauth-2025-04-20"},
                       {"User-Agent", config_.user_agent},
                       {"Accept", "application/json"}};
    if (!config_.workspace_id.empty()) {
      request.headers.emplace_back("anthropic-workspace-id", config_.workspace_id);
    }
    if (!body.empty()) {
      request.headers.emplace_back("Content-Type", "application/json");
      request.body = body;
    }
    try {
      return executor_.send(operation, request, policy);
    } catch (const agentapi::ApiError& e) {
      if (e.status() != 401 || refreshed) throw;
      // Refused before anything happened, so sending again is safe even for a create.
      logger_.warn("access token refused, retrying once with a new one",
                   {{"operation", operation}, {"request_id", e.request_id()}});
      tokens_.invalidate(token);
    }
  }
}

Tunnel TunnelsApiClient::create_tunnel(const std::string& display_name) {
  if (display_name.size() > 255) {
    throw std::invalid_argument("create_tunnel: display_name is longer than 255 characters");
  }
  json body = json::object();
  if (!display_name.empty()) body["display_name"] = display_name;
  const auto response =
      call("tunnels.create", "POST", "/v1/tunnels", body.dump(), RetryMode::kOnlyIfRefused);
  return executor_.decode("tunnels.create", response, parse_tunnel);
}

Tunnel TunnelsApiClient::retrieve_tunnel(const std::string& tunnel_id) {
  const auto response =
      call("tunnels.retrieve", "GET", tunnel_path(tunnel_id), "", RetryMode::kIdempotent);
  return executor_.decode("tunnels.retrieve", response, parse_tunnel);
}

TunnelPage TunnelsApiClient::list_tunnels(bool include_archived, int limit,
                                          const std::string& page) {
  const std::string path =
      "/v1/tunnels" + list_query(include_archived, limit, page, "tunnels.list");
  const auto response = call("tunnels.list", "GET", path, "", RetryMode::kIdempotent);
  return executor_.decode("tunnels.list", response, [](const json& body) {
    return parse_page<Tunnel, TunnelPage>(body, parse_tunnel, "tunnel list");
  });
}

TunnelToken TunnelsApiClient::reveal_token(const std::string& tunnel_id) {
  const auto response = call("tunnels.reveal_token", "POST",
                             tunnel_path(tunnel_id, "/reveal_token"), "", RetryMode::kIdempotent);
  return executor_.decode("tunnels.reveal_token", response, parse_tunnel_token,
                          BodyDisclosure::kWithheld);
}

TunnelToken TunnelsApiClient::rotate_token(const std::string& tunnel_id,
                                           const std::string& reason) {
  json body = json::object();
  if (!reason.empty()) body["reason"] = reason;
  const auto response =
      call("tunnels.rotate_token", "POST", tunnel_path(tunnel_id, "/rotate_token"), body.dump(),
           RetryMode::kOnlyIfRefused);
  return executor_.decode("tunnels.rotate_token", response, parse_tunnel_token,
                          BodyDisclosure::kWithheld);
}

Tunnel TunnelsApiClient::archive_tunnel(const std::string& tunnel_id) {
  const auto response = call("tunnels.archive", "POST", tunnel_path(tunnel_id, "/archive"), "",
                             RetryMode::kIdempotent);
  return executor_.decode("tunnels.archive", response, parse_tunnel);
}

TunnelCertificate TunnelsApiClient::create_certificate(const std::string& tunnel_id,
                                                       const std::string& ca_certificate_pem) {
  // The API refuses key material too, but by then the key would have left the cluster.
  if (ca_certificate_pem.find("PRIVATE KEY") != std::string::npos) {
    throw std::invalid_argument(
        "create_certificate: the PEM holds a private key; only the CA certificate may be sent");
  }
  if (ca_certificate_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    throw std::invalid_argument("create_certificate: the PEM holds no certificate");
  }
  const json body = {{"ca_certificate_pem", ca_certificate_pem}};
  const auto response =
      call("tunnels.certificates.create", "POST", tunnel_path(tunnel_id, "/certificates"),
           body.dump(), RetryMode::kOnlyIfRefused);
  return executor_.decode("tunnels.certificates.create", response, parse_tunnel_certificate);
}

TunnelCertificatePage TunnelsApiClient::list_certificates(const std::string& tunnel_id,
                                                          bool include_archived, int limit,
                                                          const std::string& page) {
  const std::string path = tunnel_path(tunnel_id, "/certificates") +
                           list_query(include_archived, limit, page, "tunnels.certificates.list");
  const auto response = call("tunnels.certificates.list", "GET", path, "", RetryMode::kIdempotent);
  return executor_.decode("tunnels.certificates.list", response, [](const json& body) {
    return parse_page<TunnelCertificate, TunnelCertificatePage>(body, parse_tunnel_certificate,
                                                                "tunnel certificate list");
  });
}

TunnelCertificate TunnelsApiClient::retrieve_certificate(const std::string& tunnel_id,
                                                         const std::string& certificate_id) {
  const auto response =
      call("tunnels.certificates.retrieve", "GET", certificate_path(tunnel_id, certificate_id), "",
           RetryMode::kIdempotent);
  return executor_.decode("tunnels.certificates.retrieve", response, parse_tunnel_certificate);
}

TunnelCertificate TunnelsApiClient::archive_certificate(const std::string& tunnel_id,
                                                        const std::string& certificate_id) {
  const auto response =
      call("tunnels.certificates.archive", "POST",
           certificate_path(tunnel_id, certificate_id, "/archive"), "", RetryMode::kIdempotent);
  return executor_.decode("tunnels.certificates.archive", response, parse_tunnel_certificate);
}

}  // namespace perimeter::tunnelsapi
