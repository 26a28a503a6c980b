#include "sim/tunnels.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "core/base64.h"
#include "core/time_format.h"
#include "pki/hmac.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

constexpr std::string_view kGrantType = "urn:ietf:params:oauth:grant-type:jwt-bearer";
constexpr std::string_view kTunnelsScope = "workspace:manage_tunnels";
constexpr std::string_view kAccessTokenPrefix = "sk-ant-oat01-";

// RFC 6749 §5.2: the token endpoint's errors are OAuth errors, not the API's error shape.
ApiReply oauth_error(int status, std::string_view code, std::string_view description) {
  return json_reply(status, {{"error", code}, {"error_description", description}});
}

ApiReply bad_request(const std::string& message) {
  return error_reply(400, "invalid_request_error", message);
}

bool subject_matches(const std::vector<std::string>& patterns, const std::string& subject) {
  for (const std::string& pattern : patterns) {
    if (!pattern.empty() && pattern.back() == '*') {
      if (subject.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0) return true;
    } else if (pattern == subject) {
      return true;
    }
  }
  return false;
}

// A string member that must be present and non-empty; sets `error` otherwise.
std::optional<std::string> required_string(const json& body, const char* name, std::string* error) {
  if (!body.contains(name) || !body[name].is_string() || body[name].get<std::string>().empty()) {
    *error = std::string(name) + " is required and must be a non-empty string";
    return std::nullopt;
  }
  return body[name].get<std::string>();
}

std::size_t count_occurrences(const std::string& text, std::string_view needle) {
  std::size_t count = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++count;
  }
  return count;
}

// Cursor paging over ids in display order: the page cursor is the id of the page's first element.
template <typename Render>
ApiReply page_of(const std::vector<std::string>& ids, int limit, const std::string& page,
                 Render render) {
  std::size_t start = 0;
  if (!page.empty()) {
    const auto it = std::find(ids.begin(), ids.end(), page);
    if (it == ids.end()) return bad_request("page `" + page + "` is not a valid cursor");
    start = static_cast<std::size_t>(it - ids.begin());
  }
  json data = json::array();
  std::size_t i = start;
  for (; i < ids.size() && data.size() < static_cast<std::size_t>(limit); ++i) {
    data.push_back(render(ids[i]));
  }
  return json_reply(200,
                    {{"data", data}, {"next_page", i < ids.size() ? json(ids[i]) : json(nullptr)}});
}

}  // namespace

TunnelService::TunnelService(TunnelOptions options, Clock& clock, RandomSource& random,
                             const CaInspector& inspector)
    : options_(std::move(options)),
      clock_(clock),
      random_(random),
      inspector_(inspector),
      verifier_(clock) {}

std::string TunnelService::random_hex(std::size_t chars) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  while (out.size() < chars) {
    out += kHex[static_cast<int>(random_.uniform01() * 16) & 15];
  }
  return out;
}

std::string TunnelService::unique_hex(std::size_t chars) {
  // Random for unguessability, with a counter at the end so that even a fake random source never
  // yields the same value twice.
  char counter[16];
  std::snprintf(counter, sizeof counter, "%08llx", static_cast<unsigned long long>(++sequence_));
  return random_hex(chars > 8 ? chars - 8 : 0) + counter;
}

std::string TunnelService::new_id(const char* prefix) {
  // A counter keeps ids unique under a fake random source; the random part keeps them unguessable.
  char counter[16];
  std::snprintf(counter, sizeof counter, "%06llu", static_cast<unsigned long long>(++sequence_));
  return std::string(prefix) + counter + random_hex(18);
}

