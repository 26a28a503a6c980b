#pragma once

#include <string>
#include <vector>

#include "tunnelsapi/types.h"

namespace perimeter::tunnelsapi {

// The Tunnels API calls (research preview, `anthropic-beta: mcp-tunnels-2026-06-22`) Perimeter
// makes for an McpTunnel. One instance is bound to one credential (an AccessTokenSource) and
// optionally one workspace. Every call throws agentapi::ApiError on a non-2xx answer (the
// server's error body kept), agentapi::TransportError when no answer came, and
// agentapi::ProtocolError when a 2xx body is not what the API documents.
//
// Retries (docs/tunnels-api.md has the table): calls marked *repeatable* are retried like the
// official SDK retries (408, 409, 429, 5xx, connection failures; backoff with jitter, the
// server's retry-after honoured). Calls marked *not repeatable* are retried only on a 429, which
// refuses a request before anything happens: after a timeout, a reset or a 5xx the request may
// have been carried out, so the error goes to the caller, who must find out what happened
// (list and adopt) instead of sending it again. Any call answered 401 is sent once more with a
// freshly exchanged access token.
class TunnelsApi {
 public:
  virtual ~TunnelsApi() = default;

  // POST /v1/tunnels {display_name?}. NOT REPEATABLE: every call allocates a new hostname, and an
  // organization has at most 10 active tunnels. After a TransportError or a 5xx the tunnel may
  // exist: list the tunnels and adopt the one with this display name (derive it from something
  // stable, e.g. the resource's uid) rather than calling again. An empty name sends none.
  virtual Tunnel create_tunnel(const std::string& display_name) = 0;

  // GET /v1/tunnels/{id}. Repeatable.
  virtual Tunnel retrieve_tunnel(const std::string& tunnel_id) = 0;

  // GET /v1/tunnels?include_archived=&limit=&page=, newest first. Repeatable. `limit` 1..1000
  // (0: the server's default, 20); `page` is the previous page's next_page (empty: the first).
  virtual TunnelPage list_tunnels(bool include_archived, int limit, const std::string& page) = 0;

  // POST /v1/tunnels/{id}/reveal_token. Repeatable: it reads the current token (a POST only to
  // keep it out of access logs); the same value comes back until a rotation.
  virtual TunnelToken reveal_token(const std::string& tunnel_id) = 0;

  // POST /v1/tunnels/{id}/rotate_token {reason?}. NOT REPEATABLE: each call invalidates the
  // current token for new connections (established ones stay up). After a TransportError or a
  // 5xx, reveal_token tells the token now in effect.
  virtual TunnelToken rotate_token(const std::string& tunnel_id, const std::string& reason) = 0;

  // POST /v1/tunnels/{id}/archive. Irreversible: retires the hostname, invalidates the token and
  // archives the tunnel's certificates. Repeatable: archiving an archived tunnel returns it
  // unchanged.
  virtual Tunnel archive_tunnel(const std::string& tunnel_id) = 0;

  // POST /v1/tunnels/{id}/certificates {ca_certificate_pem}: exactly one CA certificate, no key
  // (a PEM with a private key is refused here, before anything is sent). NOT REPEATABLE: each
  // call registers one more certificate, and a tunnel holds at most two non-archived. After a
  // TransportError or a 5xx, list the certificates and look for this CA's fingerprint.
  virtual TunnelCertificate create_certificate(const std::string& tunnel_id,
                                               const std::string& ca_certificate_pem) = 0;

  // GET /v1/tunnels/{id}/certificates?include_archived=&limit=&page=. Repeatable.
  virtual TunnelCertificatePage list_certificates(const std::string& tunnel_id,
                                                  bool include_archived, int limit,
                                                  const std::string& page) = 0;

  // GET /v1/tunnels/{id}/certificates/{cid}. Repeatable.
  virtual TunnelCertificate retrieve_certificate(const std::string& tunnel_id,
                                                 const std::string& certificate_id) = 0;

  // POST /v1/tunnels/{id}/certificates/{cid}/archive: the CA leaves the trusted set (the record
  // stays). Repeatable: the end state is the same however often it is sent.
  virtual TunnelCertificate archive_certificate(const std::string& tunnel_id,
                                                const std::string& certificate_id) = 0;
};

// Every tunnel, walking the pages (`page_size` per request) until next_page is null. Throws
// agentapi::ProtocolError if the server hands back a cursor it already gave.
std::vector<Tunnel> list_all_tunnels(TunnelsApi& api, bool include_archived, int page_size = 100);

// Every certificate of a tunnel, walking the pages likewise.
std::vector<TunnelCertificate> list_all_certificates(TunnelsApi& api, const std::string& tunnel_id,
                                                     bool include_archived, int page_size = 100);

}  // namespace perimeter::tunnelsapi
