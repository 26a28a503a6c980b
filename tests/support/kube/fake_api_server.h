#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "kube/transport.h"

namespace perimeter::testing {

// An in-memory Kubernetes API behind the kube::Transport interface, for unit tests of
// controllers: objects of any group/version/resource, resourceVersions and uids, 404/409/410/422
// Status answers, label and field selectors, limit/continue pages, merge and JSON patches, the
// status subresource, delete preconditions and finalizers, dry-run creates, and watches (with a
// bounded history: a watch from a version older than the history gets an ERROR 410).
//
// It is not an apiserver: no admission, no schema validation, no defaulting, no garbage
// collection, and server-side apply is a create-or-merge without field ownership (so no apply
// conflicts). The integration tests are the evidence against the real thing.
class FakeApiServer final : public kube::Transport {
 public:
  FakeApiServer();
  ~FakeApiServer() override;

  kube::HttpResponse send(const kube::HttpRequest& request) override;
  std::unique_ptr<kube::ResponseStream> open_stream(const kube::HttpRequest& request) override;

  // Puts an object straight into storage (its apiVersion/kind decide nothing: `resource_path` is
  // the collection, e.g. "/api/v1/namespaces/a/pods"). Returns the stored object.
  nlohmann::json seed(const std::string& collection_path, nlohmann::json object);
  // The stored object at a path like "/api/v1/namespaces/a/pods/p", if any.
  std::optional<nlohmann::json> object_at(const std::string& path) const;

  // The next request whose method matches and whose path contains `path_fragment` gets this
  // answer instead of being served (one use each, in the order added).
  void fail_next(const std::string& method, const std::string& path_fragment, int status,
                 const std::string& body);
  // Ends every open watch (as an apiserver restart would); clients should re-watch.
  void close_watches();
  // Forgets watch history older than now: a watch from an earlier version gets 410.
  void compact();

  // Every request served so far, as "METHOD path" lines, for assertions.
  std::vector<std::string> requests() const;

  // creationTimestamp of objects created from now on comes from this clock's wall time (a fixed
  // date when none is set), so age-based logic is testable with a FakeClock.
  void use_clock(const Clock* clock);

 private:
  struct Stored {
    std::string collection;  // "/api/v1/namespaces/a/pods" or "/api/v1/nodes"
    nlohmann::json object;
  };
  struct HistoryEntry {
    int64_t version;
    std::string collection;
    std::string type;
    nlohmann::json object;
  };
  struct Watcher;

  kube::HttpResponse serve_locked(const kube::HttpRequest& request);
  nlohmann::json stamp_locked(nlohmann::json object, const std::string& collection);
  void record_locked(const std::string& collection, const std::string& type,
                     const nlohmann::json& object);

  mutable std::mutex mutex_;
  int64_t version_ = 100;
  int64_t uid_counter_ = 0;
  std::map<std::string, Stored> objects_;  // by full object path
  std::deque<HistoryEntry> history_;
  int64_t history_floor_ = 100;  // the oldest version a watch may start from
  std::vector<std::shared_ptr<Watcher>> watchers_;
  struct Failure {
    std::string method, fragment;
    int status;
    std::string body;
  };
  std::deque<Failure> failures_;
  std::vector<std::string> requests_;
  const Clock* clock_ = nullptr;
};

}  // namespace perimeter::testing