std::string TunnelService::new_uuid() {
  std::string hex = unique_hex(32);
  hex[12] = '4';
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

std::string TunnelService::timestamp(WallTime t) const {
  return format_rfc3339_micros(t);
}

json TunnelService::render_tunnel(const Tunnel& tunnel) const {
  return {
      {"type", "tunnel"},
      {"id", tunnel.id},
      {"display_name", tunnel.display_name ? json(*tunnel.display_name) : json(nullptr)},
      {"domain", tunnel.domain},
      {"created_at", timestamp(tunnel.created_at)},
      {"archived_at", tunnel.archived_at ? json(timestamp(*tunnel.archived_at)) : json(nullptr)}};
}

json TunnelService::render_certificate(const Certificate& certificate) const {
  return {{"type", "tunnel_certificate"},
          {"id", certificate.id},
          {"tunnel_id", certificate.tunnel_id},
          {"fingerprint", certificate.fingerprint},
          {"created_at", timestamp(certificate.created_at)},
          {"expires_at",
           certificate.expires_at ? json(timestamp(*certificate.expires_at)) : json(nullptr)},
          {"archived_at",
           certificate.archived_at ? json(timestamp(*certificate.archived_at)) : json(nullptr)}};
}

json TunnelService::render_rule(const FederationRule& rule) const {
  return {{"type", "federation_rule"},
          {"id", rule.id},
          {"issuer", rule.issuer},
          {"audience", rule.audience},
          {"subjects", rule.subjects},
          {"organization_id", rule.organization_id},
          {"service_account_id", rule.service_account_id},
          {"workspace_ids", rule.workspace_ids},
          {"scope", rule.scope},
          {"created_at", timestamp(rule.created_at)}};
}

// ---- admin ----

void TunnelService::register_issuer(const std::string& issuer, std::shared_ptr<KeySource> keys) {
  std::lock_guard lock(mutex_);
  issuers_[issuer] = std::move(keys);
}

ApiReply TunnelService::create_organization(const json& body) {
  if (!body.is_object()) return bad_request("body must be a JSON object");
  for (const char* name : {"id", "name"}) {
    if (body.contains(name) && !body[name].is_string()) {
      return bad_request(std::string(name) + " must be a string");
    }
  }
  std::lock_guard lock(mutex_);
  Organization organization;
  organization.id = body.value("id", "");
  if (organization.id.empty()) organization.id = new_uuid();
  organization.name = body.value("name", "");
  if (organizations_.count(organization.id)) {
    return error_reply(409, "conflict_error",
                       "organization `" + organization.id + "` already exists");
  }
  organizations_[organization.id] = organization;
  return json_reply(
      201, {{"type", "organization"}, {"id", organization.id}, {"name", organization.name}});
}

ApiReply TunnelService::create_federation_rule(const json& body) {
  if (!body.is_object()) return bad_request("body must be a JSON object");
  std::string error;
  FederationRule rule;
  auto issuer = required_string(body, "issuer", &error);
  auto audience = issuer ? required_string(body, "audience", &error) : std::nullopt;
  auto organization = audience ? required_string(body, "organization_id", &error) : std::nullopt;
  if (!organization) return bad_request(error);
  rule.issuer = *issuer;
  rule.audience = *audience;
  rule.organization_id = *organization;
  if (body.contains("subjects")) {
    if (!body["subjects"].is_array() || body["subjects"].empty()) {
      return bad_request("subjects must be a non-empty array of strings");
    }
    for (const auto& subject : body["subjects"]) {
      if (!subject.is_string() || subject.get<std::string>().empty()) {
        return bad_request("subjects must be a non-empty array of strings");
      }
      rule.subjects.push_back(subject.get<std::string>());
    }
  } else if (auto subject = required_string(body, "subject", &error)) {
    rule.subjects.push_back(*subject);
  } else {
    return bad_request("subjects (an array) or subject is required");
  }
  if (body.contains("workspace_ids")) {
    if (!body["workspace_ids"].is_array() || body["workspace_ids"].empty()) {
      return bad_request("workspace_ids must be a non-empty array of strings");
    }
    for (const auto& workspace : body["workspace_ids"]) {
      if (!workspace.is_string() || workspace.get<std::string>().empty()) {
        return bad_request("workspace_ids must be a non-empty array of strings");
      }
      rule.workspace_ids.push_back(workspace.get<std::string>());
    }
  } else {
    rule.workspace_ids = {"default"};
  }
  for (const char* name : {"service_account_id", "scope"}) {
    if (body.contains(name) && !body[name].is_string()) {
      return bad_request(std::string(name) + " must be a string");
    }
  }
  rule.scope = body.value("scope", std::string(kTunnelsScope));
  std::lock_guard lock(mutex_);
  if (!issuers_.count(rule.issuer)) {
    return bad_request("issuer `" + rule.issuer +
                       "` is not registered (start the simulator with --oidc-issuer-url, or "
                       "POST /admin/federation_issuers)");
  }
  if (!organizations_.count(rule.organization_id)) {
    return error_reply(404, "not_found_error",
                       "organization `" + rule.organization_id + "` was not found");
  }
  rule.service_account_id = body.value("service_account_id", "");
  if (rule.service_account_id.empty()) rule.service_account_id = new_id("svac_");
  rule.id = new_id("fdrl_");
  rule.created_at = clock_.wall_now();
  rules_[rule.id] = rule;
  return json_reply(201, render_rule(rule));
}

ApiReply TunnelService::mint_access_token(const json& body) {
  if (!body.is_object()) return bad_request("body must be a JSON object");
  std::string error;
  auto organization = required_string(body, "organization_id", &error);
  if (!organization) return bad_request(error);
  for (const char* name : {"workspace_id", "scope"}) {
    if (body.contains(name) && !body[name].is_string()) {
      return bad_request(std::string(name) + " must be a string");
    }
  }
  std::int64_t ttl = options_.access_token_ttl.count();
  if (body.contains("ttl_seconds")) {
    if (!body["ttl_seconds"].is_number_integer() || body["ttl_seconds"].get<std::int64_t>() < 1) {
      return bad_request("ttl_seconds must be a positive integer");
    }
    ttl = body["ttl_seconds"].get<std::int64_t>();
  }
  std::lock_guard lock(mutex_);
  if (!organizations_.count(*organization)) {
    return error_reply(404, "not_found_error",
                       "organization `" + *organization + "` was not found");
  }
  AccessToken access{*organization,
                     body.value("workspace_id", "default"),
                     "",
                     "",
                     body.value("scope", std::string(kTunnelsScope)),
                     clock_.now() + std::chrono::seconds(ttl)};
  const std::string token = std::string(kAccessTokenPrefix) + unique_hex(48);
  access_tokens_[token] = access;
  return json_reply(200, {{"access_token", token},
                          {"token_type", "Bearer"},
                          {"expires_in", ttl},
                          {"scope", access.scope}});
}

ApiReply TunnelService::admin_list_tunnels(const std::string& organization_id) const {
  std::lock_guard lock(mutex_);
  std::vector<const Tunnel*> tunnels;
  for (const auto& [id, tunnel] : tunnels_) {
    if (organization_id.empty() || tunnel.organization_id == organization_id) {
      tunnels.push_back(&tunnel);
    }
  }
  std::sort(tunnels.begin(), tunnels.end(),
            [](const Tunnel* a, const Tunnel* b) { return a->sequence > b->sequence; });
  json data = json::array();
  for (const Tunnel* tunnel : tunnels) {
    json entry = render_tunnel(*tunnel);
    entry["organization_id"] = tunnel->organization_id;
    entry["active_certificates"] = active_certificates_locked(*tunnel);
    data.push_back(entry);
  }
  return json_reply(200, {{"data", data}});
}

ApiReply TunnelService::admin_tunnel(const std::string& tunnel_id) const {
  std::lock_guard lock(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) {
    return error_reply(404, "not_found_error", "tunnel `" + tunnel_id + "` was not found");
  }
  const Tunnel& tunnel = it->second;
  json tokens = json::array();
  for (const TokenVersion& version : tunnel.tokens) {
    tokens.push_back(
        {{"version", version.version},
         {"id", version.id},
         {"token_sha256", pki::sha256_hex(version.secret)},
         {"created_at", timestamp(version.created_at)},
         {"retired_at", version.retired_at ? json(timestamp(*version.retired_at)) : json(nullptr)},
         {"retired_because", version.retired_because},
         {"rotation_reason", version.rotation_reason}});
  }
  json certificates = json::array();
  for (const std::string& id : tunnel.certificate_ids) {
    certificates.push_back(render_certificate(certificates_.at(id)));
  }
  json history = json::array();
  for (const ActiveCountChange& change : tunnel.active_history) {
    history.push_back({{"at", timestamp(change.at)},
                       {"count", change.count},
                       {"event", change.event},
                       {"certificate_id", change.certificate_id}});
  }
  const bool live = !tunnel.archived_at && !tunnel.tokens.empty();
  return json_reply(200,
                    {{"tunnel", render_tunnel(tunnel)},
                     {"organization_id", tunnel.organization_id},
                     {"workspace_id", tunnel.workspace_id},
                     {"token_version", live ? json(tunnel.tokens.back().version) : json(nullptr)},
                     {"token_versions", tokens},
                     {"certificates", certificates},
                     {"active_certificates", active_certificates_locked(tunnel)},
                     {"max_active_certificates", tunnel.max_active_certificates},
                     {"active_certificate_history", history}});
}

ApiReply TunnelService::admin_connect(const std::string& tunnel_id, const json& body) const {
  if (!body.is_object() || !body.contains("tunnel_token") || !body["tunnel_token"].is_string()) {
    return bad_request("body must be {\"tunnel_token\": \"...\"}");
  }
  const std::string presented = body["tunnel_token"].get<std::string>();
  std::lock_guard lock(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) {
    return error_reply(404, "not_found_error", "tunnel `" + tunnel_id + "` was not found");
  }
  const Tunnel& tunnel = it->second;
  json answer = {{"accepted", false}, {"version", nullptr}, {"reason", ""}};
  for (const TokenVersion& version : tunnel.tokens) {
    if (version.secret != presented) continue;
    answer["version"] = version.version;
    if (tunnel.archived_at) {
      answer["reason"] = "the tunnel is archived";
    } else if (version.retired_at) {
      answer["reason"] = "the token was " + version.retired_because;
    } else {
      answer["accepted"] = true;
    }
    return json_reply(200, answer);
  }
  answer["reason"] = "the token is not one of this tunnel's";
  return json_reply(200, answer);
}

void TunnelService::reset_tunnels() {
  std::lock_guard lock(mutex_);
  tunnels_.clear();
  certificates_.clear();
  access_tokens_.clear();
}

// ---- the token exchange ----

ApiReply TunnelService::exchange_token(const json& body) {
  if (!body.is_object()) return oauth_error(400, "invalid_request", "body must be a JSON object");
  if (!body.contains("grant_type") || !body["grant_type"].is_string()) {
    return oauth_error(400, "invalid_request", "grant_type is required");
  }
  if (body["grant_type"].get<std::string>() != kGrantType) {
    return oauth_error(400, "unsupported_grant_type",
                       "grant_type must be " + std::string(kGrantType));
  }
  std::string error;
  auto assertion = required_string(body, "assertion", &error);
  auto rule_id = assertion ? required_string(body, "federation_rule_id", &error) : std::nullopt;
  auto organization_id = rule_id ? required_string(body, "organization_id", &error) : std::nullopt;
  auto service_account_id =
      organization_id ? required_string(body, "service_account_id", &error) : std::nullopt;
  if (!service_account_id) return oauth_error(400, "invalid_request", error);
  std::optional<std::string> workspace_id;
  if (body.contains("workspace_id") && !body["workspace_id"].is_null()) {
    if (!body["workspace_id"].is_string() || body["workspace_id"].get<std::string>().empty()) {
      return oauth_error(400, "invalid_request", "workspace_id must be a non-empty string");
    }
    workspace_id = body["workspace_id"].get<std::string>();
  }
  if (assertion->size() > options_.max_assertion_bytes) {
    return oauth_error(400, "invalid_request", "the assertion exceeds the 16 KiB limit");
  }

  FederationRule rule;
  std::shared_ptr<KeySource> keys;
  {
    std::lock_guard lock(mutex_);
    auto it = rules_.find(*rule_id);
    if (it == rules_.end() || it->second.organization_id != *organization_id) {
      return oauth_error(401, "invalid_grant",
                         "federation rule `" + *rule_id + "` was not found in organization `" +
                             *organization_id + "`");
    }
    rule = it->second;
    keys = issuers_.at(rule.issuer);
  }
  if (rule.service_account_id != *service_account_id) {
    return oauth_error(401, "invalid_grant",
                       "service account `" + *service_account_id +
                           "` is not the target of federation rule `" + rule.id + "`");
  }
  std::string workspace;
  if (workspace_id) {
    if (std::find(rule.workspace_ids.begin(), rule.workspace_ids.end(), *workspace_id) ==
        rule.workspace_ids.end()) {
      return oauth_error(
          401, "invalid_grant",
          "federation rule `" + rule.id + "` is not enabled for workspace `" + *workspace_id + "`");
    }
    workspace = *workspace_id;
  } else if (rule.workspace_ids.size() == 1) {
    workspace = rule.workspace_ids.front();
  } else {
    return oauth_error(400, "invalid_request",
                       "federation rule `" + rule.id +
                           "` is enabled for several workspaces: workspace_id is required");
  }

  // The lock is not held here: the key source may fetch the issuer's keys over the network.
  const JwtVerification verified = verifier_.verify(*assertion, rule.issuer, rule.audience, *keys);
  if (!verified.ok()) return oauth_error(401, "invalid_grant", verified.error);
  if (!subject_matches(rule.subjects, verified.jwt->subject)) {
    return oauth_error(401, "invalid_grant",
                       "the assertion's subject `" + verified.jwt->subject +
                           "` is not allowed by federation rule `" + rule.id + "`");
  }

  std::lock_guard lock(mutex_);
  const std::string token = std::string(kAccessTokenPrefix) + unique_hex(48);
  access_tokens_[token] = AccessToken{rule.organization_id,
                                      workspace,
                                      rule.service_account_id,
                                      rule.id,
                                      rule.scope,
                                      clock_.now() + options_.access_token_ttl};
  return json_reply(200, {{"access_token", token},
                          {"token_type", "Bearer"},
                          {"expires_in", options_.access_token_ttl.count()},
                          {"scope", rule.scope}});
}

// ---- the Tunnels API ----

const TunnelService::AccessToken* TunnelService::authenticate_locked(const Caller& caller,
                                                                     ApiReply* error) const {
  if (caller.token.rfind("sk-ant-admin", 0) == 0) {
    *error = error_reply(401, "authentication_error",
                         "the Tunnels API does not accept Admin API keys: exchange a workload "
                         "identity token at /v1/oauth/token");
    return nullptr;
  }
  auto it = access_tokens_.find(caller.token);
  if (it == access_tokens_.end()) {
    *error = error_reply(401, "authentication_error", "invalid access token");
    return nullptr;
  }
  if (clock_.now() >= it->second.expires_at) {
    *error = error_reply(401, "authentication_error", "the access token has expired");
    return nullptr;
  }
  const std::string& scope = it->second.scope;
  if (scope.find(kTunnelsScope) == std::string::npos) {
    *error = error_reply(403, "permission_error",
                         "the access token lacks the scope " + std::string(kTunnelsScope));
    return nullptr;
  }
  if (caller.workspace_header && *caller.workspace_header != it->second.workspace_id) {
    *error = error_reply(403, "permission_error",
                         "the access token is scoped to workspace `" + it->second.workspace_id +
                             "`; anthropic-workspace-id cannot select another");
    return nullptr;
  }
  return &it->second;
}

TunnelService::Tunnel* TunnelService::find_tunnel_locked(const AccessToken& access,
                                                         const std::string& tunnel_id,
                                                         ApiReply* error) {
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end() || it->second.organization_id != access.organization_id) {
    *error = error_reply(404, "not_found_error", "tunnel `" + tunnel_id + "` was not found");
    return nullptr;
  }
  return &it->second;
}

