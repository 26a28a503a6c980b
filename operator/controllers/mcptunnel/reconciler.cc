#include "controllers/mcptunnel/reconciler.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>

#include "agentapi/api_error.h"
#include "controllers/mcptunnel/certificates.h"
#include "controllers/mcptunnel/gateway.h"
#include "core/base64.h"
#include "core/time_format.h"
#include "kube/api_error.h"
#include "runtime/conditions.h"
#include "tunnelsapi/workload_identity.h"

namespace perimeter::mcptunnel {

using nlohmann::json;
using runtime::ReconcileResult;

namespace {

constexpr const char* kReady = "Ready";
constexpr const char* kTunnelProvisioned = "TunnelProvisioned";
constexpr const char* kCredentialsReady = "CredentialsReady";
constexpr const char* kCertificateRegistered = "CertificateRegistered";
constexpr const char* kConnectorConnected = "ConnectorConnected";
constexpr const char* kRoutesResolved = "RoutesResolved";
constexpr const char* kGuardEnforced = "GuardEnforced";

// A step that failed in a way the user (or the operator's administrator) must fix: the reason and
// message go to a condition, and the McpTunnel is looked at again only on a change or a resync.
struct Blocked {
  std::string condition;
  std::string reason;
  std::string message;
};

// The status fields a merge patch must carry to turn `from` into `to` (RFC 7386): removed keys
// become null, so a field the operator no longer reports disappears.
json merge_patch_between(const json& from, const json& to) {
  if (!from.is_object() || !to.is_object()) return to;
  json patch = json::object();
  for (const auto& [key, value] : from.items()) {
    if (!to.contains(key)) patch[key] = nullptr;
  }
  for (const auto& [key, value] : to.items()) {
    if (!from.contains(key)) {
      patch[key] = value;
    } else if (from[key] != value) {
      patch[key] = value.is_object() && from[key].is_object() ? merge_patch_between(from[key], value)
                                                              : value;
    }
  }
  return patch;
}

// What an error from the Tunnels API (or the token exchange) says, for a condition message:
// the server's own words kept.
std::string describe_api_error(const std::exception& e) {
  if (const auto* oauth = dynamic_cast<const tunnelsapi::OAuthError*>(&e)) {
    return "the token exchange was refused (" + std::to_string(oauth->status()) + " " +
           oauth->error() + "): " + oauth->error_description();
  }
  if (const auto* api = dynamic_cast<const agentapi::ApiError*>(&e)) {
    return api->what();
  }
  return e.what();
}

bool is_api_status(const std::exception& e, int status) {
  const auto* api = dynamic_cast<const agentapi::ApiError*>(&e);
  return api != nullptr && api->status() == status;
}

std::string host_of_url(const std::string& url, int* port) {
  const auto scheme_end = url.find("://");
  std::string rest = scheme_end == std::string::npos ? url : url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return rest;
  try {
    *port = std::stoi(rest.substr(colon + 1));
  } catch (const std::exception&) {
    *port = 0;
  }
  return rest.substr(0, colon);
}

bool is_ipv4_literal(const std::string& host) {
  in_addr address{};
  return inet_pton(AF_INET, host.c_str(), &address) == 1;
}

}  // namespace

// One reconcile's working state: what was read, what was decided, what the status will say.
struct McpTunnelReconciler::Pass {
  json object;
  McpTunnel tunnel;
  ObjectNames names;
  std::chrono::system_clock::time_point now;
  std::unique_ptr<tunnelsapi::TunnelsApi> api;

  json status;  // the status being built (starts from the cached one)
  json conditions = json::array();
  std::optional<Blocked> blocked;

  std::string tunnel_id;
  std::string domain;
  std::string token_id;
  std::string ca_fingerprint;
  std::string registered_certificate_id;
  std::optional<McpTunnelReconciler::Verified> verified;  // fresh, from an earlier pass
  std::optional<std::chrono::system_clock::time_point> next_check;
  std::vector<ResolvedRoute> routes;
  json route_status = json::array();
  int routes_ready = 0;
  std::string upstream_ca_version;
  std::string applied_gateway_hash;  // the pod template's hash this pass applied
  int ready_replicas = 0;
  int replicas = 0;

  void wake_by(std::chrono::system_clock::time_point at) {
    if (!next_check || at < *next_check) next_check = at;
  }
  std::set<std::string> decided;  // condition types this pass determined

