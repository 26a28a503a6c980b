#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kube/client_metrics.h"
#include "kube/json_filter.h"
#include "kube/resource.h"
#include "kube/transport.h"

namespace perimeter::kube {

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;  // 0: no paging
  std::string continue_token;
  std::string resource_version;
};

struct DeleteOptions {
  std::optional<std::string> precondition_uid;
  std::optional<std::string> precondition_resource_version;
  std::string propagation_policy;  // "Foreground", "Background", "Orphan" or "" (server default)
  std::optional<int64_t> grace_period_seconds;
  // What of the answer (the object or a Status) to build; null: all of it.
  const JsonFilter* answer = nullptr;
};

struct ApplyOptions {
  std::string field_manager;  // required by the server
  bool force = false;
};

// Per-call settings of the verbs that take them.
struct RequestOptions {
  // Bounds each HTTP request of the call (zero: the transport's default, Config::request_timeout).
  // A caller with a deadline of its own (a leader renewing its lease) passes what remains of it.
  // Such a call is not sent again after a 429: it fails, and the caller retries on its schedule.
  std::chrono::milliseconds timeout{0};
  // create only: the apiserver validates and admits the object (PodSecurity, webhooks, quota)
  // and stores nothing (`dryRun=All`).
  bool dry_run = false;
  // What of a 2xx answer to build (null: all of it), for a caller that reads a few fields of a
  // large object. An error's body is kept whole.
  const JsonFilter* answer = nullptr;
};

struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;
  bool allow_bookmarks = true;
  // The server ends the watch after this long; the client then resumes from the last version.
  int timeout_seconds = 300;
  // What of each event's object to build (null: all of it). An ERROR event's Status is always
  // read whole.
  std::shared_ptr<const JsonFilter> object_filter;
};

enum class WatchEventType { kAdded, kModified, kDeleted, kBookmark, kError };
const char* to_string(WatchEventType type);

struct WatchEvent {
  WatchEventType type;
  nlohmann::json object;  // the object, or the Status of an ERROR event
};

// Decodes one line of a watch stream. Throws DecodeError with the line in it when the line is
// not JSON, has no known type, or carries no object. With `event_filter` (see
// watch_event_filter()), only what it keeps of the event is built, except for an ERROR event.
WatchEvent decode_watch_event(const std::string& line, const JsonFilter* event_filter = nullptr);

// The filter of a whole watch event whose object is filtered by `object_filter`.
JsonFilter watch_event_filter(const JsonFilter& object_filter);

// A watch: events in the order the server sent them.
class WatchStream {
 public:
  WatchStream(std::unique_ptr<ResponseStream> stream, ClientMetrics& metrics, std::string context,
              const JsonFilter* object_filter = nullptr);
  // The next event; nullopt when the server ended the watch. Throws DecodeError (counted) on a
  // line that does not decode, TransportError when the connection breaks.
  std::optional<WatchEvent> next();
  // Unblocks next() from another thread.
  void cancel() { stream_->cancel(); }

 private:
  std::unique_ptr<ResponseStream> stream_;
  ClientMetrics& metrics_;
  std::string context_;
  std::optional<JsonFilter> event_filter_;
};

// Typed verbs on one resource type, objects as JSON. Every call goes through the Transport,
// counts perimeter_kube_requests_total{verb,code}, and turns a non-2xx answer into an ApiError
// that keeps the server's Status.
class ResourceClient {
 public:
  ResourceClient(Transport& transport, ResourceType type, ClientMetrics& metrics);

  const ResourceType& type() const { return type_; }

  // A 429 (the apiserver's priority and fairness, or a webhook's throttling) is sent again after
  // the Status's retryAfterSeconds (1 s when it names none, at most kMaxThrottleWait), up to
  // kMaxThrottleRetries times, as client-go does; each retry is counted in
  // perimeter_kube_retries_total{verb,reason="throttled"}. Watches are not retried here (the
  // informer has its own backoff). Tests replace the wait.
  static constexpr int kMaxThrottleRetries = 3;
  static constexpr std::chrono::seconds kMaxThrottleWait{10};
  void set_sleeper(std::function<void(std::chrono::milliseconds)> sleeper) {
    sleeper_ = std::move(sleeper);
  }

  nlohmann::json get(const std::string& ns, const std::string& name,
                     const RequestOptions& request = {});
  // One page; follow metadata.continue for the next one.
  nlohmann::json list(const std::string& ns, const ListOptions& options = {});
  // Every page, merged into one list whose metadata.resourceVersion is the first page's (the
  // snapshot the pages belong to).
  nlohmann::json list_all(const std::string& ns, ListOptions options = {});
  nlohmann::json create(const std::string& ns, const nlohmann::json& object,
                        const RequestOptions& request = {});
  // POST to a subresource that creates something (serviceaccounts/token, pods/eviction).
  nlohmann::json create_subresource(const std::string& ns, const std::string& name,
                                    const std::string& subresource, const nlohmann::json& object);
  // PUT with the object's metadata.resourceVersion: a stale version gets 409 Conflict.
  nlohmann::json update(const std::string& ns, const nlohmann::json& object,
                        const RequestOptions& request = {});
  // Returns the server's answer: the object (when finalizers keep it) or a Status.
  nlohmann::json remove(const std::string& ns, const std::string& name,
                        const DeleteOptions& options = {});
  nlohmann::json merge_patch(const std::string& ns, const std::string& name,
                             const nlohmann::json& patch, const RequestOptions& request = {});
  nlohmann::json json_patch(const std::string& ns, const std::string& name,
                            const nlohmann::json& operations);
  // Built-in kinds only: lists merge by their patch keys, so one entry can be deleted with
  // `{"$patch": "delete", <key>: ...}` without touching the others.
  nlohmann::json strategic_merge_patch(const std::string& ns, const std::string& name,
                                       const nlohmann::json& patch);
  // Server-side apply of a (partial) object, which must carry apiVersion, kind and name.
  nlohmann::json apply(const std::string& ns, const nlohmann::json& object,
                       const ApplyOptions& options);

  // The status subresource.
  nlohmann::json get_status(const std::string& ns, const std::string& name);
  nlohmann::json update_status(const std::string& ns, const nlohmann::json& object);
  nlohmann::json merge_patch_status(const std::string& ns, const std::string& name,
                                    const nlohmann::json& patch);
  nlohmann::json apply_status(const std::string& ns, const nlohmann::json& object,
                              const ApplyOptions& options);

  std::unique_ptr<WatchStream> watch(const std::string& ns, const WatchOptions& options);

 private:
  nlohmann::json call(const std::string& verb, const std::string& method, const std::string& path,
                      const std::string& body = "", const std::string& content_type = "",
                      const RequestOptions& options = {});
  nlohmann::json apply_to(const std::string& ns, const nlohmann::json& object,
                          const ApplyOptions& options, const std::string& subresource);
  static std::string name_of(const nlohmann::json& object);

  Transport& transport_;
  ResourceType type_;
  ClientMetrics& metrics_;
  std::function<void(std::chrono::milliseconds)> sleeper_;
};

}  // namespace perimeter::kube