TunnelService::Tunnel* TunnelService::callers_tunnel_locked(const Caller& caller,
                                                            const std::string& tunnel_id,
                                                            ApiReply* error) {
  const AccessToken* access = authenticate_locked(caller, error);
  return access != nullptr ? find_tunnel_locked(*access, tunnel_id, error) : nullptr;
}

TunnelService::Certificate* TunnelService::find_certificate_locked(
    const Tunnel& tunnel, const std::string& certificate_id, ApiReply* error) {
  auto it = certificates_.find(certificate_id);
  if (it == certificates_.end() || it->second.tunnel_id != tunnel.id) {
    *error =
        error_reply(404, "not_found_error", "certificate `" + certificate_id + "` was not found");
    return nullptr;
  }
  return &it->second;
}

int TunnelService::active_certificates_locked(const Tunnel& tunnel) const {
  int active = 0;
  for (const std::string& id : tunnel.certificate_ids) {
    if (!certificates_.at(id).archived_at) ++active;
  }
  return active;
}

void TunnelService::note_active_change_locked(Tunnel& tunnel, std::string event,
                                              const std::string& certificate_id) {
  const int count = active_certificates_locked(tunnel);
  tunnel.max_active_certificates = std::max(tunnel.max_active_certificates, count);
  tunnel.active_history.push_back({clock_.wall_now(), count, std::move(event), certificate_id});
}

