#include "kube/resource_client.h"

#include <algorithm>
#include <thread>

#include "kube/api_error.h"

namespace perimeter::kube {

using nlohmann::json;

namespace {

void add_param(std::string& query, const std::string& name, const std::string& value) {
  if (value.empty()) return;
  query += query.empty() ? "?" : "&";
  query += name + "=" + url_encode(value);
}

}  // namespace

const char* to_string(WatchEventType type) {
  switch (type) {
    case WatchEventType::kAdded:
      return "ADDED";
    case WatchEventType::kModified:
      return "MODIFIED";
    case WatchEventType::kDeleted:
      return "DELETED";
    case WatchEventType::kBookmark:
      return "BOOKMARK";
    case WatchEventType::kError:
      return "ERROR";
  }
  return "UNKNOWN";
}

JsonFilter watch_event_filter(const JsonFilter& object_filter) {
  return JsonFilter::members().keep("type").keep("object", object_filter);
}

WatchEvent decode_watch_event(const std::string& line, const JsonFilter* event_filter) {
  json parsed = event_filter != nullptr ? parse_filtered(line, *event_filter)
                                        : json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw DecodeError("watch line is not JSON", line);
  if (!parsed.is_object() || !parsed.contains("type") || !parsed["type"].is_string())
    throw DecodeError("watch event has no type", line);
  if (!parsed.contains("object") || !parsed["object"].is_object())
    throw DecodeError("watch event has no object", line);
  const std::string type = parsed["type"];
  WatchEvent event{WatchEventType::kError, std::move(parsed["object"])};
  if (type == "ADDED")
    event.type = WatchEventType::kAdded;
  else if (type == "MODIFIED")
    event.type = WatchEventType::kModified;
  else if (type == "DELETED")
    event.type = WatchEventType::kDeleted;
  else if (type == "BOOKMARK")
    event.type = WatchEventType::kBookmark;
  else if (type == "ERROR" && event_filter != nullptr)
    return decode_watch_event(line);  // the Status whole: its code, reason and message
  else if (type == "ERROR")
    event.type = WatchEventType::kError;
  else
    throw DecodeError("watch event has unknown type '" + type + "'", line);
  return event;
}

WatchStream::WatchStream(std::unique_ptr<ResponseStream> stream, ClientMetrics& metrics,
                         std::string context, const JsonFilter* object_filter)
    : stream_(std::move(stream)), metrics_(metrics), context_(std::move(context)) {
  if (object_filter != nullptr) event_filter_ = watch_event_filter(*object_filter);
}

std::optional<WatchEvent> WatchStream::next() {
  while (true) {
    auto line = stream_->read_line();
    if (!line) return std::nullopt;
    if (line->empty()) continue;  // keep-alive blank lines carry nothing
    try {
      return decode_watch_event(*line, event_filter_ ? &*event_filter_ : nullptr);
    } catch (const DecodeError& e) {
      metrics_.count_decode_error("watch");
      throw DecodeError(context_ + ": " + e.what(), e.offending_text());
    }
  }
}

ResourceClient::ResourceClient(Transport& transport, ResourceType type, ClientMetrics& metrics)
    : transport_(transport), type_(std::move(type)), metrics_(metrics) {}

std::string ResourceClient::name_of(const json& object) {
  if (!object.is_object() || !object.contains("metadata") || !object["metadata"].contains("name") ||
      !object["metadata"]["name"].is_string())
    throw std::invalid_argument("object has no metadata.name");
  return object["metadata"]["name"];
}

json ResourceClient::call(const std::string& verb, const std::string& method,
                          const std::string& path, const std::string& body,
                          const std::string& content_type, const RequestOptions& options) {
  HttpRequest request;
  request.method = method;
  request.timeout = options.timeout;
  request.path_and_query = path;
  request.body = body;
  if (!content_type.empty()) request.headers["Content-Type"] = content_type;
  const std::string context = verb + " " + type_.describe() + " " + path;
  HttpResponse response;
  for (int attempt = 0;; ++attempt) {
    try {
      response = transport_.send(request);
    } catch (const TransportError&) {
      metrics_.count_request(verb, "error");
      throw;
    }
    metrics_.count_request(verb, std::to_string(response.status));
    if (response.status >= 200 && response.status < 300) break;
    auto error = ApiError::from_response(response.status, std::move(response.body), context);
    if (!error.body_is_status()) metrics_.count_decode_error("error_body");
    // A 429 was refused before anything happened, so sending it again is safe for every verb.
    if (error.kind() != ErrorKind::kTooManyRequests || attempt >= kMaxThrottleRetries ||
        options.timeout.count() > 0)
      throw error;
    const int asked = error.retry_after_seconds();
    const auto wait = std::min<std::chrono::milliseconds>(
        asked > 0 ? std::chrono::seconds(asked) : std::chrono::seconds(1), kMaxThrottleWait);
    metrics_.count_retry(verb, "throttled");
    if (sleeper_) {
      sleeper_(wait);
    } else {
      std::this_thread::sleep_for(wait);
    }
  }
  json parsed = options.answer != nullptr
                    ? parse_filtered(response.body, *options.answer)
                    : json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    metrics_.count_decode_error("response");
    throw DecodeError(context + ": answer is not a JSON object", response.body);
  }
  return parsed;
}