  void condition(const std::string& type, bool ok, const std::string& reason,
                 const std::string& message) {
    runtime::set_condition(conditions, type, ok ? "True" : "False", reason, message,
                           tunnel.generation, format_rfc3339(now));
    decided.insert(type);
  }
  bool has_condition(const std::string& type) const { return decided.contains(type); }
};

McpTunnelReconciler::McpTunnelReconciler(ReconcilerDependencies deps, ReconcilerOptions options)
    : deps_(std::move(deps)), options_(std::move(options)) {}

json McpTunnelReconciler::get_or_null(kube::ResourceClient& client, const std::string& ns,
                                      const std::string& name) {
  try {
    return client.get(ns, name);
  } catch (const kube::ApiError& e) {
    if (e.kind() == kube::ErrorKind::kNotFound) return nullptr;
    throw;
  }
}

void McpTunnelReconciler::apply(kube::ResourceClient& client, const std::string& ns,
                                const json& object) {
  kube::ApplyOptions apply_options;
  apply_options.field_manager = options_.field_manager;
  apply_options.force = true;
  client.apply(ns, object, apply_options);
}

ReconcileResult McpTunnelReconciler::reconcile(const kube::ObjectKey& key) {
  const auto cached = deps_.tunnels.get(key.str());
  if (!cached) {
    forget(key.str());
    deps_.metrics.on_deleted(key.str());
    return ReconcileResult::done();
  }
  deps_.logger.debug("reconciling", {{"mcptunnel", key.str()}});  // deleted: owner references clean up the gateway

  Pass pass;
  pass.object = *cached;
  pass.now = deps_.clock.wall_now();
  pass.status = pass.object.value("status", json::object());
  pass.conditions = pass.status.value("conditions", json::array());
  const auto& metadata = pass.object["metadata"];
  pass.tunnel.generation = metadata.value("generation", std::int64_t{0});
  pass.tunnel.name = metadata.value("name", "");
  pass.tunnel.namespace_ = metadata.value("namespace", "");
  try {
    pass.tunnel = parse_mcp_tunnel(pass.object);
  } catch (const SpecError& e) {
    pass.condition(kReady, false, "InvalidSpec", e.what());
    write_status(pass);
    throw runtime::TerminalError(e.what());
  }
  if (pass.tunnel.guard.image.empty()) pass.tunnel.guard.image = options_.default_guard_image;
  pass.names = object_names(pass.tunnel.name);
  const bool deleting = pass.object["metadata"].contains("deletionTimestamp");
  // A tunnel on its way out alerts on nothing (its gateway goes with it), however long the
  // archive takes.
  if (deleting) deps_.metrics.on_deleted(key.str());

  if (pass.tunnel.mode == CredentialsMode::kWorkloadIdentity) {
    if (deleting) return finalize(pass);
  } else if (deleting) {
    return ReconcileResult::done();
  }

  if (options_.tunnel_namespaces && !options_.tunnel_namespaces->contains(pass.tunnel.namespace_)) {
    pass.condition(kReady, false, "NamespaceNotEnabled",
                   "namespace " + pass.tunnel.namespace_ +
                       " is not one this operator serves McpTunnels in (Helm value "
                       "tunnelNamespaces, flag --tunnel-namespaces); nothing was created");
    write_status(pass);
    return ReconcileResult::done();
  }

  ReconcileResult result = pass.tunnel.mode == CredentialsMode::kManual ? reconcile_manual(pass)
                                                                        : reconcile_managed(pass);
  return result;
}

// --- WorkloadIdentity: the operator manages the hosted tunnel -------------------------------

ReconcileResult McpTunnelReconciler::reconcile_managed(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  if (const auto refusal = credentials_refusal(tunnel)) {
    pass.condition(kCredentialsReady, false, refusal->first, refusal->second);
    pass.condition(kReady, false, refusal->first, refusal->second);
    write_status(pass);
    return ReconcileResult::done();
  }
  if (add_finalizer(pass)) return ReconcileResult::done();  // the update wakes us again

  // The steps in order; each needs the one before. A failure stops the pass with the condition
  // that explains it, written before the error goes back for a retry with backoff.
  const std::vector<std::pair<const char*, void (McpTunnelReconciler::*)(Pass&)>> steps = {
      {"tunnel", &McpTunnelReconciler::ensure_tunnel},
      {"token", &McpTunnelReconciler::ensure_token},
      {"certificates", &McpTunnelReconciler::ensure_certificates},
      {"routes", &McpTunnelReconciler::resolve_routes},
      {"gateway", &McpTunnelReconciler::apply_gateway},
  };
  pass.verified = fresh_verification(pass);
  try {
    pass.api = deps_.api_factory.make(tunnel);
  } catch (const CredentialsError& e) {
    pass.condition(kCredentialsReady, false, "IdentityNotConfigured", e.what());
    pass.condition(kReady, false, "IdentityNotConfigured", e.what());
    write_status(pass);
    return ReconcileResult::done();
  }
  for (const auto& [step, run] : steps) {
    try {
      (this->*run)(pass);
    } catch (const std::exception& e) {
      forget(tunnel.key().str());
      deps_.metrics.on_failure(pass.tunnel.key().str(), step);
      std::string condition = kTunnelProvisioned;
      std::string reason = "TunnelApiError";
      if (dynamic_cast<const tunnelsapi::OAuthError*>(&e) != nullptr ||
          dynamic_cast<const tunnelsapi::WorkloadIdentityError*>(&e) != nullptr ||
          is_api_status(e, 401) || is_api_status(e, 403)) {
        condition = kCredentialsReady;
        reason = "CredentialsRefused";
      } else if (std::string(step) == "certificates") {
        condition = kCertificateRegistered;
        reason = "CertificateError";
      } else if (std::string(step) == "gateway" || std::string(step) == "routes") {
        condition = kReady;
        reason = "GatewayError";
      } else if (std::string(step) == "token") {
        condition = kCredentialsReady;
        reason = "TokenError";
      }
      const std::string message = std::string(step) + ": " + describe_api_error(e);
      pass.condition(condition, false, reason, message);
      pass.condition(kReady, false, reason, message);
      deps_.logger.warn("mcptunnel step failed", {{"mcptunnel", tunnel.key().str()},
                                                  {"step", step},
                                                  {"error", describe_api_error(e)}});
      write_status(pass);
      throw;
    }
    if (std::string(step) == "tunnel") {
      // The tunnel call needed an access token: the exchange worked.
      pass.condition(kCredentialsReady, true, "TokenExchanged",
                     "the operator's ServiceAccount token was exchanged for a Tunnels API token");
    }
    if (pass.blocked) {
      forget(tunnel.key().str());
      pass.condition(pass.blocked->condition, false, pass.blocked->reason, pass.blocked->message);
      pass.condition(kReady, false, pass.blocked->reason, pass.blocked->message);
      write_status(pass);
      return ReconcileResult::after(options_.resync);
    }
  }
  remember(pass);
  observe_gateway(pass);
  write_status(pass);
  pass.wake_by(pass.now + options_.resync);
  const auto delay = std::max(std::chrono::system_clock::duration(std::chrono::seconds(1)),
                              *pass.next_check - pass.now);
  return ReconcileResult::after(std::chrono::duration_cast<Clock::Duration>(delay));
}

std::optional<std::pair<std::string, std::string>> McpTunnelReconciler::credentials_refusal(
    const McpTunnel& tunnel) const {
  std::string why;
  const auto origin = runtime::parse_api_origin(tunnel.api_base_url, &why);
  if (!origin) {
    return std::pair<std::string, std::string>{
        "InvalidApiBaseUrl",
        "spec.credentials.apiBaseUrl '" + tunnel.api_base_url + "' is not usable: " + why};
  }
  if (!options_.allowed_api_hosts.allows(*origin)) {
    return std::pair<std::string, std::string>{
        "ApiHostNotAllowed",
        "spec.credentials.apiBaseUrl " + origin->str() +
            " is not an API host this operator sends credentials to (allowed: " +
            options_.allowed_api_hosts.describe() +
            "); an operator administrator can add it with --allowed-api-hosts"};
  }
  const auto& audience = tunnel.workload_identity.audience;
  if (!options_.allowed_audiences.contains(audience)) {
    std::string allowed;
    for (const auto& a : options_.allowed_audiences) allowed += (allowed.empty() ? "" : ", ") + a;
    return std::pair<std::string, std::string>{
        "AudienceNotAllowed",
        "spec.credentials.workloadIdentity.audience '" + audience +
            "' is not an audience this operator requests its ServiceAccount token for (allowed: " +
            allowed + "); an operator administrator can add it with --tunnel-audiences"};
  }
  return std::nullopt;
}

std::optional<McpTunnelReconciler::Verified> McpTunnelReconciler::fresh_verification(
    const Pass& pass) {
  std::lock_guard lock(verified_mutex_);
  const auto it = verified_.find(pass.tunnel.key().str());
  if (it == verified_.end() || it->second.generation != pass.tunnel.generation ||
      deps_.clock.now() - it->second.at >= options_.resync) {
    return std::nullopt;
  }
  return it->second;
}

void McpTunnelReconciler::remember(const Pass& pass) {
  if (pass.verified) return;  // keep the time of the pass that really asked the API
  std::lock_guard lock(verified_mutex_);
  verified_[pass.tunnel.key().str()] =
      Verified{pass.tunnel.generation, pass.tunnel_id,       pass.domain,
               pass.ca_fingerprint,    pass.registered_certificate_id, deps_.clock.now()};
}

void McpTunnelReconciler::forget(const std::string& key) {
  std::lock_guard lock(verified_mutex_);
  verified_.erase(key);
}

bool McpTunnelReconciler::add_finalizer(Pass& pass) {
  const auto& metadata = pass.object["metadata"];
  const json finalizers = metadata.value("finalizers", json::array());
  if (std::find(finalizers.begin(), finalizers.end(), kFinalizer) != finalizers.end()) return false;
  // A JSON patch that tests the list first, so someone else's finalizer added meanwhile is not
  // overwritten (a conflict retries).
  json operations = json::array();
  if (metadata.contains("finalizers")) {
    operations.push_back({{"op", "test"}, {"path", "/metadata/finalizers"}, {"value", finalizers}});
    operations.push_back({{"op", "add"}, {"path", "/metadata/finalizers/-"}, {"value", kFinalizer}});
  } else {
    operations.push_back(
        {{"op", "add"}, {"path", "/metadata/finalizers"}, {"value", json::array({kFinalizer})}});
  }
  deps_.tunnel_client.json_patch(pass.tunnel.namespace_, pass.tunnel.name, operations);
  return true;
}

void McpTunnelReconciler::remove_finalizer(Pass& pass) {
  const json finalizers = pass.object["metadata"].value("finalizers", json::array());
  json kept = json::array();
  for (const auto& item : finalizers) {
    if (item != kFinalizer) kept.push_back(item);
  }
  if (kept.size() == finalizers.size()) return;
  const json operations = json::array(
      {{{"op", "test"}, {"path", "/metadata/finalizers"}, {"value", finalizers}},
       {{"op", "replace"}, {"path", "/metadata/finalizers"}, {"value", kept}}});
  try {
    deps_.tunnel_client.json_patch(pass.tunnel.namespace_, pass.tunnel.name, operations);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
}

ReconcileResult McpTunnelReconciler::finalize(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  const json finalizers = pass.object["metadata"].value("finalizers", json::array());
  if (std::find(finalizers.begin(), finalizers.end(), kFinalizer) == finalizers.end()) {
    return ReconcileResult::done();
  }
  const std::string tunnel_id = pass.status.value("tunnelId", tunnel.tunnel_id);
  const json involved = pass.object;
  if (tunnel_id.empty()) {
    remove_finalizer(pass);
    return ReconcileResult::done();
  }
  if (tunnel.deletion_policy == DeletionPolicy::kRetain) {
    deps_.events.record(involved, "Normal", "TunnelRetained",
                        "deletionPolicy is Retain: the hosted tunnel " + tunnel_id + " (" +
                            pass.status.value("domain", std::string("?")) +
                            ") stays active; archive it in the Console or adopt it with "
                            "spec.tunnel.id");
    remove_finalizer(pass);
    return ReconcileResult::done();
  }
  // The spec may have changed since the tunnel was made: the identity goes only where the
  // administrator allows, even on the way out.
  if (const auto refusal = credentials_refusal(tunnel)) {
    deps_.events.record(involved, "Warning", "ArchiveRefused",
                        "the hosted tunnel " + tunnel_id + " was not archived: " +
                            refusal->second + "; archive it in the Console");
    remove_finalizer(pass);
    return ReconcileResult::done();
  }
  try {
    pass.api = deps_.api_factory.make(tunnel);
    pass.api->archive_tunnel(tunnel_id);
    deps_.metrics.on_action(pass.tunnel.key().str(), "tunnel_archived");
    deps_.events.record(involved, "Normal", "TunnelArchived",
                        "archived the hosted tunnel " + tunnel_id + " (deletionPolicy Archive)");
    remove_finalizer(pass);
    return ReconcileResult::done();
  } catch (const std::exception& e) {
    if (is_api_status(e, 404)) {
      remove_finalizer(pass);
      return ReconcileResult::done();
    }
    deps_.metrics.on_failure(pass.tunnel.key().str(), "archive");
    const auto deleted_at = parse_rfc3339(
        pass.object["metadata"].value("deletionTimestamp", std::string()));
    if (deleted_at && pass.now - *deleted_at >= options_.archive_deadline) {
      // Never hang the namespace: let go, and say loudly what is left behind.
      deps_.events.record(involved, "Warning", "ArchiveAbandoned",
                          "could not archive the hosted tunnel " + tunnel_id + " within " +
                              std::to_string(options_.archive_deadline.count()) +
                              " s (" + describe_api_error(e) +
                              "); it is still active: archive it in the Console");
      remove_finalizer(pass);
      return ReconcileResult::done();
    }
    deps_.logger.warn("archive failed; will retry",
                      {{"mcptunnel", tunnel.key().str()}, {"error", describe_api_error(e)}});
    throw;
  }
}

void McpTunnelReconciler::ensure_tunnel(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  auto& api = *pass.api;
  std::string id = pass.status.value("tunnelId", std::string());
  if (!tunnel.tunnel_id.empty()) id = tunnel.tunnel_id;
  if (pass.verified && !id.empty() && pass.verified->tunnel_id == id) {
    pass.tunnel_id = id;
    pass.domain = pass.verified->domain;
    pass.condition(kTunnelProvisioned, true, tunnel.create ? "Created" : "Adopted",
                   "tunnel " + id + " serves " + pass.domain);
    return;
  }
  std::optional<tunnelsapi::Tunnel> found;
  if (id.empty()) {
    // Never two tunnels for one resource: creation is not idempotent, so look for the one an
    // interrupted pass may have created (its display name carries our uid) before creating.
    for (auto& candidate : tunnelsapi::list_all_tunnels(api, /*include_archived=*/false)) {
      if (candidate.display_name && tunnel.owns_display_name(*candidate.display_name)) {
        found = std::move(candidate);
        deps_.metrics.on_action(pass.tunnel.key().str(), "tunnel_adopted");
        deps_.events.record(pass.object, "Normal", "TunnelAdopted",
                            "found the tunnel " + found->id + " created for this McpTunnel");
        break;
      }
    }
    if (!found) {
      found = api.create_tunnel(tunnel.display_name());
      deps_.metrics.on_action(pass.tunnel.key().str(), "tunnel_created");
      deps_.events.record(pass.object, "Normal", "TunnelCreated",
                          "created the hosted tunnel " + found->id + " (" + found->domain + ")");
    }
  } else {
    try {
      found = api.retrieve_tunnel(id);
    } catch (const std::exception& e) {
      if (!is_api_status(e, 404)) throw;
      pass.blocked = Blocked{kTunnelProvisioned, "TunnelNotFound",
                             "the tunnel " + id +
                                 " does not exist for these credentials (another organization, "
                                 "or a typo in spec.tunnel.id); a new one is never created in "
                                 "its place"};
      return;
    }
  }
  pass.tunnel_id = found->id;
  pass.domain = found->domain;
  pass.status["tunnelId"] = found->id;
  pass.status["domain"] = found->domain;
  if (found->archived()) {
    pass.blocked = Blocked{kTunnelProvisioned, "TunnelArchived",
                           "the tunnel " + found->id + " was archived on " + *found->archived_at +
                               "; archiving is irreversible: create a new McpTunnel"};
    return;
  }
  pass.condition(kTunnelProvisioned, true, tunnel.create ? "Created" : "Adopted",
                 "tunnel " + found->id + " serves " + found->domain);
  // The id is recorded before anything else is done with the tunnel.
  if (pass.object.value("status", json::object()).value("tunnelId", "") != found->id) {
    write_status(pass);
  }
}

void McpTunnelReconciler::ensure_token(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  auto& api = *pass.api;
  const json token_status = pass.status.value("token", json::object());
  const std::string recorded_id = token_status.value("id", "");
  const std::int64_t recorded_version = token_status.value("version", std::int64_t{-1});
  const json secret = get_or_null(deps_.secret_client, tunnel.namespace_, pass.names.token_secret);
  const std::string secret_token_id =
      secret.is_null() ? "" : secret["metadata"].value("annotations", json::object())
                                  .value(kAnnotationTokenId, "");

  std::optional<tunnelsapi::TunnelToken> token;
  if (!recorded_id.empty() && recorded_version < tunnel.token_version) {
    // A rotation is asked for. rotate_token is not repeatable: if an earlier pass rotated and
    // stopped before recording it, reveal_token already shows a token other than the recorded one.
    auto current = api.reveal_token(pass.tunnel_id);
    if (current.id != recorded_id) {
      token = std::move(current);
    } else {
      token = api.rotate_token(pass.tunnel_id,
                               "McpTunnel " + tunnel.key().str() + " tokenVersion " +
                                   std::to_string(tunnel.token_version));
    }
    deps_.metrics.on_action(pass.tunnel.key().str(), "token_rotated");
    deps_.events.record(pass.object, "Normal", "TokenRotated",
                        "rotated the connector token (tokenVersion " +
                            std::to_string(tunnel.token_version) + "); the gateway rolls");
  } else if (recorded_id.empty() || secret.is_null() || secret_token_id != recorded_id) {
    token = api.reveal_token(pass.tunnel_id);
  }
  if (token) {
    json token_secret = owned_secret(tunnel, pass.names.token_secret, "Opaque");
    token_secret["metadata"]["annotations"] = {{kAnnotationTokenId, token->id}};
    token_secret["data"]["token"] = base64_encode(token->tunnel_token.expose());
    apply(deps_.secret_client, tunnel.namespace_, token_secret);
    pass.token_id = token->id;
    pass.status["token"] = {{"id", token->id}, {"version", tunnel.token_version}};
  } else {
    pass.token_id = recorded_id;
  }
}

void McpTunnelReconciler::ensure_certificates(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  auto& api = *pass.api;
  json ca_secret = get_or_null(deps_.secret_client, tunnel.namespace_, pass.names.ca_secret);
  CaSecretContents contents;
  try {
    contents = read_ca_secret(ca_secret);
  } catch (const pki::PkiError& e) {
    pass.blocked = Blocked{kCertificateRegistered, "CaSecretInvalid",
                           "Secret " + pass.names.ca_secret + " does not hold a usable CA (" +
                               e.what() + "); delete it and the operator issues a new CA"};
    return;
  }
  bool ca_changed = false;
  if (!contents.current) {
    contents.current = issue_tunnel_ca(tunnel, pass.now);
    ca_changed = true;
    deps_.metrics.on_action(pass.tunnel.key().str(), "ca_issued");
  } else if (!contents.retiring && ca_rotation_due(tunnel, contents.current->certificate, pass.now)) {
    // Rotation with overlap: the new CA is registered while the old one still is, the gateway
    // moves to a certificate of the new CA, and the old CA is archived after the overlap.
    contents.retiring = contents.current->certificate;
    contents.current = issue_tunnel_ca(tunnel, pass.now);
    ca_changed = true;
    deps_.metrics.on_action(pass.tunnel.key().str(), "ca_rotated");
    deps_.events.record(pass.object, "Normal", "CaRotating",
                        "the tunnel CA expires on " +
                            format_rfc3339(contents.retiring->not_after()) +
                            "; a new CA is registered and the old one is archived after the "
                            "gateway moved to it");
  }
  if (ca_changed) {
    const json desired = build_ca_secret(tunnel, *contents.current, contents.retiring);
    if (ca_secret.is_null()) {
      try {
        deps_.secret_client.create(tunnel.namespace_, desired);
      } catch (const kube::ApiError& e) {
        // Another pass made one meanwhile: use that one next time, never two CAs at once.
        if (e.kind() == kube::ErrorKind::kAlreadyExists) throw std::runtime_error("the CA Secret appeared meanwhile; reading it again");
        throw;
      }
    } else {
      json updated = desired;
      updated["metadata"]["resourceVersion"] = ca_secret["metadata"].value("resourceVersion", "");
      deps_.secret_client.update(tunnel.namespace_, updated);
    }
  }
  const auto& ca = *contents.current;
  const std::string ca_fingerprint = ca.certificate.fingerprint_sha256();

  // Registration: find the CA by fingerprint (create_certificate is not repeatable), unless an
  // earlier pass just found it registered and nothing is being rotated.
  const bool registration_known = pass.verified && !contents.retiring && !ca_changed &&
                                  pass.verified->ca_fingerprint == ca_fingerprint &&
                                  !pass.verified->registered_certificate_id.empty();
  std::vector<tunnelsapi::TunnelCertificate> registered;
  if (registration_known) {
    registered.push_back({pass.verified->registered_certificate_id, pass.tunnel_id,
                          ca_fingerprint, "", std::nullopt, std::nullopt});
  } else {
    registered = tunnelsapi::list_all_certificates(api, pass.tunnel_id, false);
  }
  const auto find = [&registered](const std::string& fingerprint) {
    return std::find_if(registered.begin(), registered.end(),
                        [&](const auto& c) { return c.fingerprint == fingerprint; });
  };
  const std::string retiring_fingerprint =
      contents.retiring ? contents.retiring->fingerprint_sha256() : "";
  auto ours = find(ca_fingerprint);
  if (ours == registered.end()) {
    // At most two active: make room by archiving CAs this resource does not know (left by an
    // earlier setup of an adopted tunnel), never the one being retired.
    for (auto it = registered.begin(); it != registered.end() && registered.size() >= 2;) {
      if (it->fingerprint != retiring_fingerprint) {
        api.archive_certificate(pass.tunnel_id, it->id);
        deps_.metrics.on_action(pass.tunnel.key().str(), "ca_archived");
        deps_.events.record(pass.object, "Normal", "ForeignCaArchived",
                            "archived the registered CA " + it->id +
                                " this McpTunnel did not issue, to make room for its own");
        it = registered.erase(it);
      } else {
        ++it;
      }
    }
    registered.push_back(api.create_certificate(pass.tunnel_id, ca.certificate.pem()));
    deps_.metrics.on_action(pass.tunnel.key().str(), "ca_registered");
    deps_.events.record(pass.object, "Normal", "CaRegistered",
                        "registered the tunnel CA " + registered.back().id + " (SHA-256 " +
                            ca_fingerprint + ")");
    ours = std::prev(registered.end());
  }
  const std::string registered_id = ours->id;
  pass.ca_fingerprint = ca_fingerprint;
  pass.registered_certificate_id = registered_id;
  pass.condition(kCertificateRegistered, true, "Registered",
                 "CA " + registered_id + " is registered on the tunnel");

  // The gateway's certificate.
  const json tls_secret = get_or_null(deps_.secret_client, tunnel.namespace_, pass.names.tls_secret);
  json certificate_status = pass.status.value("certificate", json::object());
  if (const auto why =
          server_certificate_due(tunnel, tls_secret, ca.certificate, pass.domain, pass.now)) {
    const auto server = issue_server_certificate(tunnel, ca, pass.domain, pass.now);
    apply(deps_.secret_client, tunnel.namespace_, build_tls_secret(tunnel, server, ca.certificate));
    deps_.metrics.on_action(pass.tunnel.key().str(), "certificate_issued");
    deps_.events.record(pass.object, "Normal", "CertificateIssued",
                        "issued the gateway certificate for *." + pass.domain + " (serial " +
                            server.certificate.serial_hex() + ", until " +
                            format_rfc3339(server.certificate.not_after()) + "): " + *why);
    // The overlap starts when the gateway's Secret first holds a certificate of the new CA.
    if (contents.retiring && !certificate_status.contains("retireAfter")) {
      certificate_status["retireAfter"] = format_rfc3339(pass.now + options_.ca_overlap);
    }
  }
  const auto leaf = read_tls_certificate(
      get_or_null(deps_.secret_client, tunnel.namespace_, pass.names.tls_secret));

  // Retire the old CA once the gateway has had the overlap to move to the new certificate.
  if (contents.retiring) {
    const auto retire_after =
        parse_rfc3339(certificate_status.value("retireAfter", std::string()));
    const auto old = find(retiring_fingerprint);
    certificate_status["retiringCertificateId"] = old == registered.end() ? "" : old->id;
    if (!retire_after) {
      certificate_status["retireAfter"] = format_rfc3339(pass.now + options_.ca_overlap);
      pass.wake_by(pass.now + options_.ca_overlap);
    } else if (pass.now < *retire_after) {
      pass.wake_by(*retire_after);
    } else {
      if (old != registered.end()) {
        api.archive_certificate(pass.tunnel_id, old->id);
        deps_.metrics.on_action(pass.tunnel.key().str(), "ca_archived");
        deps_.events.record(pass.object, "Normal", "CaRetired",
                            "archived the previous tunnel CA " + old->id);
      }
      json updated = build_ca_secret(tunnel, ca, std::nullopt);
      const json live = get_or_null(deps_.secret_client, tunnel.namespace_, pass.names.ca_secret);
      updated["metadata"]["resourceVersion"] = live["metadata"].value("resourceVersion", "");
      deps_.secret_client.update(tunnel.namespace_, updated);
      certificate_status.erase("retireAfter");
      certificate_status.erase("retiringCertificateId");
    }
  } else {
    certificate_status.erase("retireAfter");
    certificate_status.erase("retiringCertificateId");
  }

  certificate_status["caFingerprint"] = ca_fingerprint;
  certificate_status["caNotAfter"] = format_rfc3339(ca.certificate.not_after());
  certificate_status["registeredCertificateId"] = registered_id;
  if (leaf) {
    certificate_status["serial"] = leaf->serial_hex();
    certificate_status["notAfter"] = format_rfc3339(leaf->not_after());
    certificate_status["fingerprint"] = leaf->fingerprint_sha256();
    const auto renew_at = server_renewal_at(tunnel, *leaf);
    certificate_status["renewAt"] = format_rfc3339(renew_at);
    pass.wake_by(renew_at);
  }
  pass.wake_by(ca_rotation_at(tunnel, ca.certificate));
  pass.status["certificate"] = certificate_status;
}

void McpTunnelReconciler::resolve_routes(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  pass.routes.clear();
  pass.route_status = json::array();
  pass.routes_ready = 0;
  std::vector<std::string> problems;
  for (const auto& route : tunnel.routes) {
    ResolvedRoute resolved;
    resolved.name = route.name;
    std::string problem;
    if (route.service) {
      const auto& ref = *route.service;
      const auto service = deps_.services.get(tunnel.namespace_ + "/" + ref.name);
      if (!service) {
        problem = "Service " + ref.name + " does not exist";
      } else {
        const json spec = service->value("spec", json::object());
        std::optional<json> port;
        const json ports = spec.value("ports", json::array());
        for (const auto& candidate : ports) {
          if ((ref.port && candidate.value("port", 0) == *ref.port) ||
              (!ref.port_name.empty() && candidate.value("name", "") == ref.port_name)) {
            port = candidate;
            break;
          }
        }
        if (!port) {
          problem = "Service " + ref.name + " has no port " +
                    (ref.port ? std::to_string(*ref.port) : ref.port_name);
        } else {
          const int number = port->value("port", 0);
          resolved.upstream = ref.scheme + "://" + ref.name + "." + tunnel.namespace_ + ".svc." +
                              options_.cluster_domain + ":" + std::to_string(number);
          const json selector = spec.value("selector", json::object());
          for (const auto& [key, value] : selector.items()) {
            if (value.is_string()) resolved.pod_selector[key] = value.get<std::string>();
          }
          // targetPort defaults to the port; a name stays a name (the NetworkPolicy allows it).
          const json target = port->contains("targetPort") ? (*port)["targetPort"] : json(number);
          resolved.target_port = target.is_string() ? target.get<std::string>()
                                                    : std::to_string(target.get<int>());
        }
      }
    } else {
      resolved.upstream = route.url;
      const std::string host = host_of_url(route.url, &resolved.port);
      if (is_ipv4_literal(host)) resolved.ip = host;
    }
    json entry = {{"name", route.name}, {"ready", problem.empty()}};
    if (problem.empty()) {
      entry["upstream"] = resolved.upstream;
      pass.routes.push_back(std::move(resolved));
      ++pass.routes_ready;
    } else {
      entry["reason"] = problem;
      problems.push_back(route.name + ": " + problem);
    }
    pass.route_status.push_back(std::move(entry));
  }
  if (problems.empty()) {
    pass.condition(kRoutesResolved, true, "Resolved",
                   std::to_string(pass.routes_ready) + " of " +
                       std::to_string(tunnel.routes.size()) + " routes resolved");
  } else {
    std::string message;
    for (const auto& p : problems) message += (message.empty() ? "" : "; ") + p;
    pass.condition(kRoutesResolved, false, "UpstreamNotFound",
                   message + " (the other routes are served)");
  }
  // The upstream CA Secret's version rolls the gateway when its content changes.
  pass.upstream_ca_version.clear();
  if (!tunnel.upstream_ca_secret_name.empty()) {
    const json ca = get_or_null(deps_.secret_client, tunnel.namespace_,
                                tunnel.upstream_ca_secret_name);
    if (ca.is_null() || !secret_value(ca, tunnel.upstream_ca_secret_key)) {
      pass.blocked = Blocked{kRoutesResolved, "UpstreamCaMissing",
                             "spec.upstream.caSecretRef: Secret " +
                                 tunnel.upstream_ca_secret_name + " with key " +
                                 tunnel.upstream_ca_secret_key + " does not exist"};
      return;
    }
    pass.upstream_ca_version = ca["metadata"].value("resourceVersion", "");
  }
}

void McpTunnelReconciler::apply_gateway(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  GatewayInputs inputs;
  inputs.domain = pass.domain;
  inputs.routes = pass.routes;
  inputs.upstream_ca_version = pass.upstream_ca_version;
  if (tunnel.mode == CredentialsMode::kManual) {
    inputs.tls_secret_name = tunnel.manual.tls_secret_name;
    inputs.token_secret_name = tunnel.manual.token_secret_name;
    inputs.token_secret_key = tunnel.manual.token_secret_key;
  } else {
    inputs.tls_secret_name = pass.names.tls_secret;
    inputs.token_secret_name = pass.names.token_secret;
    inputs.token_secret_key = "token";
  }
  inputs.token_id = pass.token_id;
  apply(deps_.config_map_client, tunnel.namespace_, build_config_map(tunnel, inputs));
  apply(deps_.network_policy_client, tunnel.namespace_, build_network_policy(tunnel, inputs));
  if (auto budget = build_disruption_budget(tunnel)) {
    apply(deps_.disruption_budget_client, tunnel.namespace_, *budget);
  } else if (!pass.verified) {  // a verified pass of this generation removed it already
    try {
      deps_.disruption_budget_client.remove(tunnel.namespace_, pass.names.disruption_budget);
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound) throw;
    }
  }
  json deployment = build_deployment(tunnel, inputs);
  pass.applied_gateway_hash =
      deployment["spec"]["template"]["metadata"]["annotations"].value(kGatewayHashAnnotation, "");
  apply(deps_.deployment_client, tunnel.namespace_, deployment);
}

namespace {

std::string route_names(const McpTunnel& tunnel, bool with_policy) {
  std::string names;
  for (const auto& route : tunnel.routes) {
    if (route.policy.has_value() != with_policy) continue;
    names += (names.empty() ? "" : ", ") + route.name;
  }
  return names;
}

const json& pod_template(const json& deployment) {
  static const json kEmpty = json::object();
  const auto spec = deployment.find("spec");
  if (spec == deployment.end() || !spec->is_object()) return kEmpty;
  const auto found = spec->find("template");
  return found != spec->end() && found->is_object() ? *found : kEmpty;
}

bool template_has_container(const json& deployment, const std::string& name) {
  const json containers =
      pod_template(deployment).value("spec", json::object()).value("containers", json::array());
  return std::any_of(containers.begin(), containers.end(),
                     [&](const json& c) { return c.value("name", "") == name; });
}

std::string template_hash(const json& deployment) {
  return pod_template(deployment)
      .value("metadata", json::object())
      .value("annotations", json::object())
      .value(kGatewayHashAnnotation, "");
}

}  // namespace

void McpTunnelReconciler::observe_guard(Pass& pass, const json* deployment, bool rolled_out,
                                        std::int64_t updated_replicas) {
  const auto& tunnel = pass.tunnel;
  if (!tunnel.guard_enabled()) {
    if (tunnel.has_policy()) {
      pass.condition(kGuardEnforced, false, "GuardDisabled",
                     "spec.guard.enabled is false: the policies of routes " +
                         route_names(tunnel, true) +
                         " are not enforced and MCP calls are not audited");
    } else {
      pass.condition(kGuardEnforced, false, "NotConfigured",
                     "no route has a policy and spec.guard is not enabled: MCP calls pass "
                     "unfiltered and unaudited");
    }
    return;
  }
  // In force only when every replica runs this pass's pod template: an older replica (without
  // the guard, or with other listeners) still holds an edge connection and serves its routes.
  const bool current = deployment != nullptr && template_has_container(*deployment, "mcp-guard") &&
                       template_hash(*deployment) == pass.applied_gateway_hash;
  if (!current || !rolled_out) {
    pass.condition(kGuardEnforced, false, "RollingOut",
                   "perimeter-mcp-guard is not yet in every gateway replica (" +
                       std::to_string(updated_replicas) + " of " + std::to_string(pass.replicas) +
                       " updated); until then older replicas serve routes without it");
    return;
  }
  const std::string guarded = route_names(tunnel, true);
  const std::string audit = tunnel.guard.audit_level == AuditLevel::kFull ? "full" : "metadata";
  pass.condition(kGuardEnforced, true, "Enforced",
                 "perimeter-mcp-guard runs in every gateway replica: " +
                     (guarded.empty() ? std::string("no route has a policy (audit only)")
                                      : "the policies of routes " + guarded) +
                     ", audit level " + audit +
                     "; policy and audit edits reach it without a restart once the kubelet "
                     "refreshes the ConfigMap");
}

void McpTunnelReconciler::observe_gateway(Pass& pass) {
  const auto deployment =
      deps_.deployments.get(pass.tunnel.namespace_ + "/" + pass.names.deployment);
  pass.replicas = pass.tunnel.gateway.replicas;
  pass.ready_replicas = 0;
  // A new configuration (routes, token, certificate) reaches the gateway by a rolling update;
  // until every replica runs it, old replicas still serve the old routes.
  bool rolled_out = false;
  std::int64_t updated_replicas = 0;
  if (deployment) {
    const json status = deployment->value("status", json::object());
    pass.ready_replicas = status.value("readyReplicas", 0);
    updated_replicas = status.value("updatedReplicas", std::int64_t{0});
    rolled_out = status.value("observedGeneration", std::int64_t{0}) >=
                     (*deployment)["metadata"].value("generation", std::int64_t{0}) &&
                 updated_replicas == status.value("replicas", std::int64_t{0});
  }
  // A gateway pod is ready only when cloudflared's /ready says it holds an edge connection.
  if (pass.ready_replicas > 0) {
    pass.condition(kConnectorConnected, true, "Connected",
                   std::to_string(pass.ready_replicas) + " of " + std::to_string(pass.replicas) +
                       " gateway replicas hold an edge connection");
  } else {
    pass.condition(kConnectorConnected, false, "NoConnectedReplica",
                   "no gateway replica reports an edge connection yet (cloudflared /ready)");
  }
  const auto* routes = runtime::find_condition(pass.conditions, kRoutesResolved);
  const bool routes_ok = routes != nullptr && (*routes)["status"] == "True";
  if (pass.ready_replicas > 0 && routes_ok && !rolled_out) {
    pass.condition(kReady, false, "RollingOut",
                   "the gateway is rolling out its new configuration: " +
                       std::to_string(updated_replicas) + " of " +
                       std::to_string(pass.replicas) + " replicas updated");
  } else if (pass.ready_replicas > 0 && routes_ok) {
    pass.condition(kReady, true, "GatewayReady",
                   "serving " + std::to_string(pass.routes_ready) + " routes at *." + pass.domain);
  } else if (pass.ready_replicas > 0) {
    pass.condition(kReady, false, "RoutesNotResolved",
                   routes != nullptr ? routes->value("message", "") : "routes not resolved");
  } else {
    pass.condition(kReady, false, "GatewayNotReady",
                   "waiting for a gateway replica with an edge connection");
  }
  observe_guard(pass, deployment.get(), rolled_out, updated_replicas);
  pass.status["routes"] = pass.route_status;
  pass.status["routesSummary"] =
      std::to_string(pass.routes_ready) + "/" + std::to_string(pass.tunnel.routes.size());
  pass.status["replicas"] = pass.replicas;
  pass.status["readyReplicas"] = pass.ready_replicas;
  pass.status["connectedReplicas"] = pass.ready_replicas;
}

// --- Manual: the user brings the token and the certificate ----------------------------------

ReconcileResult McpTunnelReconciler::reconcile_manual(Pass& pass) {
  const auto& tunnel = pass.tunnel;
  pass.domain = tunnel.manual.domain;
  pass.status["domain"] = pass.domain;
  pass.status.erase("tunnelId");
  pass.condition(kTunnelProvisioned, true, "Manual",
                 "the tunnel for " + pass.domain + " is managed outside Perimeter");
  const json token = get_or_null(deps_.secret_client, tunnel.namespace_,
                                 tunnel.manual.token_secret_name);
  const json tls = get_or_null(deps_.secret_client, tunnel.namespace_, tunnel.manual.tls_secret_name);
  std::string problem;
  if (token.is_null() || !secret_value(token, tunnel.manual.token_secret_key)) {
    problem = "Secret " + tunnel.manual.token_secret_name + " with key " +
              tunnel.manual.token_secret_key + " does not exist";
  } else if (tls.is_null() || !secret_value(tls, "tls.crt") || !secret_value(tls, "tls.key")) {
    problem = "Secret " + tunnel.manual.tls_secret_name + " with tls.crt and tls.key does not exist";
  }
  std::optional<pki::Certificate> leaf;
  if (problem.empty()) {
    try {
      leaf = read_tls_certificate(tls);
      const auto names = leaf->dns_names();
      const bool covers = std::any_of(names.begin(), names.end(), [&](const std::string& n) {
        return n == "*." + pass.domain;
      });
      if (!covers) problem = "the certificate in " + tunnel.manual.tls_secret_name +
                             " is not for *." + pass.domain;
      else if (leaf->not_after() <= pass.now) problem = "the certificate in " +
                                                        tunnel.manual.tls_secret_name +
                                                        " expired on " +
                                                        format_rfc3339(leaf->not_after());
    } catch (const pki::PkiError& e) {
      problem = "the certificate in " + tunnel.manual.tls_secret_name + " does not parse: " +
                e.what();
    }
  }
  if (!problem.empty()) {
    pass.condition(kCredentialsReady, false, "SecretInvalid", problem);
    pass.condition(kReady, false, "SecretInvalid", problem);
    write_status(pass);
    return ReconcileResult::after(options_.resync);
  }
  pass.condition(kCredentialsReady, true, "SecretsPresent",
                 "the connector token and the server certificate come from Secrets");
  pass.condition(kCertificateRegistered, true, "Manual",
                 "the certificate's CA is registered outside Perimeter (Manual mode)");
  json certificate = {{"serial", leaf->serial_hex()},
                      {"notAfter", format_rfc3339(leaf->not_after())},
                      {"fingerprint", leaf->fingerprint_sha256()}};
  pass.status["certificate"] = certificate;
  // The token Secret's version stands for the token: the user rotating it rolls the gateway.
  pass.token_id = "secret-" + token["metadata"].value("resourceVersion", "");
  try {
    resolve_routes(pass);
    if (!pass.blocked) apply_gateway(pass);
  } catch (const std::exception& e) {
    deps_.metrics.on_failure(pass.tunnel.key().str(), "gateway");
    pass.condition(kReady, false, "GatewayError", e.what());
    write_status(pass);
    throw;
  }
  if (pass.blocked) {
    pass.condition(pass.blocked->condition, false, pass.blocked->reason, pass.blocked->message);
    pass.condition(kReady, false, pass.blocked->reason, pass.blocked->message);
    write_status(pass);
    return ReconcileResult::after(options_.resync);
  }
  observe_gateway(pass);
  write_status(pass);
  return ReconcileResult::after(options_.resync);
}

// --- status ---------------------------------------------------------------------------------

void McpTunnelReconciler::write_status(Pass& pass) {
  // Conditions the pass did not reach say Unknown rather than repeat an old answer.
  for (const char* type : {kTunnelProvisioned, kCredentialsReady, kCertificateRegistered,
                           kConnectorConnected, kRoutesResolved, kGuardEnforced}) {
    if (!pass.has_condition(type)) {
      runtime::set_condition(pass.conditions, type, "Unknown", "Pending",
                             "not determined in the latest pass", pass.tunnel.generation,
                             format_rfc3339(pass.now));
    }
  }
  if (!pass.has_condition(kReady)) {
    runtime::set_condition(pass.conditions, kReady, "Unknown", "Reconciling", "in progress",
                           pass.tunnel.generation, format_rfc3339(pass.now));
  }
  // Ready first, then the rest in a fixed order, so a reader sees the same layout every time.
  std::stable_sort(pass.conditions.begin(), pass.conditions.end(),
                   [](const json& a, const json& b) {
                     return (a.value("type", "") == kReady) > (b.value("type", "") == kReady);
                   });
  json status = pass.status;
  status["conditions"] = pass.conditions;
  status["observedGeneration"] = pass.tunnel.generation;
  // The gauges say what the status says, written or already there.
  deps_.metrics.on_status(pass.tunnel.key().str(), tunnel_status_figures(status));
  const json cached = pass.object.value("status", json::object());
  if (status == cached) return;
  const json patch = {{"status", merge_patch_between(cached, status)}};
  try {
    deps_.tunnel_client.merge_patch_status(pass.tunnel.namespace_, pass.tunnel.name, patch);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
  // What was written is now the base the next write of this pass is compared with.
  pass.object["status"] = status;
}

}  // namespace perimeter::mcptunnel