TunnelService::TokenVersion TunnelService::new_token_version_locked(const Tunnel& tunnel,
                                                                    int version) {
  // Shaped like a cloudflared connector token: base64 of {"a": account, "t": tunnel, "s": secret}.
  const json payload = {{"a", pki::sha256_hex(tunnel.organization_id).substr(0, 32)},
                        {"t", tunnel.connector_id},
                        {"s", base64_encode(unique_hex(64))}};
  TokenVersion token;
  token.version = version;
  token.id = new_id("tntok_");
  token.secret = base64_encode(payload.dump());
  token.created_at = clock_.wall_now();
  return token;
}

ApiReply TunnelService::create_tunnel(const Caller& caller, const json& body) {
  if (!body.is_object()) return bad_request("body must be a JSON object");
  std::optional<std::string> display_name;
  if (body.contains("display_name") && !body["display_name"].is_null()) {
    if (!body["display_name"].is_string()) return bad_request("display_name must be a string");
    display_name = body["display_name"].get<std::string>();
    if (display_name->empty() || display_name->size() > 255) {
      return bad_request("display_name must be 1-255 characters");
    }
  }
  std::lock_guard lock(mutex_);
  ApiReply error;
  const AccessToken* access = authenticate_locked(caller, &error);
  if (!access) return error;
  int active = 0;
  for (const auto& [id, tunnel] : tunnels_) {
    if (tunnel.organization_id == access->organization_id && !tunnel.archived_at) ++active;
  }
  if (active >= options_.max_active_tunnels_per_organization) {
    return bad_request("the organization has reached its limit of " +
                       std::to_string(options_.max_active_tunnels_per_organization) +
                       " active tunnels; archive one before creating another");
  }
  Tunnel tunnel;
  tunnel.id = new_id("tnl_");
  tunnel.organization_id = access->organization_id;
  tunnel.workspace_id = access->workspace_id;
  tunnel.display_name = display_name;
  do {
    tunnel.domain = unique_hex(16) + "." + options_.domain_suffix;
  } while (domains_ever_allocated_.count(tunnel.domain));
  domains_ever_allocated_.insert(tunnel.domain);
  tunnel.connector_id = new_uuid();
  tunnel.created_at = clock_.wall_now();
  tunnel.sequence = ++sequence_;
  tunnel.tokens.push_back(new_token_version_locked(tunnel, 1));
  tunnel.active_history.push_back({tunnel.created_at, 0, "tunnel created", ""});
  tunnels_[tunnel.id] = tunnel;
  return json_reply(200, render_tunnel(tunnel));
}