json ResourceClient::get(const std::string& ns, const std::string& name,
                         const RequestOptions& request) {
  return call("get", "GET", type_.path(ns, name), "", "", request);
}

json ResourceClient::list(const std::string& ns, const ListOptions& options) {
  std::string query;
  add_param(query, "labelSelector", options.label_selector);
  add_param(query, "fieldSelector", options.field_selector);
  if (options.limit > 0) add_param(query, "limit", std::to_string(options.limit));
  add_param(query, "continue", options.continue_token);
  add_param(query, "resourceVersion", options.resource_version);
  json answer = call("list", "GET", type_.path(ns) + query);
  if (!answer.contains("items") || !(answer["items"].is_array() || answer["items"].is_null())) {
    metrics_.count_decode_error("response");
    throw DecodeError("list " + type_.describe() + ": answer has no items array", answer.dump());
  }
  if (answer["items"].is_null()) answer["items"] = json::array();
  return answer;
}

json ResourceClient::list_all(const std::string& ns, ListOptions options) {
  json merged = list(ns, options);
  std::string next = merged["metadata"].value("continue", "");
  while (!next.empty()) {
    options.continue_token = next;
    options.resource_version.clear();  // the continue token pins the snapshot
    json page = list(ns, options);
    for (auto& item : page["items"]) merged["items"].push_back(std::move(item));
    next = page["metadata"].value("continue", "");
  }
  merged["metadata"].erase("continue");
  return merged;
}

json ResourceClient::create(const std::string& ns, const json& object,
                            const RequestOptions& request) {
  return call("create", "POST", type_.path(ns) + (request.dry_run ? "?dryRun=All" : ""),
              object.dump(), "", request);
}

json ResourceClient::create_subresource(const std::string& ns, const std::string& name,
                                        const std::string& subresource, const json& object) {
  return call("create", "POST", type_.path(ns, name, subresource), object.dump());
}

json ResourceClient::update(const std::string& ns, const json& object,
                            const RequestOptions& request) {
  return call("update", "PUT", type_.path(ns, name_of(object)), object.dump(), "", request);
}

