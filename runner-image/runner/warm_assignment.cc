#include "runner/warm_assignment.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "agentapi/api_error.h"
#include "pki/hmac.h"

namespace perimeter::runner {

namespace {

std::string read_whole_file(const std::string& path, const char* variable) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) throw ConfigError(std::string(variable) + ": cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A token file written by hand may end with a newline; the token itself holds no space.
std::string without_surrounding_space(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return "";
  return std::string(text.substr(first, text.find_last_not_of(kSpace) - first + 1));
}

bool is_refusal(int status) {
  return status == 401 || status == 403 || status == 410;
}

}  // namespace

std::optional<WarmConfig> load_warm_config(const EnvLookup& env) {
  const std::string url = env("PERIMETER_WARM_ASSIGNMENT_URL").value_or("");
  if (url.empty()) return std::nullopt;
  // The answer carries the work secret: never over plain HTTP.
  if (url.rfind("https://", 0) != 0) {
    throw ConfigError("PERIMETER_WARM_ASSIGNMENT_URL must be an https:// URL, got '" + url + "'");
  }
  WarmConfig config;
  config.assignment_url = url;
  while (config.assignment_url.size() > 1 && config.assignment_url.back() == '/') {
    config.assignment_url.pop_back();
  }
  const std::string token_file = env("PERIMETER_WARM_TOKEN_FILE").value_or("");
  if (token_file.empty()) throw ConfigError("PERIMETER_WARM_TOKEN_FILE is required in warm mode");
  config.token =
      without_surrounding_space(read_whole_file(token_file, "PERIMETER_WARM_TOKEN_FILE"));
  if (config.token.empty())
    throw ConfigError("PERIMETER_WARM_TOKEN_FILE: " + token_file + " is empty");
  const std::string ca_file = env("PERIMETER_WARM_CA_FILE").value_or("");
  if (ca_file.empty()) throw ConfigError("PERIMETER_WARM_CA_FILE is required in warm mode");
  config.ca_pem = read_whole_file(ca_file, "PERIMETER_WARM_CA_FILE");
  return config;
}

EnvLookup with_assignment(EnvLookup env, WarmAssignment assignment) {
  return [env = std::move(env),
          assignment = std::move(assignment)](const char* name) -> std::optional<std::string> {
    const std::string_view variable(name);
    if (variable == "ANTHROPIC_WORK_ID") return assignment.work_id;
    if (variable == "ANTHROPIC_SESSION_ID") return assignment.session_id;
    if (variable == "ANTHROPIC_WORK_SECRET") return assignment.work_secret;
    return env(name);
  };
}

WarmAssignmentClient::WarmAssignmentClient(WarmConfig config, agentapi::HttpTransport& transport,
                                           StoppableSleeper& sleeper, RandomSource& random,
                                           Logger logger, RunnerMetrics* metrics,
                                           WarmAssignmentTiming timing)
    : config_(std::move(config)),
      transport_(transport),
      sleeper_(sleeper),
      random_(random),
      logger_(std::move(logger)),
      metrics_(metrics),
      timing_(timing),
      nonce_(pki::random_key_hex(32)) {}

std::optional<WarmAssignment> WarmAssignmentClient::wait(StopSource& stop) {
  Backoff backoff(timing_.retry, random_);
  std::optional<WarmAssignment> assignment;
  while (!stop.requested() && !assignment) {
    if (fetch(stop, &assignment) == Outcome::kRetry) {
      back_off(stop, backoff, "assignment request failed");
      continue;
    }
    backoff.reset();
  }
  if (!assignment) return std::nullopt;
  if (delivered_) {
    // The operator recorded the delivery before answering: the token opens nothing from now on.
    logger_.info("warm: assigned",
                 {{"work_id", assignment->work_id}, {"session_id", assignment->session_id}});
    return assignment;
  }
  // An operator of an earlier version, which records the delivery on a confirm: when the item
  // arrived, apart from when it was confirmed, the warm pod's log shows both.
  logger_.info("warm: assigned; confirming",
               {{"work_id", assignment->work_id}, {"session_id", assignment->session_id}});
  while (!stop.requested()) {
    if (confirm(stop, *assignment) == Outcome::kDone) return assignment;
    back_off(stop, backoff, "assignment confirm failed");
  }
  return std::nullopt;
}

WarmAssignmentClient::Outcome WarmAssignmentClient::fetch(
    StopSource& stop, std::optional<WarmAssignment>* assignment) {
  agentapi::HttpRequest request;
  request.method = "GET";
  request.url = config_.assignment_url + "/v1/assignment";
  request.headers = {{"Authorization", "Bearer " + config_.token},
                     {std::string(kNonceHeader), nonce_}};
  request.timeout = timing_.request_timeout;
  std::string body;
  agentapi::HttpResponse response;
  try {
    // stream(), not send(): a SIGTERM (the pool shrinking) cancels the held request at once.
    response = transport_.stream(
        request,
        [&body](std::string_view chunk) {
          body.append(chunk);
          return true;
        },
        stop.flag());
  } catch (const agentapi::TransportError& error) {
    logger_.warn("assignment request got no answer", {{"error", error.what()}});
    return Outcome::kRetry;
  }
  if (stop.requested()) return Outcome::kDone;
  if (response.status == 204) return Outcome::kDone;
  if (is_refusal(response.status)) {
    throw AssignmentRefused("the assignment service refused this pod's token (HTTP " +
                            std::to_string(response.status) + "): " + response.body);
  }
  if (response.status != 200) {
    logger_.warn("assignment request failed",
                 {{"status", response.status}, {"body", response.body.substr(0, 512)}});
    return Outcome::kRetry;
  }
  // The body holds the work secret: a parse failure names the field, never the body.
  try {
    const nlohmann::json parsed = nlohmann::json::parse(body);
    WarmAssignment result;
    result.work_id = parsed.at("work_id").get<std::string>();
    result.session_id = parsed.at("session_id").get<std::string>();
    result.work_secret = parsed.at("work_secret").get<std::string>();
    if (result.work_id.empty() || result.session_id.empty() || result.work_secret.empty()) {
      logger_.warn("assignment answer has an empty field");
      return Outcome::kRetry;
    }
    delivered_ = parsed.value("delivered", false);
    *assignment = std::move(result);
  } catch (const nlohmann::json::exception& error) {
    logger_.warn("assignment answer does not parse", {{"error_id", error.id}});
    return Outcome::kRetry;
  }
  return Outcome::kDone;
}

WarmAssignmentClient::Outcome WarmAssignmentClient::confirm(StopSource& stop,
                                                            const WarmAssignment& assignment) {
  agentapi::HttpRequest request;
  request.method = "POST";
  request.url = config_.assignment_url + "/v1/assignment/confirm";
  request.headers = {{"Authorization", "Bearer " + config_.token},
                     {"Content-Type", "application/json"}};
  request.body = nlohmann::json{{"work_id", assignment.work_id}}.dump();
  request.timeout = timing_.request_timeout;
  agentapi::HttpResponse response;
  try {
    response = transport_.stream(
        request, [](std::string_view) { return true; }, stop.flag());
  } catch (const agentapi::TransportError& error) {
    logger_.warn("assignment confirm got no answer", {{"error", error.what()}});
    return Outcome::kRetry;
  }
  if (stop.requested()) return Outcome::kDone;
  if (response.status == 204 || response.status == 200) {
    // The moment the token stops opening anything: the warm pod's log shows it.
    logger_.info("warm: confirmed", {{"work_id", assignment.work_id}});
    return Outcome::kDone;
  }
  // 409: the pod's assignment is another work id than the one we were given; nothing we hold
  // can be trusted to be ours.
  if (is_refusal(response.status) || response.status == 409) {
    throw AssignmentRefused("the assignment service refused the confirm (HTTP " +
                            std::to_string(response.status) + "): " + response.body);
  }
  logger_.warn("assignment confirm failed",
               {{"status", response.status}, {"body", response.body.substr(0, 512)}});
  return Outcome::kRetry;
}

void WarmAssignmentClient::back_off(StopSource& stop, Backoff& backoff, const std::string& why) {
  if (metrics_ != nullptr) metrics_->assignment_retry();
  const std::chrono::milliseconds delay = backoff.next();
  logger_.debug("retrying", {{"why", why}, {"delay_ms", delay.count()}});
  sleeper_.sleep_for(delay, stop);
}

}  // namespace perimeter::runner