ApiReply TunnelService::retrieve_tunnel(const Caller& caller, const std::string& tunnel_id) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  return json_reply(200, render_tunnel(*tunnel));
}

ApiReply TunnelService::list_tunnels(const Caller& caller, bool include_archived, int limit,
                                     const std::string& page) {
  if (limit == 0) limit = options_.default_page_size;
  if (limit < 1 || limit > options_.max_page_size) {
    return bad_request("limit must be between 1 and " + std::to_string(options_.max_page_size));
  }
  std::lock_guard lock(mutex_);
  ApiReply error;
  const AccessToken* access = authenticate_locked(caller, &error);
  if (!access) return error;
  std::vector<const Tunnel*> visible;
  for (const auto& [id, tunnel] : tunnels_) {
    if (tunnel.organization_id != access->organization_id) continue;
    if (tunnel.archived_at && !include_archived) continue;
    visible.push_back(&tunnel);
  }
  std::sort(visible.begin(), visible.end(),
            [](const Tunnel* a, const Tunnel* b) { return a->sequence > b->sequence; });
  std::vector<std::string> ids;
  ids.reserve(visible.size());
  for (const Tunnel* tunnel : visible) ids.push_back(tunnel->id);
  return page_of(ids, limit, page,
                 [this](const std::string& id) { return render_tunnel(tunnels_.at(id)); });
}

