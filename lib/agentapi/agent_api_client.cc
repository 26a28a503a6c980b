#include "agentapi/agent_api_client.h"

#include <chrono>

#include "agentapi/api_error.h"
#include "agentapi/json_fields.h"
#include "agentapi/sse_parser.h"

namespace perimeter::agentapi {
using nlohmann::json;

WorkItem parse_work_item(const json& object) {
  WorkItem item;
  item.id = require_string(object, "id", "work item");
  item.environment_id = optional_string(object, "environment_id").value_or("");
  item.state = require_string(object, "state", "work item " + item.id);
  if (!object.contains("data") || !object["data"].is_object()) {
    throw ProtocolError("work item " + item.id + ": field `data` is missing");
  }
  item.data_id = require_string(object["data"], "id", "work item " + item.id + " data");
  item.data_type = optional_string(object["data"], "type").value_or("session");
  item.secret = optional_string(object, "secret");
  if (object.contains("metadata") && object["metadata"].is_object()) {
    item.metadata = object["metadata"];
  }
  item.raw = object;
  return item;
}

HeartbeatResponse parse_heartbeat(const json& object) {
  HeartbeatResponse beat;
  beat.last_heartbeat = require_string(object, "last_heartbeat", "heartbeat");
  beat.state = require_string(object, "state", "heartbeat");
  if (!object.contains("lease_extended") || !object["lease_extended"].is_boolean()) {
    throw ProtocolError("heartbeat: field `lease_extended` is missing or not a boolean");
  }
  beat.lease_extended = object["lease_extended"].get<bool>();
  if (object.contains("ttl_seconds") && object["ttl_seconds"].is_number()) {
    beat.ttl_seconds = object["ttl_seconds"].get<std::int64_t>();
  }
  return beat;
}

SessionEvent parse_event(const json& object) {
  SessionEvent event;
  event.id = require_string(object, "id", "session event");
  event.type = require_string(object, "type", "session event " + event.id);
  event.raw = object;
  return event;
}

AgentApiClient::AgentApiClient(ClientConfig config, std::unique_ptr<HttpTransport> transport,
                               RandomSource& random, Sleeper& sleeper, ApiMetrics* metrics,
                               Logger logger)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      random_(random),
      sleeper_(sleeper),
      metrics_(metrics),
      logger_(std::move(logger)),
      executor_(*transport_, config_.retry_backoff, random_, sleeper_, metrics_, logger_) {
  while (!config_.base_url.empty() && config_.base_url.back() == '/') config_.base_url.pop_back();
}

HttpRequest AgentApiClient::make_request(const std::string& method,
                                         const std::string& path_and_query,
                                         std::chrono::milliseconds timeout) const {
  HttpRequest request;
  request.method = method;
  request.url = config_.base_url + path_and_query;
  request.timeout = timeout;
  request.headers = {{"Authorization", "Bearer " + config_.credential},
                     {"anthropic-version", std::string(kAnthropicVersion)},
                     {"anthropic-beta", std::string(kManagedAgentsBeta)},
                     {"User-Agent", config_.user_agent},
                     {"Accept", "application/json"}};
  return request;
}

std::string AgentApiClient::work_path(const std::string& work_id, std::string_view suffix) const {
  return "/v1/environments/" + url_encode(config_.environment_id) + "/work/" + url_encode(work_id) +
         std::string(suffix);
}

json AgentApiClient::execute_json(std::string_view operation, const HttpRequest& request,
                                  int max_retries, int answer_status) {
  CallPolicy policy;
  policy.max_retries = max_retries;
  policy.answer_status = answer_status;
  return executor_.parse_json(operation, executor_.send(operation, request, policy));
}

std::optional<WorkItem> AgentApiClient::poll(const PollOptions& options) {
  std::string query;
  auto add = [&query](const std::string& name, const std::string& value) {
    query += (query.empty() ? "?" : "&") + name + "=" + url_encode(value);
  };
  if (options.block_ms) {
    if (*options.block_ms < 1 || *options.block_ms > 999) {
      throw std::invalid_argument(
          "poll: block_ms must be 1..999 (omit it for a non-blocking poll)");
    }
    add("block_ms", std::to_string(*options.block_ms));
  }
  if (options.reclaim_older_than_ms) {
    add("reclaim_older_than_ms", std::to_string(*options.reclaim_older_than_ms));
  }
  HttpRequest request = make_request(
      "GET", "/v1/environments/" + url_encode(config_.environment_id) + "/work/poll" + query,
      std::chrono::milliseconds(options.block_ms.value_or(0)) + config_.poll_timeout_margin);
  if (!options.worker_id.empty())
    request.headers.emplace_back("Anthropic-Worker-ID", options.worker_id);
  const json body = execute_json("work.poll", request, config_.max_retries);
  if (body.is_null()) return std::nullopt;
  return parse_work_item(body);
}

WorkItem AgentApiClient::ack(const std::string& work_id) {
  HttpRequest request = make_request("POST", work_path(work_id, "/ack"), config_.request_timeout);
  return parse_work_item(execute_json("work.ack", request, config_.max_retries));
}

HeartbeatResponse AgentApiClient::heartbeat(const std::string& work_id,
                                            const std::string& expected_last_heartbeat,
                                            std::optional<std::int64_t> desired_ttl_seconds,
                                            std::chrono::milliseconds timeout) {
  std::string query = "?expected_last_heartbeat=" + url_encode(expected_last_heartbeat);
  if (desired_ttl_seconds) query += "&desired_ttl_seconds=" + std::to_string(*desired_ttl_seconds);
  HttpRequest request = make_request("POST", work_path(work_id, "/heartbeat") + query, timeout);
  // One interval bounds the whole beat, so no retries inside it: the next beat is the retry.
  return parse_heartbeat(execute_json("work.heartbeat", request, 0));
}

WorkItem AgentApiClient::stop(const std::string& work_id, bool force) {
  HttpRequest request = make_request("POST", work_path(work_id, "/stop"), config_.request_timeout);
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = json({{"force", force}}).dump();
  // Retried like any call (the official worker's client does so too): a force-stop on exit that
  // lost to one 503 would leave the item active until its lease lapsed. 409 means already
  // stopped: an answer, not a transient failure worth retrying.
  return parse_work_item(execute_json("work.stop", request, config_.max_retries, 409));
}

WorkItem AgentApiClient::retrieve_work(const std::string& work_id) {
  HttpRequest request = make_request("GET", work_path(work_id), config_.request_timeout);
  return parse_work_item(execute_json("work.retrieve", request, config_.max_retries));
}

WorkItem AgentApiClient::update_work_metadata(const std::string& work_id, const json& metadata) {
  HttpRequest request = make_request("POST", work_path(work_id), config_.request_timeout);
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = json({{"metadata", metadata}}).dump();
  return parse_work_item(execute_json("work.update", request, config_.max_retries));
}

WorkPage AgentApiClient::list_work(int limit, const std::string& page) {
  std::string query;
  if (limit > 0) query += "?limit=" + std::to_string(limit);
  if (!page.empty()) query += (query.empty() ? "?" : "&") + std::string("page=") + url_encode(page);
  HttpRequest request = make_request(
      "GET", "/v1/environments/" + url_encode(config_.environment_id) + "/work" + query,
      config_.request_timeout);
  const json body = execute_json("work.list", request, config_.max_retries);
  if (!body.is_object() || !body.contains("data") || !body["data"].is_array()) {
    throw ProtocolError("work.list: field `data` is missing or not a list");
  }
  WorkPage result;
  for (const json& item : body["data"]) result.data.push_back(parse_work_item(item));
  result.next_page = optional_string(body, "next_page");
  return result;
}

WorkQueueStats AgentApiClient::stats() {
  HttpRequest request =
      make_request("GET", "/v1/environments/" + url_encode(config_.environment_id) + "/work/stats",
                   config_.request_timeout);
  const json body = execute_json("work.stats", request, config_.max_retries);
  if (!body.is_object() || !body.contains("depth") || !body["depth"].is_number_integer()) {
    throw ProtocolError("work.stats: field `depth` is missing or not an integer");
  }
  WorkQueueStats stats;
  stats.depth = body["depth"].get<std::int64_t>();
  if (body.contains("pending") && body["pending"].is_number_integer()) {
    stats.pending = body["pending"].get<std::int64_t>();
  }
  stats.oldest_queued_at = optional_string(body, "oldest_queued_at");
  if (body.contains("workers_polling") && body["workers_polling"].is_number_integer()) {
    stats.workers_polling = body["workers_polling"].get<std::int64_t>();
  }
  return stats;
}

Session AgentApiClient::retrieve_session(const std::string& session_id) {
  HttpRequest request =
      make_request("GET", "/v1/sessions/" + url_encode(session_id), config_.request_timeout);
  const json body = execute_json("sessions.retrieve", request, config_.max_retries);
  Session session;
  session.id = require_string(body, "id", "session");
  session.status = require_string(body, "status", "session " + session.id);
  session.raw = body;
  return session;
}

EventPage AgentApiClient::list_events(const std::string& session_id, int limit,
                                      const std::string& page) {
  std::string query;
  if (limit > 0) query += "?limit=" + std::to_string(limit);
  if (!page.empty()) query += (query.empty() ? "?" : "&") + std::string("page=") + url_encode(page);
  HttpRequest request = make_request(
      "GET", "/v1/sessions/" + url_encode(session_id) + "/events" + query, config_.request_timeout);
  const json body = execute_json("events.list", request, config_.max_retries);
  if (!body.is_object() || !body.contains("data") || !body["data"].is_array()) {
    throw ProtocolError("events.list: field `data` is missing or not a list");
  }
  EventPage result;
  for (const json& event : body["data"]) result.data.push_back(parse_event(event));
  result.next_page = optional_string(body, "next_page");
  return result;
}

void AgentApiClient::send_events(const std::string& session_id, const json& events) {
  if (!events.is_array() || events.empty()) {
    throw std::invalid_argument("send_events: events must be a non-empty list");
  }
  HttpRequest request = make_request("POST", "/v1/sessions/" + url_encode(session_id) + "/events",
                                     config_.request_timeout);
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = json({{"events", events}}).dump();
  CallPolicy policy;
  policy.max_retries = config_.max_retries;
  executor_.send("events.send", request, policy);
}

std::string AgentApiClient::stream_events(const std::string& session_id,
                                          const std::string& last_event_id,
                                          const std::function<bool(const SessionEvent&)>& on_event,
                                          const std::atomic<bool>& cancel) {
  HttpRequest request =
      make_request("GET", "/v1/sessions/" + url_encode(session_id) + "/events/stream",
                   config_.stream_idle_timeout);
  for (auto& header : request.headers) {
    if (header.first == "Accept") header.second = "text/event-stream";
  }
  if (!last_event_id.empty()) request.headers.emplace_back("Last-Event-ID", last_event_id);
  SseParser parser;
  std::string last_delivered = last_event_id;
  const auto started = std::chrono::steady_clock::now();
  HttpResponse head = transport_->stream(
      request,
      [&](std::string_view chunk) {
        for (SseFrame& frame : parser.feed(chunk)) {
          // Frames without an event name are skipped, as the official SDK's stream reader does.
          if (frame.event.empty() || frame.event == "ping") continue;
          if (frame.event == "error") {
            throw ApiError("events.stream", 200, frame.data, "");
          }
          json body = json::parse(frame.data, nullptr, false);
          if (body.is_discarded()) {
            throw ProtocolError("events.stream: event `" + frame.event + "` data is not JSON");
          }
          SessionEvent event = parse_event(body);
          last_delivered = frame.id.empty() ? event.id : frame.id;
          if (!on_event(event)) return false;
        }
        return true;
      },
      cancel);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (metrics_) metrics_->on_response("events.stream", head.status, seconds);
  if (head.status < 200 || head.status >= 300) {
    const std::string* request_id = head.header("request-id");
    throw ApiError("events.stream", head.status, head.body, request_id ? *request_id : "");
  }
  if (head.truncated) {
    // Expected now and then (proxies, deploys): the caller reconnects with Last-Event-ID.
    logger_.warn("event stream broke off", {{"session_id", session_id},
                                            {"error", head.truncation_reason},
                                            {"last_event_id", last_delivered}});
    if (metrics_) metrics_->on_retry("events.stream", 0, std::chrono::milliseconds(0));
  }
  return last_delivered;
}

SkillVersion AgentApiClient::retrieve_skill_version(const std::string& skill_id,
                                                    const std::string& version) {
  HttpRequest request =
      make_request("GET", "/v1/skills/" + url_encode(skill_id) + "/versions/" + url_encode(version),
                   config_.request_timeout);
  const json body = execute_json("skills.versions.retrieve", request, config_.max_retries);
  SkillVersion result;
  result.id = require_string(body, "id", "skill version");
  result.name = optional_string(body, "name").value_or("");
  result.raw = body;
  return result;
}

std::string AgentApiClient::download_skill_content(const std::string& skill_id,
                                                   const std::string& version) {
  HttpRequest request = make_request(
      "GET", "/v1/skills/" + url_encode(skill_id) + "/versions/" + url_encode(version) + "/content",
      config_.request_timeout);
  for (auto& header : request.headers) {
    if (header.first == "Accept") header.second = "application/octet-stream";
  }
  CallPolicy policy;
  policy.max_retries = config_.max_retries;
  return executor_.send("skills.versions.content", request, policy).body;
}

namespace {

Memory parse_memory(const json& body, std::string_view what) {
  if (!body.is_object()) throw ProtocolError(std::string(what) + ": the memory is not an object");
  Memory memory;
  memory.type = optional_string(body, "type").value_or("memory");
  memory.path = require_string(body, "path", what);
  if (memory.type == "memory") {
    memory.id = require_string(body, "id", what);
    memory.content_sha256 = require_string(body, "content_sha256", what);
    memory.content = optional_string(body, "content");
  }
  return memory;
}

}  // namespace

HttpRequest AgentApiClient::memory_request(const std::string& method, const std::string& store_id,
                                           const std::string& suffix) const {
  HttpRequest request =
      make_request(method, "/v1/memory_stores/" + url_encode(store_id) + "/memories" + suffix,
                   config_.request_timeout);
  for (auto& header : request.headers) {
    if (header.first == "anthropic-beta") header.second = std::string(kAgentMemoryBeta);
  }
  return request;
}

MemoryPage AgentApiClient::list_memories(const std::string& store_id, const std::string& view,
                                         int limit, const std::string& page) {
  std::string query = "?view=" + url_encode(view) + "&limit=" + std::to_string(limit);
  if (!page.empty()) query += "&page=" + url_encode(page);
  const json body =
      execute_json("memories.list", memory_request("GET", store_id, query), config_.max_retries);
  if (!body.is_object() || !body.contains("data") || !body["data"].is_array()) {
    throw ProtocolError("memories.list: field `data` is missing or not a list");
  }
  MemoryPage result;
  for (const json& item : body["data"]) result.data.push_back(parse_memory(item, "memories.list"));
  result.next_page = optional_string(body, "next_page");
  return result;
}

Memory AgentApiClient::retrieve_memory(const std::string& store_id, const std::string& memory_id,
                                       const std::string& view) {
  return parse_memory(
      execute_json("memories.retrieve",
                   memory_request("GET", store_id, "/" + url_encode(memory_id) + "?view=" + view),
                   config_.max_retries),
      "memories.retrieve");
}

Memory AgentApiClient::create_memory(const std::string& store_id, const std::string& path,
                                     const std::string& content) {
  HttpRequest request = memory_request("POST", store_id, "");
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = json({{"path", path}, {"content", content}}).dump();
  return parse_memory(execute_json("memories.create", request, config_.max_retries),
                      "memories.create");
}

Memory AgentApiClient::update_memory(const std::string& store_id, const std::string& memory_id,
                                     const std::string& content,
                                     const std::string& precondition_sha256) {
  HttpRequest request = memory_request("POST", store_id, "/" + url_encode(memory_id));
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = json({{"content", content},
                       {"precondition",
                        {{"type", "content_sha256"}, {"content_sha256", precondition_sha256}}}})
                     .dump();
  return parse_memory(execute_json("memories.update", request, config_.max_retries),
                      "memories.update");
}

void AgentApiClient::delete_memory(const std::string& store_id, const std::string& memory_id,
                                   const std::string& expected_content_sha256) {
  execute_json("memories.delete",
               memory_request("DELETE", store_id,
                              "/" + url_encode(memory_id) + "?expected_content_sha256=" +
                                  url_encode(expected_content_sha256)),
               config_.max_retries);
}

}  // namespace perimeter::agentapi
