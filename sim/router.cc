#include "sim/router.h"

#include <cerrno>
#include <cstdlib>

#include "sim/tunnels_router.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

constexpr std::string_view kManagedAgentsBeta = "managed-agents-2026-04-01";

RouteDecision reply_with(std::string route, ApiReply reply) {
  RouteDecision decision;
  decision.route = std::move(route);
  decision.reply = std::move(reply);
  return decision;
}

ApiReply bad_request(const std::string& message) {
  return error_reply(400, "invalid_request_error", message);
}

std::optional<ApiReply> check_api_headers(const ApiRequest& request) {
  const std::string* beta = request.header("anthropic-beta");
  if (!beta || beta->find(kManagedAgentsBeta) == std::string::npos) {
    return bad_request("this endpoint requires the anthropic-beta header `" +
                       std::string(kManagedAgentsBeta) + "`");
  }
  if (!request.header("anthropic-version")) {
    return bad_request("the anthropic-version header is required");
  }
  return std::nullopt;
}

constexpr std::string_view kAgentMemoryBeta = "agent-memory-2026-07-22";

std::optional<ApiReply> check_memory_headers(const ApiRequest& request) {
  const std::string* beta = request.header("anthropic-beta");
  if (!beta || beta->find(kAgentMemoryBeta) == std::string::npos) {
    return bad_request("this endpoint requires the anthropic-beta header `" +
                       std::string(kAgentMemoryBeta) + "`");
  }
  if (!request.header("anthropic-version")) {
    return bad_request("the anthropic-version header is required");
  }
  return std::nullopt;
}

std::optional<ApiReply> parse_limit(const ApiRequest& request, int* limit) {
  *limit = 0;
  if (const std::string* text = request.query_param("limit")) {
    std::int64_t value = 0;
    if (!parse_int(*text, &value) || value < 1) {
      return bad_request("limit must be a positive integer, not `" + *text + "`");
    }
    *limit = static_cast<int>(std::min<std::int64_t>(value, 1 << 30));
  }
  return std::nullopt;
}

std::optional<json> parse_json_body(const ApiRequest& request, ApiReply* error) {
  if (request.body.empty()) return json::object();
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded()) {
    *error = bad_request("the request body is not valid JSON");
    return std::nullopt;
  }
  return body;
}

}  // namespace

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = path.empty() || path[0] != '/' ? 0 : 1;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    if (slash == std::string::npos) {
      parts.push_back(path.substr(start));
      break;
    }
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  if (!parts.empty() && parts.back().empty()) parts.pop_back();  // tolerate one trailing slash
  return parts;
}

bool parse_int(const std::string& text, std::int64_t* out) {
  if (text.empty() || text.size() > 19) return false;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || text[0] == ' ' || text[0] == '+') return false;
  *out = value;
  return true;
}

RouteDecision ApiRouter::route(const ApiRequest& request) {
  const std::vector<std::string> parts = split_path(request.path);
  if (request.method == "GET" && request.path == "/healthz") {
    return reply_with("healthz", json_reply(200, {{"status", "ok"}}));
  }
  if (request.method == "GET" && request.path == "/metrics") {
    ApiReply reply;
    reply.body = metrics_.render();
    reply.content_type = "text/plain; version=0.0.4";
    return reply_with("metrics", reply);
  }
  if (!parts.empty() && parts[0] == "admin") return route_admin(request, parts);
  if (!parts.empty() && parts[0] == "v1") return route_api(request, parts);
  return reply_with("unknown", error_reply(404, "not_found_error",
                                           "no route for " + request.method + " " + request.path));
}