json ResourceClient::remove(const std::string& ns, const std::string& name,
                            const DeleteOptions& options) {
  json body = {{"kind", "DeleteOptions"}, {"apiVersion", "v1"}};
  if (options.precondition_uid) body["preconditions"]["uid"] = *options.precondition_uid;
  if (options.precondition_resource_version)
    body["preconditions"]["resourceVersion"] = *options.precondition_resource_version;
  if (!options.propagation_policy.empty()) body["propagationPolicy"] = options.propagation_policy;
  if (options.grace_period_seconds) body["gracePeriodSeconds"] = *options.grace_period_seconds;
  RequestOptions request;
  request.answer = options.answer;
  return call("delete", "DELETE", type_.path(ns, name), body.dump(), "", request);
}

json ResourceClient::merge_patch(const std::string& ns, const std::string& name, const json& patch,
                                 const RequestOptions& request) {
  return call("patch", "PATCH", type_.path(ns, name), patch.dump(), "application/merge-patch+json",
              request);
}

json ResourceClient::strategic_merge_patch(const std::string& ns, const std::string& name,
                                           const json& patch) {
  return call("patch", "PATCH", type_.path(ns, name), patch.dump(),
              "application/strategic-merge-patch+json");
}

json ResourceClient::json_patch(const std::string& ns, const std::string& name,
                                const json& operations) {
  return call("patch", "PATCH", type_.path(ns, name), operations.dump(),
              "application/json-patch+json");
}

json ResourceClient::apply_to(const std::string& ns, const json& object,
                              const ApplyOptions& options, const std::string& subresource) {
  if (options.field_manager.empty())
    throw std::invalid_argument("server-side apply needs a field manager");
  std::string query;
  add_param(query, "fieldManager", options.field_manager);
  if (options.force) add_param(query, "force", "true");
  // JSON is YAML, so the object goes as it is under the apply content type.
  return call("apply", "PATCH", type_.path(ns, name_of(object), subresource) + query, object.dump(),
              "application/apply-patch+yaml");
}

json ResourceClient::apply(const std::string& ns, const json& object, const ApplyOptions& options) {
  return apply_to(ns, object, options, "");
}

json ResourceClient::get_status(const std::string& ns, const std::string& name) {
  return call("get", "GET", type_.path(ns, name, "status"));
}

json ResourceClient::update_status(const std::string& ns, const json& object) {
  return call("update", "PUT", type_.path(ns, name_of(object), "status"), object.dump());
}

json ResourceClient::merge_patch_status(const std::string& ns, const std::string& name,
                                        const json& patch) {
  return call("patch", "PATCH", type_.path(ns, name, "status"), patch.dump(),
              "application/merge-patch+json");
}

json ResourceClient::apply_status(const std::string& ns, const json& object,
                                  const ApplyOptions& options) {
  return apply_to(ns, object, options, "status");
}

std::unique_ptr<WatchStream> ResourceClient::watch(const std::string& ns,
                                                   const WatchOptions& options) {
  std::string query = "?watch=true";
  add_param(query, "labelSelector", options.label_selector);
  add_param(query, "fieldSelector", options.field_selector);
  add_param(query, "resourceVersion", options.resource_version);
  if (options.allow_bookmarks) add_param(query, "allowWatchBookmarks", "true");
  if (options.timeout_seconds > 0)
    add_param(query, "timeoutSeconds", std::to_string(options.timeout_seconds));
  HttpRequest request;
  request.method = "GET";
  request.path_and_query = type_.path(ns) + query;
  // The client must outwait the server's own end of the watch.
  request.timeout = std::chrono::seconds(options.timeout_seconds + 30);
  const std::string context = "watch " + type_.describe() + " " + request.path_and_query;
  try {
    auto stream = transport_.open_stream(request);
    metrics_.count_request("watch", "200");
    return std::make_unique<WatchStream>(std::move(stream), metrics_, context,
                                         options.object_filter.get());
  } catch (const ApiError& e) {
    metrics_.count_request("watch", std::to_string(e.code()));
    if (!e.body_is_status()) metrics_.count_decode_error("error_body");
    throw;
  } catch (const TransportError&) {
    metrics_.count_request("watch", "error");
    throw;
  }
}

}  // namespace perimeter::kube
