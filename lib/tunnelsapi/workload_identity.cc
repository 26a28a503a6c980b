#include "tunnelsapi/workload_identity.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agentapi/json_fields.h"

namespace perimeter::tunnelsapi {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxErrorBodyChars = 2000;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The SDK's requireSecureTokenEndpoint: https, or http to a loopback host.
bool secure_endpoint(const std::string& base_url) {
  const std::string url = lower(base_url);
  if (url.rfind("https://", 0) == 0) return true;
  if (url.rfind("http://", 0) != 0) return false;
  std::string authority = url.substr(
      7, url.find('/', 7) == std::string::npos ? std::string::npos : url.find('/', 7) - 7);
  std::string host;
  if (!authority.empty() && authority.front() == '[') {
    host = authority.substr(1, authority.find(']') - 1);
  } else {
    host = authority.substr(0, authority.find(':'));
  }
  return host == "localhost" || host == "127.0.0.1" || host == "::1";
}

void replace_all(std::string& text, const std::string& needle, const std::string& with) {
  if (needle.empty()) return;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + with.size())) {
    text.replace(at, needle.size(), with);
  }
}

}  // namespace

OAuthError::OAuthError(int status, std::string redacted_body, std::string request_id)
    : agentapi::ApiError("oauth.token", status, std::move(redacted_body), std::move(request_id)) {
  const json& parsed = body();
  if (!parsed.is_object()) return;
  error_ = agentapi::optional_string(parsed, "error").value_or("");
  error_description_ = agentapi::optional_string(parsed, "error_description").value_or("");
  error_uri_ = agentapi::optional_string(parsed, "error_uri").value_or("");
}

std::string redact_oauth_error_body(const std::string& body, const std::string& assertion) {
  std::string out;
  const json parsed = json::parse(body, nullptr, false);
  if (parsed.is_object()) {
    json safe = json::object();
    for (const char* key : {"error", "error_description", "error_uri"}) {
      if (parsed.contains(key)) safe[key] = parsed[key];
    }
    out = safe.dump(-1, ' ', false, json::error_handler_t::replace);
  } else if (!parsed.is_discarded()) {
    out = "null";  // a JSON array or scalar: nothing in it is an RFC 6749 field
  } else if (body.size() > kMaxErrorBodyChars) {
    out = body.substr(0, kMaxErrorBodyChars) + "... <" +
          std::to_string(body.size() - kMaxErrorBodyChars) + " more chars>";
  } else {
    out = body;
  }
  replace_all(out, assertion, "<assertion>");
  return out;
}

WorkloadIdentityTokenSource::WorkloadIdentityTokenSource(
    WorkloadIdentityConfig config, std::unique_ptr<agentapi::HttpTransport> transport, Clock& clock,
    RandomSource& random, agentapi::Sleeper& sleeper, agentapi::ApiMetrics* metrics, Logger logger)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      clock_(clock),
      logger_(std::move(logger)),
      executor_(*transport_, config_.retry_backoff, random, sleeper, metrics, logger_) {
  while (!config_.base_url.empty() && config_.base_url.back() == '/') config_.base_url.pop_back();
}

Secret WorkloadIdentityTokenSource::access_token() {
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  if (cached_ && now < cached_->refresh_at) return cached_->token;
  try {
    cached_ = exchange();
  } catch (const std::exception& e) {
    if (!cached_ || now + kMinimumRemaining >= cached_->expires_at) throw;
    logger_.warn(
        "access token refresh failed; the current one is still valid, serving it",
        {{"federation_rule_id", config_.federation_rule_id},
         {"error", e.what()},
         {"expires_in_s",
          std::chrono::duration_cast<std::chrono::seconds>(cached_->expires_at - now).count()}});
  }
  return cached_->token;
}

void WorkloadIdentityTokenSource::invalidate(const Secret& rejected) {
  std::lock_guard lock(mutex_);
  if (cached_ && cached_->token == rejected) {
    cached_.reset();
    logger_.info("access token refused by the API; the next call exchanges a new one",
                 {{"federation_rule_id", config_.federation_rule_id}});
  }
}

int WorkloadIdentityTokenSource::exchanges() const {
  std::lock_guard lock(mutex_);
  return exchanges_;
}

