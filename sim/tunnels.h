#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "sim/api_reply.h"
#include "sim/oidc_verifier.h"

namespace perimeter::sim {

// Choices the published documentation leaves open or that tests want to change; docs/simulator.md
// lists each.
struct TunnelOptions {
  std::chrono::seconds access_token_ttl{3600};
  int max_active_tunnels_per_organization = 10;
  int max_active_certificates = 2;
  int default_page_size = 20;
  int max_page_size = 1000;
  std::size_t max_ca_pem_bytes = 8 * 1024;
  std::size_t max_assertion_bytes = 16 * 1024;
  std::string domain_suffix = "tunnels.sim.local";
};

// What the service learns from a CA certificate: the rule it breaks, or its fingerprint (lowercase
// hex SHA-256 of the DER) and expiry. An interface so the PKI library stays out of this module.
struct CaInspection {
  std::optional<std::string> violation;
  std::string fingerprint;
  std::optional<std::chrono::system_clock::time_point> not_after;
};
class CaInspector {
 public:
  virtual ~CaInspector() = default;
  virtual CaInspection inspect(const std::string& pem) const = 0;
};

// The Tunnels API (research preview, `mcp-tunnels-2026-06-22`) and the workload identity
// federation token exchange in front of it: organizations, federation rules, access tokens,
// tunnels with their connector tokens, CA certificates. Thread-safe (one lock, never held while
// an issuer's keys are fetched); time comes from the injected Clock. Every API method returns
// the reply the real service would give and never throws on client input.
class TunnelService {
 public:
  TunnelService(TunnelOptions options, Clock& clock, RandomSource& random,
                const CaInspector& inspector);

  // ---- admin ----
  // Registers where an issuer's keys come from; rules may only name registered issuers.
  void register_issuer(const std::string& issuer, std::shared_ptr<KeySource> keys);
  // {name?, id?} -> {type:"organization", id, name}; an id (a UUID) is generated when absent.
  ApiReply create_organization(const nlohmann::json& body);
  // {issuer, audience, subjects:[...] | subject, organization_id, service_account_id?,
  //  workspace_ids?, scope?} -> the rule with its id (fdrl_...). A subject ending in `*`
  // matches by prefix.
  ApiReply create_federation_rule(const nlohmann::json& body);
  // {organization_id, workspace_id?, scope?, ttl_seconds?}: an access token without the
  // exchange, for tests that only need a credential.
  ApiReply mint_access_token(const nlohmann::json& body);
  // Every tunnel (archived too), newest first, optionally of one organization.
  ApiReply admin_list_tunnels(const std::string& organization_id) const;
  // The tunnel, its token versions, every certificate, and the active-certificate history with
  // its high-water mark.
  ApiReply admin_tunnel(const std::string& tunnel_id) const;
  // Whether a connector presenting `tunnel_token` may open a new connection now.
  ApiReply admin_connect(const std::string& tunnel_id, const nlohmann::json& body) const;
  // Forgets tunnels, certificates and access tokens (organizations, rules and issuers stay, and
  // so does every domain ever allocated: they are never reused).
  void reset_tunnels();

  // ---- POST /v1/oauth/token ----
  ApiReply exchange_token(const nlohmann::json& body);

  // ---- the Tunnels API; `token` is the bearer credential, `workspace_header` the optional
  // anthropic-workspace-id header ----
  struct Caller {
    std::string token;
    std::optional<std::string> workspace_header;
  };
  ApiReply create_tunnel(const Caller& caller, const nlohmann::json& body);
  ApiReply retrieve_tunnel(const Caller& caller, const std::string& tunnel_id);
  ApiReply list_tunnels(const Caller& caller, bool include_archived, int limit,
                        const std::string& page);
  ApiReply reveal_token(const Caller& caller, const std::string& tunnel_id);
  ApiReply rotate_token(const Caller& caller, const std::string& tunnel_id,
                        const nlohmann::json& body);
  ApiReply archive_tunnel(const Caller& caller, const std::string& tunnel_id);
  ApiReply create_certificate(const Caller& caller, const std::string& tunnel_id,
                              const nlohmann::json& body);
  ApiReply retrieve_certificate(const Caller& caller, const std::string& tunnel_id,
                                const std::string& certificate_id);
  ApiReply list_certificates(const Caller& caller, const std::string& tunnel_id,
                             bool include_archived, int limit, const std::string& page);
  ApiReply archive_certificate(const Caller& caller, const std::string& tunnel_id,
                               const std::string& certificate_id);

