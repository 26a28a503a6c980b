#pragma once

// The Tunnels API client: TunnelsApi over an agentapi::HttpTransport, with the official SDK's
// headers and wire shapes (@anthropic-ai/sdk src/resources/beta/tunnels/*) and the Managed
// Agents client's RequestExecutor for retries, backoff, typed errors and metrics.
//
// Every request carries
//   Authorization: Bearer <access token>       (from an AccessTokenSource; never logged)
//   anthropic-version: 2023-06-01
//   anthropic-beta: mcp-tunnels-2026-06-22,oauth-2025-04-20
//   anthropic-workspace-id: <id>               (only when configured)
// (the SDK adds oauth-2025-04-20 to every request it authenticates with an OAuth access token,
// as a federation token is.)
//
// Retries, per call (TunnelsApi says which call is which):
// - repeatable calls (retrieve, list, reveal_token, archive, certificate list/retrieve/archive):
//   up to max_retries more times on 408, 409, 429, 5xx (or as x-should-retry says) and on
//   transport errors;
// - create_tunnel, rotate_token, create_certificate are NOT retried after a timeout, a reset or a
//   5xx: the request may have been carried out, and a second create would allocate a second
//   tunnel (of at most 10 per organization). Only a 429 is retried. The caller recovers by
//   looking (list by display name, reveal_token, list certificates by fingerprint);
// - any call answered 401 is sent once more after the token source exchanged a new token (a 401
//   is refused before anything happens, so this is safe for every call);
// - waits: 0.5 s doubling to 8 s with jitter, or the server's retry-after(-ms) under a minute.
//
// Metrics (agentapi::ApiMetrics) per operation: tunnels.create, tunnels.retrieve, tunnels.list,
// tunnels.reveal_token, tunnels.rotate_token, tunnels.archive, tunnels.certificates.create,
// tunnels.certificates.list, tunnels.certificates.retrieve, tunnels.certificates.archive; a 2xx
// body that does not parse is a ProtocolError (operation, status, body excerpt; withheld for the
// token calls) counted by on_protocol_error.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "agentapi/http_transport.h"
#include "agentapi/request_executor.h"
#include "core/backoff.h"
#include "core/log.h"
#include "core/random.h"
#include "tunnelsapi/access_token_source.h"
#include "tunnelsapi/tunnels_api.h"

namespace perimeter::tunnelsapi {

inline constexpr std::string_view kTunnelsBeta = "mcp-tunnels-2026-06-22";
inline constexpr std::string_view kAnthropicVersion = "2023-06-01";

struct TunnelsClientConfig {
  std::string base_url = "https://api.anthropic.com";
  // Sent as anthropic-workspace-id when not empty. A federation token is already scoped to one
  // workspace (WorkloadIdentityConfig::workspace_id); the header may only repeat that one.
  std::string workspace_id;
  std::string user_agent = "perimeter/0.1.0";
  std::chrono::milliseconds request_timeout{60000};
  int max_retries = 2;
  BackoffPolicy retry_backoff = agentapi::kSdkRetryBackoff;
};

class TunnelsApiClient final : public TunnelsApi {
 public:
  TunnelsApiClient(TunnelsClientConfig config, AccessTokenSource& tokens,
                   std::unique_ptr<agentapi::HttpTransport> transport, RandomSource& random,
                   agentapi::Sleeper& sleeper, agentapi::ApiMetrics* metrics = nullptr,
                   Logger logger = Logger("tunnelsapi"));

  Tunnel create_tunnel(const std::string& display_name) override;
  Tunnel retrieve_tunnel(const std::string& tunnel_id) override;
  TunnelPage list_tunnels(bool include_archived, int limit, const std::string& page) override;
  TunnelToken reveal_token(const std::string& tunnel_id) override;
  TunnelToken rotate_token(const std::string& tunnel_id, const std::string& reason) override;
  Tunnel archive_tunnel(const std::string& tunnel_id) override;
  TunnelCertificate create_certificate(const std::string& tunnel_id,
                                       const std::string& ca_certificate_pem) override;
  TunnelCertificatePage list_certificates(const std::string& tunnel_id, bool include_archived,
                                          int limit, const std::string& page) override;
  TunnelCertificate retrieve_certificate(const std::string& tunnel_id,
                                         const std::string& certificate_id) override;
  TunnelCertificate archive_certificate(const std::string& tunnel_id,
                                        const std::string& certificate_id) override;

  const TunnelsClientConfig& config() const { return config_; }

 private:
  // Sends `method path` with `body` (none when empty) under `mode`, with one more attempt on a
  // 401 after the token source refreshed; returns the 2xx response.
  agentapi::HttpResponse call(std::string_view operation, const std::string& method,
                              const std::string& path, const std::string& body,
                              agentapi::RetryMode mode);

  TunnelsClientConfig config_;
  AccessTokenSource& tokens_;
  std::unique_ptr<agentapi::HttpTransport> transport_;
  Logger logger_;
  agentapi::RequestExecutor executor_;
};

// Parsers for the API's objects; throw agentapi::ProtocolError naming the missing field.
Tunnel parse_tunnel(const nlohmann::json& json);
TunnelToken parse_tunnel_token(const nlohmann::json& json);
TunnelCertificate parse_tunnel_certificate(const nlohmann::json& json);

}  // namespace perimeter::tunnelsapi