Secret WorkloadIdentityTokenSource::read_assertion() const {
  std::string token;
  if (config_.assertion_source) {
    token = config_.assertion_source().expose();
  } else {
    std::ifstream in(config_.assertion_file, std::ios::binary);
    if (!in) {
      throw WorkloadIdentityError("cannot read the identity token file " + config_.assertion_file);
    }
    std::stringstream text;
    text << in.rdbuf();
    token = text.str();
  }
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  token.erase(token.begin(), std::find_if(token.begin(), token.end(), not_space));
  token.erase(std::find_if(token.rbegin(), token.rend(), not_space).base(), token.end());
  const std::string origin = config_.assertion_source
                                 ? std::string("the requested ServiceAccount token")
                                 : "the identity token file " + config_.assertion_file;
  if (token.empty()) throw WorkloadIdentityError(origin + " is empty");
  if (token.size() > kMaxAssertionBytes) {
    throw WorkloadIdentityError(origin + " is " +
                                std::to_string(token.size()) +
                                " bytes, over the token endpoint's 16 KiB limit");
  }
  return Secret(std::move(token));
}

WorkloadIdentityTokenSource::Cached WorkloadIdentityTokenSource::exchange() {
  if (!secure_endpoint(config_.base_url) && !config_.allow_plain_http) {
    throw WorkloadIdentityError("refusing to send an identity token to " + config_.base_url +
                                ": the token endpoint must be https (or http on loopback)");
  }
  const Secret assertion = read_assertion();
  json body = {{"grant_type", kJwtBearerGrant},
               {"assertion", assertion.expose()},
               {"federation_rule_id", config_.federation_rule_id},
               {"organization_id", config_.organization_id}};
  if (!config_.service_account_id.empty()) body["service_account_id"] = config_.service_account_id;
  if (!config_.workspace_id.empty()) body["workspace_id"] = config_.workspace_id;

  agentapi::HttpRequest request;
  request.method = "POST";
  request.url = config_.base_url + std::string(kTokenEndpoint);
  request.timeout = config_.request_timeout;
  // The SDK's oidcFederationProvider headers, exactly: no anthropic-version on this endpoint.
  request.headers = {
      {"Content-Type", "application/json"},
      {"Accept", "application/json"},
      {"anthropic-beta", std::string(kOAuthBeta) + "," + std::string(kFederationBeta)},
      {"User-Agent", config_.user_agent}};
  request.body = body.dump();

  agentapi::CallPolicy policy;
  policy.max_retries = config_.max_retries;
  agentapi::HttpResponse response;
  try {
    response = executor_.send("oauth.token", request, policy);
  } catch (const agentapi::ApiError& e) {
    logger_.warn("token exchange refused", {{"status", e.status()},
                                            {"federation_rule_id", config_.federation_rule_id},
                                            {"request_id", e.request_id()}});
    throw OAuthError(e.status(), redact_oauth_error_body(e.raw_body(), assertion.expose()),
                     e.request_id());
  }

  const auto [token, expires_in] = executor_.decode(
      "oauth.token", response,
      [](const json& object) {
        const std::string access_token =
            agentapi::require_string(object, "access_token", "token response");
        if (access_token.empty()) {
          throw agentapi::ProtocolError("token response: field `access_token` is empty");
        }
        if (!object.contains("expires_in") || !object["expires_in"].is_number() ||
            object["expires_in"].get<double>() <= 0) {
          throw agentapi::ProtocolError(
              "token response: field `expires_in` is missing or not a positive number");
        }
        if (const auto type = agentapi::optional_string(object, "token_type")) {
          if (lower(*type) != "bearer") {
            throw agentapi::ProtocolError("token response: token_type is not Bearer");
          }
        }
        return std::make_pair(Secret(access_token),
                              std::chrono::seconds(object["expires_in"].get<std::int64_t>()));
      },
      agentapi::BodyDisclosure::kWithheld);

  ++exchanges_;
  const auto margin = std::min<std::chrono::seconds>(config_.refresh_before, expires_in / 2);
  logger_.info("access token exchanged", {{"federation_rule_id", config_.federation_rule_id},
                                          {"expires_in_s", expires_in.count()}});
  const auto now = clock_.now();
  return Cached{token, now + expires_in - margin, now + expires_in};
}

}  // namespace perimeter::tunnelsapi