RouteDecision ApiRouter::route_api(const ApiRequest& request,
                                   const std::vector<std::string>& parts) {
  const FaultConfig faults = faults_.config();
  RouteDecision decision;
  decision.latency = std::chrono::milliseconds(faults.latency_ms);
  auto finish = [&decision](std::string route, ApiReply reply) {
    decision.route = std::move(route);
    decision.reply = std::move(reply);
    return decision;
  };

  // Route name first, so faults and metrics are labelled even when the request is refused.
  const std::string& method = request.method;
  const std::size_t n = parts.size();
  std::string route = "unknown";
  const bool work_path = n >= 4 && parts[1] == "environments" && parts[3] == "work";
  const bool session_path = n >= 3 && parts[1] == "sessions";
  if (work_path && n == 4 && method == "GET") route = "work.list";
  if (work_path && n == 5 && method == "GET" && parts[4] == "poll") route = "work.poll";
  if (work_path && n == 5 && method == "GET" && parts[4] == "stats") route = "work.stats";
  if (work_path && n == 5 && method == "GET" && parts[4] != "poll" && parts[4] != "stats") {
    route = "work.retrieve";
  }
  if (work_path && n == 5 && method == "POST") route = "work.update";
  if (work_path && n == 6 && method == "POST" && parts[5] == "ack") route = "work.ack";
  if (work_path && n == 6 && method == "POST" && parts[5] == "heartbeat") route = "work.heartbeat";
  if (work_path && n == 6 && method == "POST" && parts[5] == "stop") route = "work.stop";
  if (session_path && n == 3 && method == "GET") route = "sessions.retrieve";
  if (session_path && n == 4 && parts[3] == "events" && method == "GET") route = "events.list";
  if (session_path && n == 4 && parts[3] == "events" && method == "POST") route = "events.send";
  if (session_path && n == 5 && parts[3] == "events" && parts[4] == "stream" && method == "GET") {
    route = "events.stream";
  }
  const bool skill_path =
      n >= 5 && parts[1] == "skills" && parts[3] == "versions" && method == "GET";
  if (skill_path && n == 5) route = "skills.versions.retrieve";
  if (skill_path && n == 6 && parts[5] == "content") route = "skills.versions.content";
  const bool memory_path = n >= 4 && parts[1] == "memory_stores" && parts[3] == "memories";
  if (memory_path && n == 4 && method == "GET") route = "memories.list";
  if (memory_path && n == 4 && method == "POST") route = "memories.create";
  if (memory_path && n == 5 && method == "GET") route = "memories.retrieve";
  if (memory_path && n == 5 && method == "POST") route = "memories.update";
  if (memory_path && n == 5 && method == "DELETE") route = "memories.delete";
  const std::string tunnels_route = tunnels_ ? tunnels_route_name(method, parts) : "";
  if (!tunnels_route.empty()) route = tunnels_route;
  if (route == "unknown") {
    return finish(
        route, error_reply(404, "not_found_error", "no route for " + method + " " + request.path));
  }

  if (faults_.roll(faults.reset_rate)) {
    metrics_.count_fault("reset");
    decision.kind = RouteDecision::Kind::kReset;
    decision.route = route;
    return decision;
  }
  if (faults_.roll(faults.error_5xx_rate)) {
    metrics_.count_fault("5xx");
    return finish(route, error_reply(503, "api_error", "simulated service unavailable"));
  }
  if (faults_.roll(faults.error_429_rate)) {
    metrics_.count_fault("429");
    ApiReply reply = error_reply(429, "rate_limit_error", "simulated rate limit");
    reply.headers.emplace_back("retry-after-ms", "200");
    return finish(route, reply);
  }
  if (faults_.roll(faults.non_json_rate) && route != "events.stream") {
    metrics_.count_fault("non_json");
    ApiReply reply;
    reply.body = "<html><body>502 Bad Gateway (simulated)</body></html>";
    reply.content_type =
        "application/json";  // a lying proxy: the header says JSON, the body is not
    return finish(route, reply);
  }

  if (tunnels_ != nullptr && !tunnels_route.empty()) {
    return finish(route, route_tunnels_api(*tunnels_, request, parts, route));
  }

  // The skills endpoints belong to the skills API, which the SDK calls without the managed-agents
  // beta; they only need the version header. The memory endpoints take their own beta.
  if (memory_path) {
    if (auto refused = check_memory_headers(request)) return finish(route, *refused);
  } else if (skill_path) {
    if (!request.header("anthropic-version")) {
      return finish(route, bad_request("the anthropic-version header is required"));
    }
  } else if (auto refused = check_api_headers(request)) {
    return finish(route, *refused);
  }
  std::string token;
  if (auto refused = bearer_token(request, &token,
                                  "this API takes its credential as Authorization: Bearer <token>"))
    return finish(route, *refused);
  if (memory_path) return finish(route, route_memories(request, parts, route, token));
  if (route == "skills.versions.retrieve") {
    return finish(route, simulator_.retrieve_skill_version(parts[2], parts[4], token));
  }
  if (route == "skills.versions.content") {
    return finish(route, simulator_.skill_content(parts[2], parts[4], token));
  }

  if (work_path) {
    const std::string& environment_id = parts[2];
    if (route == "work.poll") {
      std::optional<std::int64_t> block_ms;
      if (const std::string* text = request.query_param("block_ms")) {
        std::int64_t value = 0;
        if (!parse_int(*text, &value) || value < 1 || value > 999) {
          return finish(
              route, bad_request("block_ms must be an integer from 1 to 999, not `" + *text + "`"));
        }
        block_ms = value;
      }
      std::optional<std::int64_t> reclaim;
      if (const std::string* text = request.query_param("reclaim_older_than_ms")) {
        std::int64_t value = 0;
        if (!parse_int(*text, &value) || value < 0) {
          return finish(route, bad_request("reclaim_older_than_ms must be a non-negative "
                                           "integer, not `" +
                                           *text + "`"));
        }
        reclaim = value;
      }
      const std::string* worker = request.header("anthropic-worker-id");
      const std::string worker_id = worker ? *worker : "";
      const bool corrupt = faults_.roll(faults.undecodable_secret_rate);
      if (corrupt) metrics_.count_fault("undecodable_secret");
      const bool reissue = faults.reissue_secret_on_reclaim;
      auto attempt = [this, environment_id, token, worker_id, reclaim, corrupt, reissue]() {
        return simulator_.poll(environment_id, token, worker_id, reclaim, corrupt, reissue);
      };
      ApiReply first = attempt();
      if (first.status != 200 || first.body != "null" || !block_ms) return finish(route, first);
      decision.kind = RouteDecision::Kind::kLongPoll;
      decision.route = route;
      decision.environment_id = environment_id;
      decision.block = std::chrono::milliseconds(*block_ms);
      decision.retry = [attempt]() -> std::optional<ApiReply> {
        ApiReply reply = attempt();
        if (reply.status == 200 && reply.body == "null") return std::nullopt;
        return reply;
      };
      return decision;
    }
    if (route == "work.stats") return finish(route, simulator_.stats(environment_id, token));
    if (route == "work.list") {
      int limit = 0;
      if (auto refused = parse_limit(request, &limit)) return finish(route, *refused);
      const std::string* page = request.query_param("page");
      return finish(route, simulator_.list_work(environment_id, token, limit, page ? *page : ""));
    }
    const std::string& work_id = parts[4];
    if (route == "work.retrieve") {
      return finish(route, simulator_.retrieve_work(environment_id, work_id, token));
    }
    ApiReply body_error;
    std::optional<json> body = parse_json_body(request, &body_error);
    if (!body) return finish(route, body_error);
    if (route == "work.update") {
      if (!body->is_object() || !body->contains("metadata")) {
        return finish(route, bad_request("body must be {\"metadata\": {...}}"));
      }
      return finish(route, simulator_.update_work_metadata(environment_id, work_id, token,
                                                           (*body)["metadata"]));
    }
    if (route == "work.ack") return finish(route, simulator_.ack(environment_id, work_id, token));
    if (route == "work.stop") {
      bool force = false;
      if (body->is_object() && body->contains("force")) {
        if (!(*body)["force"].is_boolean() && !(*body)["force"].is_null()) {
          return finish(route, bad_request("force must be a boolean"));
        }
        force = (*body)["force"].is_boolean() && (*body)["force"].get<bool>();
      } else if (!body->is_object()) {
        return finish(route, bad_request("body must be a JSON object"));
      }
      return finish(route, simulator_.stop(environment_id, work_id, token, force));
    }
    // heartbeat
    const std::string* expected = request.query_param("expected_last_heartbeat");
    std::optional<std::int64_t> desired;
    if (const std::string* text = request.query_param("desired_ttl_seconds")) {
      std::int64_t value = 0;
      if (!parse_int(*text, &value)) {
        return finish(route,
                      bad_request("desired_ttl_seconds must be an integer, not `" + *text + "`"));
      }
      desired = value;
    }
    if (faults_.roll(faults.heartbeat_412_rate) && simulator_.steal_lease(work_id)) {
      metrics_.count_fault("heartbeat_412");
    }
    return finish(route, simulator_.heartbeat(environment_id, work_id, token,
                                              expected ? *expected : "", desired));
  }

  const std::string& session_id = parts[2];
  if (route == "sessions.retrieve") {
    return finish(route, simulator_.retrieve_session(session_id, token));
  }
  if (route == "events.list") {
    int limit = 0;
    if (auto refused = parse_limit(request, &limit)) return finish(route, *refused);
    const std::string* page = request.query_param("page");
    return finish(route, simulator_.list_events(session_id, token, limit, page ? *page : ""));
  }
  if (route == "events.send") {
    ApiReply body_error;
    std::optional<json> body = parse_json_body(request, &body_error);
    if (!body) return finish(route, body_error);
    decision.wake_session = session_id;
    return finish(route, simulator_.send_events(session_id, token, *body));
  }
  // events.stream
  if (auto refused = simulator_.authorize_session(session_id, token)) {
    return finish(route, *refused);
  }
  decision.kind = RouteDecision::Kind::kStream;
  decision.route = route;
  decision.session_id = session_id;
  if (const std::string* last = request.header("last-event-id")) decision.last_event_id = *last;
  const int ordinal = simulator_.note_stream_opened(session_id);
  if (ordinal <= faults.sse_drop_first_streams || faults_.roll(faults.sse_drop_rate)) {
    metrics_.count_fault("sse_drop");
    decision.drop_after_events = faults.sse_drop_after_events;
  }
  return decision;
}