  const TunnelOptions& options() const { return options_; }

 private:
  using WallTime = std::chrono::system_clock::time_point;
  struct Organization {
    std::string id;
    std::string name;
  };
  struct FederationRule {
    std::string id;
    std::string issuer;
    std::string audience;
    std::vector<std::string> subjects;
    std::string organization_id;
    std::string service_account_id;
    std::vector<std::string> workspace_ids;
    std::string scope;
    WallTime created_at;
  };
  struct AccessToken {
    std::string organization_id;
    std::string workspace_id;
    std::string service_account_id;
    std::string rule_id;
    std::string scope;
    Clock::TimePoint expires_at;
  };
  struct TokenVersion {
    int version = 0;
    std::string id;
    std::string secret;
    WallTime created_at;
    std::optional<WallTime> retired_at;
    std::string retired_because;
    std::string rotation_reason;  // the reason sent with the rotation that created it
  };
  struct ActiveCountChange {
    WallTime at;
    int count = 0;
    std::string event;  // created / archived / tunnel archived
    std::string certificate_id;
  };
  struct Certificate {
    std::string id;
    std::string tunnel_id;
    std::string fingerprint;
    WallTime created_at;
    std::optional<WallTime> expires_at;
    std::optional<WallTime> archived_at;
    std::uint64_t sequence = 0;
  };
  struct Tunnel {
    std::string id;
    std::string organization_id;
    std::string workspace_id;
    std::optional<std::string> display_name;
    std::string domain;
    std::string connector_id;  // the "t" of the connector token, stable across rotations
    WallTime created_at;
    std::optional<WallTime> archived_at;
    std::uint64_t sequence = 0;
    std::vector<TokenVersion> tokens;  // the last one is current unless the tunnel is archived
    std::vector<std::string> certificate_ids;  // registration order
    std::vector<ActiveCountChange> active_history;
    int max_active_certificates = 0;
  };

  // The caller's access token, or the 401/403 reply.
  const AccessToken* authenticate_locked(const Caller& caller, ApiReply* error) const;
  // The caller's organization's tunnel, or the 404 reply.
  Tunnel* find_tunnel_locked(const AccessToken& access, const std::string& tunnel_id,
                             ApiReply* error);
  // Both: the tunnel the caller may act on, or the 401/403/404 reply.
  Tunnel* callers_tunnel_locked(const Caller& caller, const std::string& tunnel_id,
                                ApiReply* error);
  // That tunnel's certificate, or the 404 reply.
  Certificate* find_certificate_locked(const Tunnel& tunnel, const std::string& certificate_id,
                                       ApiReply* error);
  int active_certificates_locked(const Tunnel& tunnel) const;
  void note_active_change_locked(Tunnel& tunnel, std::string event,
                                 const std::string& certificate_id);
  TokenVersion new_token_version_locked(const Tunnel& tunnel, int version);

  std::string random_hex(std::size_t chars);
  std::string unique_hex(std::size_t chars);
  std::string new_id(const char* prefix);
  std::string new_uuid();
  std::string timestamp(WallTime t) const;
  nlohmann::json render_tunnel(const Tunnel& tunnel) const;
  nlohmann::json render_certificate(const Certificate& certificate) const;
  nlohmann::json render_rule(const FederationRule& rule) const;

  TunnelOptions options_;
  Clock& clock_;
  RandomSource& random_;
  const CaInspector& inspector_;
  OidcVerifier verifier_;
  mutable std::mutex mutex_;
  std::uint64_t sequence_ = 0;
  std::map<std::string, std::shared_ptr<KeySource>> issuers_;
  std::map<std::string, Organization> organizations_;
  std::map<std::string, FederationRule> rules_;
  std::map<std::string, AccessToken> access_tokens_;
  std::map<std::string, Tunnel> tunnels_;
  std::map<std::string, Certificate> certificates_;
  std::set<std::string> domains_ever_allocated_;
};

}  // namespace perimeter::sim