ApiReply TunnelService::reveal_token(const Caller& caller, const std::string& tunnel_id) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  if (tunnel->archived_at) {
    return error_reply(409, "conflict_error",
                       "tunnel `" + tunnel_id + "` is archived: its token is invalidated");
  }
  const TokenVersion& current = tunnel->tokens.back();
  return json_reply(
      200, {{"type", "tunnel_token"}, {"id", current.id}, {"tunnel_token", current.secret}});
}

ApiReply TunnelService::rotate_token(const Caller& caller, const std::string& tunnel_id,
                                     const json& body) {
  if (!body.is_object()) return bad_request("body must be a JSON object");
  std::string reason;
  if (body.contains("reason") && !body["reason"].is_null()) {
    if (!body["reason"].is_string()) return bad_request("reason must be a string");
    reason = body["reason"].get<std::string>();
  }
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  if (tunnel->archived_at) {
    return error_reply(409, "conflict_error",
                       "tunnel `" + tunnel_id + "` is archived: its token cannot be rotated");
  }
  TokenVersion& previous = tunnel->tokens.back();
  previous.retired_at = clock_.wall_now();
  previous.retired_because = "rotated";
  TokenVersion next = new_token_version_locked(*tunnel, previous.version + 1);
  next.rotation_reason = reason;
  tunnel->tokens.push_back(next);
  return json_reply(200,
                    {{"type", "tunnel_token"}, {"id", next.id}, {"tunnel_token", next.secret}});
}