ApiReply ApiRouter::route_memories(const ApiRequest& request, const std::vector<std::string>& parts,
                                   const std::string& route, const std::string& token) {
  const std::string& store_id = parts[2];
  std::string view;
  if (const std::string* text = request.query_param("view")) {
    if (*text != "basic" && *text != "full") {
      return bad_request("view must be basic or full, not `" + *text + "`");
    }
    view = *text;
  }
  if (route == "memories.list") {
    if (request.query_param("depth")) {
      return bad_request("the simulator does not model `depth` (memory_prefix rollups)");
    }
    int limit = 0;
    if (auto refused = parse_limit(request, &limit)) return *refused;
    const std::string* page = request.query_param("page");
    const std::string* prefix = request.query_param("path_prefix");
    return simulator_.list_memories(store_id, token, view.empty() ? "basic" : view, limit,
                                    page ? *page : "", prefix ? *prefix : "");
  }
  if (route == "memories.retrieve") {
    return simulator_.retrieve_memory(store_id, parts[4], token, view.empty() ? "full" : view);
  }
  if (route == "memories.delete") {
    const std::string* expected = request.query_param("expected_content_sha256");
    return simulator_.delete_memory(
        store_id, parts[4], token, expected ? std::optional<std::string>(*expected) : std::nullopt);
  }
  ApiReply body_error;
  std::optional<json> body = parse_json_body(request, &body_error);
  if (!body) return body_error;
  if (!body->is_object()) return bad_request("body must be a JSON object");
  if (route == "memories.create") {
    return simulator_.create_memory(store_id, token, *body, view.empty() ? "basic" : view);
  }
  return simulator_.update_memory(store_id, parts[4], token, *body, view.empty() ? "basic" : view);
}

