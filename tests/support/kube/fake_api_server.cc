#include "kube/fake_api_server.h"

#include <algorithm>
#include <sstream>

#include "core/time_format.h"
#include "kube/api_error.h"
#include "kube/mock_transport.h"

namespace perimeter::testing {

using nlohmann::json;

namespace {

std::string status_body(int code, const std::string& reason, const std::string& message,
                        json details = json::object()) {
  return json{{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Failure"}, {"code", code},
              {"reason", reason}, {"message", message}, {"details", details}}
      .dump();
}

kube::HttpResponse answer(int status, const std::string& body) {
  return kube::HttpResponse{status, body, "application/json"};
}

std::string url_decode(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else if (text[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator)) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

// Where a request points: the collection (prefix + optional namespace + resource) and the name.
struct Target {
  std::string prefix;  // "/api/v1" or "/apis/group/version"
  std::string ns;
  std::string resource;
  std::string name;
  std::string subresource;
  std::map<std::string, std::string> query;

  std::string collection() const {
    return prefix + (ns.empty() ? "" : "/namespaces/" + ns) + "/" + resource;
  }
  std::string object_path(const std::string& object_name) const {
    return collection() + "/" + object_name;
  }
};

std::optional<Target> parse_target(const std::string& path_and_query) {
  Target target;
  const auto question = path_and_query.find('?');
  const std::string path = path_and_query.substr(0, question);
  if (question != std::string::npos) {
    for (const auto& pair : split(path_and_query.substr(question + 1), '&')) {
      const auto equals = pair.find('=');
      target.query[pair.substr(0, equals)] =
          equals == std::string::npos ? "" : url_decode(pair.substr(equals + 1));
    }
  }
  auto segments = split(path, '/');
  size_t rest = 0;
  if (segments.size() >= 2 && segments[0] == "api") {
    target.prefix = "/api/" + segments[1];
    rest = 2;
  } else if (segments.size() >= 3 && segments[0] == "apis") {
    target.prefix = "/apis/" + segments[1] + "/" + segments[2];
    rest = 3;
  } else {
    return std::nullopt;
  }
  std::vector<std::string> tail(segments.begin() + static_cast<long>(rest), segments.end());
  if (tail.size() >= 3 && tail[0] == "namespaces") {
    target.ns = tail[1];
    tail.erase(tail.begin(), tail.begin() + 2);
  }
  if (tail.empty() || tail.size() > 3) return std::nullopt;
  target.resource = tail[0];
  if (tail.size() >= 2) target.name = tail[1];
  if (tail.size() == 3) target.subresource = tail[2];
  return target;
}

const json& field(const json& object, const std::string& dotted) {
  static const json null_value;
  const json* current = &object;
  for (const auto& part : split(dotted, '.')) {
    if (!current->is_object() || !current->contains(part)) return null_value;
    current = &(*current)[part];
  }
  return *current;
}

bool matches_labels(const json& object, const std::string& selector) {
  const json& labels = field(object, "metadata.labels");
  auto label = [&](const std::string& key) -> std::optional<std::string> {
    if (labels.is_object() && labels.contains(key) && labels[key].is_string())
      return labels[key].get<std::string>();
    return std::nullopt;
  };
  for (const auto& term : split(selector, ',')) {
    if (const auto at = term.find("!="); at != std::string::npos) {
      if (label(term.substr(0, at)) == term.substr(at + 2)) return false;
    } else if (const auto eq = term.find('='); eq != std::string::npos) {
      const auto value_at = term[eq + 1] == '=' ? eq + 2 : eq + 1;
      if (label(term.substr(0, eq)) != term.substr(value_at)) return false;
    } else if (term[0] == '!') {
      if (label(term.substr(1))) return false;
    } else if (!label(term)) {
      return false;
    }
  }
  return true;
}

bool matches_fields(const json& object, const std::string& selector) {
  for (const auto& term : split(selector, ',')) {
    const bool negate = term.find("!=") != std::string::npos;
    const auto at = negate ? term.find("!=") : term.find('=');
    if (at == std::string::npos) return false;
    const auto value_at = negate ? at + 2 : (term[at + 1] == '=' ? at + 2 : at + 1);
    const json& actual = field(object, term.substr(0, at));
    const std::string actual_text = actual.is_string() ? actual.get<std::string>() : actual.dump();
    if ((actual_text == term.substr(value_at)) == negate) return false;
  }
  return true;
}

// kube-apiserver's JSON patch (evanphx/json-patch v4) passes a "test" of null on a member that is
// missing, where RFC 6902 (and nlohmann's patch) fails it: callers test "not there yet" that way.
// Such tests are decided here, against `current`, and left out of what nlohmann applies; the
// others keep their place. A failed one throws as nlohmann's own failed test does.
json with_null_tests_applied(const json& current, const json& operations) {
  if (!operations.is_array()) return operations;
  json rest = json::array();
  for (const json& operation : operations) {
    if (!operation.is_object() || operation.value("op", "") != "test" ||
        !operation.contains("value") || !operation["value"].is_null()) {
      rest.push_back(operation);
      continue;
    }
    const json::json_pointer path(operation.value("path", ""));
    if (current.contains(path) && !current.at(path).is_null()) {
      throw json::other_error::create(501, "unsuccessful: " + operation.dump(), &operation);
    }
  }
  return rest;
}

}  // namespace

struct FakeApiServer::Watcher {
  Target target;
  std::shared_ptr<FakeResponseStream::Script> script;
  bool matches(const std::string& collection, const json& object) const {
    const std::string wanted = target.collection();
    const bool same_collection =
        collection == wanted ||
        (target.ns.empty() && collection.rfind(target.prefix + "/namespaces/", 0) == 0 &&
         collection.size() > target.resource.size() &&
         collection.compare(collection.size() - target.resource.size() - 1, std::string::npos,
                            "/" + target.resource) == 0);
    if (!same_collection) return false;
    auto q = target.query.find("labelSelector");
    if (q != target.query.end() && !matches_labels(object, q->second)) return false;
    q = target.query.find("fieldSelector");
    if (q != target.query.end() && !matches_fields(object, q->second)) return false;
    return true;
  }
};

FakeApiServer::FakeApiServer() = default;

FakeApiServer::~FakeApiServer() {
  close_watches();
}

json FakeApiServer::stamp_locked(json object, const std::string& collection) {
  object["metadata"]["resourceVersion"] = std::to_string(++version_);
  (void)collection;
  return object;
}

void FakeApiServer::record_locked(const std::string& collection, const std::string& type,
                                  const json& object) {
  const int64_t version = std::stoll(object["metadata"]["resourceVersion"].get<std::string>());
  history_.push_back({version, collection, type, object});
  while (history_.size() > 10000) {
    history_floor_ = history_.front().version;
    history_.pop_front();
  }
  const std::string line = json{{"type", type}, {"object", object}}.dump();
  for (auto& watcher : watchers_) {
    if (watcher->matches(collection, object)) push_line(*watcher->script, line);
  }
}

json FakeApiServer::seed(const std::string& collection_path, json object) {
  std::lock_guard lock(mutex_);
  auto target = parse_target(collection_path + "/x");
  if (!target) throw std::invalid_argument("not a collection path: " + collection_path);
  object["metadata"]["uid"] = "uid-" + std::to_string(++uid_counter_);
  if (!target->ns.empty()) object["metadata"]["namespace"] = target->ns;
  object = stamp_locked(std::move(object), collection_path);
  const std::string name = object["metadata"]["name"];
  objects_[target->object_path(name)] = {target->collection(), object};
  record_locked(target->collection(), "ADDED", object);
  return object;
}

std::optional<json> FakeApiServer::object_at(const std::string& path) const {
  std::lock_guard lock(mutex_);
  auto it = objects_.find(path);
  if (it == objects_.end()) return std::nullopt;
  return it->second.object;
}

void FakeApiServer::fail_next(const std::string& method, const std::string& path_fragment,
                              int status, const std::string& body) {
  std::lock_guard lock(mutex_);
  failures_.push_back({method, path_fragment, status, body});
}

void FakeApiServer::close_watches() {
  std::lock_guard lock(mutex_);
  for (auto& watcher : watchers_) end_stream(*watcher->script);
  watchers_.clear();
}

void FakeApiServer::compact() {
  std::lock_guard lock(mutex_);
  history_.clear();
  history_floor_ = version_;
}

void FakeApiServer::use_clock(const Clock* clock) {
  std::lock_guard lock(mutex_);
  clock_ = clock;
}

std::vector<std::string> FakeApiServer::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

kube::HttpResponse FakeApiServer::send(const kube::HttpRequest& request) {
  std::lock_guard lock(mutex_);
  requests_.push_back(request.method + " " + request.path_and_query);
  for (auto it = failures_.begin(); it != failures_.end(); ++it) {
    if (it->method == request.method &&
        request.path_and_query.find(it->fragment) != std::string::npos) {
      auto response = answer(it->status, it->body);
      failures_.erase(it);
      return response;
    }
  }
  return serve_locked(request);
}

kube::HttpResponse FakeApiServer::serve_locked(const kube::HttpRequest& request) {
  const auto target = parse_target(request.path_and_query);
  if (!target)
    return answer(404, status_body(404, "NotFound", "no such path " + request.path_and_query));
  const std::string collection = target->collection();
  const std::string path = target->object_path(target->name);
  const auto not_found = [&] {
    return answer(
        404, status_body(404, "NotFound", target->resource + " \"" + target->name + "\" not found",
                         {{"name", target->name}, {"kind", target->resource}}));
  };
  json body;
  if (!request.body.empty()) {
    body = json::parse(request.body, nullptr, false);
    if (body.is_discarded())
      return answer(400, status_body(400, "BadRequest", "request body is not JSON"));
  }

  if (request.method == "GET" && target->name.empty()) {
    std::vector<json> items;
    for (const auto& [object_path, stored] : objects_) {
      Watcher filter{*target, nullptr};
      if (filter.matches(stored.collection, stored.object)) items.push_back(stored.object);
    }
    size_t offset = 0;
    if (auto c = target->query.find("continue"); c != target->query.end() && !c->second.empty())
      offset = std::stoul(c->second);
    size_t limit = items.size();
    if (auto l = target->query.find("limit"); l != target->query.end())
      limit = std::stoul(l->second);
    json page = json::array();
    for (size_t i = offset; i < items.size() && i < offset + limit; ++i) page.push_back(items[i]);
    json metadata = {{"resourceVersion", std::to_string(version_)}};
    if (offset + limit < items.size()) metadata["continue"] = std::to_string(offset + limit);
    return answer(
        200, json{{"kind", "List"}, {"apiVersion", "v1"}, {"metadata", metadata}, {"items", page}}
                 .dump());
  }

  if (request.method == "POST") {
    if (!body.is_object())
      return answer(400, status_body(400, "BadRequest", "body is not an object"));
    std::string name = body["metadata"].value("name", "");
    if (name.empty() && body["metadata"].contains("generateName"))
      name = body["metadata"]["generateName"].get<std::string>() + std::to_string(uid_counter_ + 1);
    if (name.empty())
      return answer(422, status_body(422, "Invalid", "metadata.name: Required value",
                                     {{"causes", json::array({{{"field", "metadata.name"}}})}}));
    const std::string object_path = target->object_path(name);
    if (objects_.count(object_path) != 0)
      return answer(409, status_body(409, "AlreadyExists",
                                     target->resource + " \"" + name + "\" already exists",
                                     {{"name", name}, {"kind", target->resource}}));
    body["metadata"]["name"] = name;
    if (!target->ns.empty()) body["metadata"]["namespace"] = target->ns;
    // A dry run is answered as the create would be, and nothing is stored or watched.
    if (const auto dry = target->query.find("dryRun"); dry != target->query.end()) {
      body["metadata"]["uid"] = "uid-dry-run";
      return answer(201, body.dump());
    }
    body["metadata"]["uid"] = "uid-" + std::to_string(++uid_counter_);
    body["metadata"]["generation"] = 1;
    body["metadata"]["creationTimestamp"] =
        clock_ != nullptr ? format_rfc3339(clock_->wall_now()) : "2026-01-01T00:00:00Z";
    body = stamp_locked(std::move(body), collection);
    objects_[object_path] = {collection, body};
    record_locked(collection, "ADDED", body);
    return answer(201, body.dump());
  }

  auto it = objects_.find(path);
  const bool is_apply = request.method == "PATCH" && request.headers.count("Content-Type") &&
                        request.headers.at("Content-Type") == "application/apply-patch+yaml";
  if (it == objects_.end()) {
    if (is_apply && target->subresource.empty()) {
      kube::HttpRequest create = request;
      create.method = "POST";
      create.path_and_query = collection;
      return serve_locked(create);
    }
    return not_found();
  }
  json& current = it->second.object;

  if (request.method == "GET") {
    return answer(200, current.dump());
  }

  if (request.method == "DELETE") {
    const json preconditions =
        body.is_object() && body.contains("preconditions") ? body["preconditions"] : json::object();
    if (preconditions.contains("uid") && preconditions["uid"] != current["metadata"]["uid"])
      return answer(409, status_body(409, "Conflict",
                                     "Precondition failed: UID in precondition does not match"));
    if (preconditions.contains("resourceVersion") &&
        preconditions["resourceVersion"] != current["metadata"]["resourceVersion"])
      return answer(
          409, status_body(409, "Conflict",
                           "Precondition failed: ResourceVersion in precondition does not match"));
    const json& finalizers = field(current, "metadata.finalizers");
    if (finalizers.is_array() && !finalizers.empty()) {
      if (!current["metadata"].contains("deletionTimestamp")) {
        current["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
        current = stamp_locked(std::move(current), collection);
        record_locked(collection, "MODIFIED", current);
      }
      return answer(200, current.dump());
    }
    json gone = stamp_locked(current, collection);
    objects_.erase(it);
    record_locked(collection, "DELETED", gone);
    return answer(
        200, json{{"kind", "Status"}, {"status", "Success"}, {"details", {{"name", target->name}}}}
                 .dump());
  }

  json next;
  // An update, and a merge patch that names a resourceVersion, apply only to that version.
  const std::string wanted_version = field(body, "metadata.resourceVersion").is_string()
                                         ? body["metadata"]["resourceVersion"].get<std::string>()
                                         : "";
  const bool is_merge_patch = request.method == "PATCH" && !is_apply &&
                              (!request.headers.count("Content-Type") ||
                               request.headers.at("Content-Type") != "application/json-patch+json");
  if ((request.method == "PUT" || is_merge_patch) && !wanted_version.empty() &&
      wanted_version != current["metadata"]["resourceVersion"])
    return answer(409, status_body(409, "Conflict",
                                   "Operation cannot be fulfilled on " + target->resource + " \"" +
                                       target->name +
                                       "\": the object has been modified; please apply your "
                                       "changes to the latest version and try again"));
  if (request.method == "PUT") {
    next = body;
  } else if (request.method == "PATCH") {
    const std::string content_type =
        request.headers.count("Content-Type") ? request.headers.at("Content-Type") : "";
    next = current;
    try {
      if (content_type == "application/json-patch+json") {
        next = current.patch(with_null_tests_applied(current, body));
      } else {
        next.merge_patch(body);  // merge patch, and apply without field ownership
      }
    } catch (const json::exception& e) {
      return answer(422, status_body(422, "Invalid", std::string("the patch failed: ") + e.what()));
    }
  } else {
    return answer(405, status_body(405, "MethodNotAllowed", request.method + " is not allowed"));
  }

  // Identity fields are the server's; the status subresource writes only status, the main
  // resource everything but status.
  for (const char* key : {"uid", "name", "namespace", "creationTimestamp", "generation"}) {
    if (current["metadata"].contains(key)) next["metadata"][key] = current["metadata"][key];
  }
  if (target->subresource == "status") {
    json status = next.contains("status") ? next["status"] : json();
    next = current;
    if (status.is_null())
      next.erase("status");
    else
      next["status"] = status;
  } else {
    if (current.contains("status")) next["status"] = current["status"];
    if (next.value("spec", json()) != current.value("spec", json()))
      next["metadata"]["generation"] = current["metadata"].value("generation", 1) + 1;
  }
  next = stamp_locked(std::move(next), collection);
  const json& finalizers = field(next, "metadata.finalizers");
  if (next["metadata"].contains("deletionTimestamp") &&
      (!finalizers.is_array() || finalizers.empty())) {
    objects_.erase(it);
    record_locked(collection, "DELETED", next);
    return answer(200, next.dump());
  }
  current = next;
  record_locked(collection, "MODIFIED", current);
  return answer(200, current.dump());
}

std::unique_ptr<kube::ResponseStream> FakeApiServer::open_stream(const kube::HttpRequest& request) {
  std::lock_guard lock(mutex_);
  requests_.push_back(request.method + " " + request.path_and_query);
  for (auto it = failures_.begin(); it != failures_.end(); ++it) {
    if (it->method == request.method &&
        request.path_and_query.find(it->fragment) != std::string::npos) {
      const auto failure = *it;
      failures_.erase(it);
      throw kube::ApiError::from_response(failure.status, failure.body, "watch");
    }
  }
  const auto target = parse_target(request.path_and_query);
  if (!target || target->query.count("watch") == 0)
    throw kube::ApiError::from_response(404, status_body(404, "NotFound", "not a watch"), "watch");
  auto watcher =
      std::make_shared<Watcher>(Watcher{*target, std::make_shared<FakeResponseStream::Script>()});
  const std::string from =
      target->query.count("resourceVersion") ? target->query.at("resourceVersion") : "";
  if (from.empty() || from == "0") {
    for (const auto& [path, stored] : objects_) {
      if (watcher->matches(stored.collection, stored.object))
        push_line(*watcher->script, json{{"type", "ADDED"}, {"object", stored.object}}.dump());
    }
  } else if (std::stoll(from) < history_floor_) {
    push_line(*watcher->script,
              json{{"type", "ERROR"},
                   {"object",
                    json::parse(status_body(410, "Expired", "too old resource version: " + from))}}
                  .dump());
    end_stream(*watcher->script);
    return std::make_unique<FakeResponseStream>(watcher->script);
  } else {
    for (const auto& entry : history_) {
      if (entry.version > std::stoll(from) && watcher->matches(entry.collection, entry.object))
        push_line(*watcher->script, json{{"type", entry.type}, {"object", entry.object}}.dump());
    }
  }
  watchers_.push_back(watcher);
  return std::make_unique<FakeResponseStream>(watcher->script);
}

}  // namespace perimeter::testing