ApiReply TunnelService::archive_tunnel(const Caller& caller, const std::string& tunnel_id) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  // Archiving again returns the record unchanged (the SDK's documentation says so).
  if (tunnel->archived_at) return json_reply(200, render_tunnel(*tunnel));
  const WallTime now = clock_.wall_now();
  tunnel->archived_at = now;
  TokenVersion& current = tunnel->tokens.back();
  current.retired_at = now;
  current.retired_because = "invalidated by archiving the tunnel";
  for (const std::string& id : tunnel->certificate_ids) {
    Certificate& certificate = certificates_.at(id);
    if (!certificate.archived_at) certificate.archived_at = now;
  }
  note_active_change_locked(*tunnel, "tunnel archived", "");
  return json_reply(200, render_tunnel(*tunnel));
}

ApiReply TunnelService::create_certificate(const Caller& caller, const std::string& tunnel_id,
                                           const json& body) {
  if (!body.is_object() || !body.contains("ca_certificate_pem") ||
      !body["ca_certificate_pem"].is_string()) {
    return bad_request("ca_certificate_pem is required and must be a string");
  }
  const std::string pem = body["ca_certificate_pem"].get<std::string>();
  {
    std::lock_guard lock(mutex_);
    ApiReply error;
    Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
    if (!tunnel) return error;
    if (tunnel->archived_at) {
      return error_reply(409, "conflict_error", "tunnel `" + tunnel_id + "` is archived");
    }
  }
  if (pem.size() > options_.max_ca_pem_bytes) {
    return bad_request("ca_certificate_pem is " + std::to_string(pem.size()) + " bytes; at most " +
                       std::to_string(options_.max_ca_pem_bytes) + " are accepted");
  }
  if (pem.find("PRIVATE KEY") != std::string::npos) {
    return bad_request("ca_certificate_pem must not contain private-key material");
  }
  if (count_occurrences(pem, "-----BEGIN CERTIFICATE-----") != 1) {
    return bad_request("ca_certificate_pem must contain exactly one PEM certificate");
  }
  // Parsing and the CA rules, outside the lock: they touch no state.
  const CaInspection inspection = inspector_.inspect(pem);
  if (inspection.violation) {
    return bad_request("the CA certificate is not accepted: " + *inspection.violation);
  }

  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  if (tunnel->archived_at) {
    return error_reply(409, "conflict_error", "tunnel `" + tunnel_id + "` is archived");
  }
  for (const std::string& id : tunnel->certificate_ids) {
    const Certificate& existing = certificates_.at(id);
    if (!existing.archived_at && existing.fingerprint == inspection.fingerprint) {
      return error_reply(
          409, "conflict_error",
          "this CA certificate is already registered on the tunnel as `" + existing.id + "`");
    }
  }
  if (active_certificates_locked(*tunnel) >= options_.max_active_certificates) {
    return bad_request("a tunnel holds at most " +
                       std::to_string(options_.max_active_certificates) +
                       " non-archived certificates; archive one before adding another");
  }
  Certificate certificate;
  certificate.id = new_id("tcrt_");
  certificate.tunnel_id = tunnel->id;
  certificate.fingerprint = inspection.fingerprint;
  certificate.created_at = clock_.wall_now();
  certificate.expires_at = inspection.not_after;
  certificate.sequence = ++sequence_;
  certificates_[certificate.id] = certificate;
  tunnel->certificate_ids.push_back(certificate.id);
  note_active_change_locked(*tunnel, "created", certificate.id);
  return json_reply(200, render_certificate(certificate));
}