RouteDecision ApiRouter::route_admin(const ApiRequest& request,
                                     const std::vector<std::string>& parts) {
  const std::string& method = request.method;
  const std::size_t n = parts.size();
  ApiReply body_error;
  auto body_or_error = [&]() { return parse_json_body(request, &body_error); };
  RouteDecision decision;
  auto finish = [&decision](std::string route, ApiReply reply) {
    decision.route = std::move(route);
    decision.reply = std::move(reply);
    return decision;
  };

  if (tunnels_) {
    if (auto routed = route_tunnels_admin(*tunnels_, request, parts)) {
      return finish(routed->first, routed->second);
    }
  }
  if (n == 2 && parts[1] == "faults") {
    if (method == "GET") return finish("admin.faults", json_reply(200, faults_.config().to_json()));
    if (method == "POST") {
      auto body = body_or_error();
      if (!body) return finish("admin.faults", body_error);
      std::string error;
      if (!faults_.update(*body, &error)) return finish("admin.faults", bad_request(error));
      return finish("admin.faults", json_reply(200, faults_.config().to_json()));
    }
  }
  if (n == 2 && parts[1] == "environments" && method == "POST") {
    auto body = body_or_error();
    if (!body) return finish("admin.environments", body_error);
    if (!body->is_object())
      return finish("admin.environments", bad_request("body must be an object"));
    const json name = body->value("name", json(""));
    const json key = body->value("key", json(""));
    if (!name.is_string() || !key.is_string()) {
      return finish("admin.environments", bad_request("name and key must be strings"));
    }
    return finish("admin.environments",
                  json_reply(201, simulator_.create_environment(name.get<std::string>(),
                                                                key.get<std::string>())));
  }
  if (n == 4 && parts[1] == "environments" && parts[3] == "sessions" && method == "POST") {
    auto body = body_or_error();
    if (!body) return finish("admin.enqueue", body_error);
    Scenario scenario;
    try {
      if (body->is_object() && body->contains("scenario_yaml") &&
          (*body)["scenario_yaml"].is_string()) {
        scenario = parse_scenario((*body)["scenario_yaml"].get<std::string>());
      } else if (body->is_object() && body->contains("scenario") &&
                 (*body)["scenario"].is_object()) {
        scenario = parse_scenario((*body)["scenario"].dump());
      } else {
        return finish("admin.enqueue",
                      bad_request("body must carry `scenario_yaml` (text) or `scenario` (object)"));
      }
    } catch (const ScenarioError& e) {
      return finish("admin.enqueue", bad_request(e.what()));
    }
    decision.wake_environment = parts[2];
    return finish("admin.enqueue", simulator_.enqueue_session(parts[2], std::move(scenario)));
  }
  if (n == 4 && parts[1] == "environments" && parts[3] == "healthchecks" && method == "POST") {
    decision.wake_environment = parts[2];
    return finish("admin.healthcheck", simulator_.enqueue_healthcheck(parts[2]));
  }
  if (n == 4 && parts[1] == "environments" && parts[3] == "results" && method == "GET") {
    return finish("admin.results", simulator_.environment_results(parts[2]));
  }
  if (n == 4 && parts[1] == "sessions" && parts[3] == "results" && method == "GET") {
    return finish("admin.results", simulator_.session_results(parts[2]));
  }
  if (n == 3 && parts[1] == "sessions" && method == "GET") {
    return finish("admin.session", simulator_.session_admin_view(parts[2]));
  }
  if (n == 4 && parts[1] == "sessions" && parts[3] == "next_turn" && method == "POST") {
    return finish("admin.next_turn", simulator_.send_next_turn(parts[2]));
  }
  if (n == 4 && parts[1] == "sessions" && parts[3] == "terminate" && method == "POST") {
    return finish("admin.terminate", simulator_.terminate_session(parts[2]));
  }
  if (n == 3 && parts[1] == "memory_stores" && method == "GET") {
    return finish("admin.memory_store", simulator_.memory_store_admin_view(parts[2]));
  }
  if (n == 3 && parts[1] == "work" && method == "GET") {
    return finish("admin.work", simulator_.work_admin_view(parts[2]));
  }
  if (n == 4 && parts[1] == "work" && parts[3] == "steal" && method == "POST") {
    if (!simulator_.steal_lease(parts[2])) {
      return finish("admin.steal", error_reply(409, "conflict_error",
                                               "work `" + parts[2] + "` has no active lease"));
    }
    return finish("admin.steal", json_reply(200, {{"stolen", true}}));
  }
  return finish("admin.unknown", error_reply(404, "not_found_error",
                                             "no admin route for " + method + " " + request.path));
}

}  // namespace perimeter::sim