ApiReply TunnelService::retrieve_certificate(const Caller& caller, const std::string& tunnel_id,
                                             const std::string& certificate_id) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  Certificate* found = find_certificate_locked(*tunnel, certificate_id, &error);
  if (!found) return error;
  return json_reply(200, render_certificate(*found));
}

ApiReply TunnelService::list_certificates(const Caller& caller, const std::string& tunnel_id,
                                          bool include_archived, int limit,
                                          const std::string& page) {
  if (limit == 0) limit = options_.default_page_size;
  if (limit < 1 || limit > options_.max_page_size) {
    return bad_request("limit must be between 1 and " + std::to_string(options_.max_page_size));
  }
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  std::vector<std::string> ids;
  // Newest first, like the tunnel list.
  for (auto it = tunnel->certificate_ids.rbegin(); it != tunnel->certificate_ids.rend(); ++it) {
    if (!include_archived && certificates_.at(*it).archived_at) continue;
    ids.push_back(*it);
  }
  return page_of(ids, limit, page, [this](const std::string& id) {
    return render_certificate(certificates_.at(id));
  });
}

ApiReply TunnelService::archive_certificate(const Caller& caller, const std::string& tunnel_id,
                                            const std::string& certificate_id) {
  std::lock_guard lock(mutex_);
  ApiReply error;
  Tunnel* tunnel = callers_tunnel_locked(caller, tunnel_id, &error);
  if (!tunnel) return error;
  Certificate* found = find_certificate_locked(*tunnel, certificate_id, &error);
  if (!found) return error;
  Certificate& certificate = *found;
  if (!certificate.archived_at) {
    certificate.archived_at = clock_.wall_now();
    note_active_change_locked(*tunnel, "archived", certificate.id);
  }
  return json_reply(200, render_certificate(certificate));
}

}  // namespace perimeter::sim
