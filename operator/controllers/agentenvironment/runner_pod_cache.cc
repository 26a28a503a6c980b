#include "controllers/agentenvironment/runner_pod_cache.h"

#include <initializer_list>
#include <string_view>

#include "controllers/agentenvironment/runner_naming.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// Moves the listed keys of `from` that exist into `to`: the pod is being replaced by its trimmed
// form, so nothing is copied (the informer trims every event of every runner pod).
void move_keys(json& from, json& to, std::initializer_list<const char*> keys) {
  if (!from.is_object()) return;
  for (const char* key : keys) {
    const auto it = from.find(key);
    if (it != from.end()) to[key] = std::move(*it);
  }
}

// The object at `key` of `from`, or null when absent (`from` may be anything).
json* member(json& from, const char* key) {
  if (!from.is_object()) return nullptr;
  const auto it = from.find(key);
  return it == from.end() ? nullptr : &*it;
}

}  // namespace

const std::string& cached_string(const json& object, const std::string& key) {
  static const std::string kNone;
  if (!object.is_object()) return kNone;
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get_ref<const std::string&>() : kNone;
}

std::shared_ptr<const kube::JsonFilter> runner_pod_decode_filter() {
  using kube::JsonFilter;
  JsonFilter owner = JsonFilter::members().keep("kind").keep("name").keep("uid").keep("controller");
  JsonFilter metadata = JsonFilter::members()
                            .keep("name")
                            .keep("namespace")
                            .keep("uid")
                            .keep("resourceVersion")
                            .keep("creationTimestamp")
                            .keep("deletionTimestamp")
                            .keep("labels")
                            .keep("annotations")
                            .keep("ownerReferences", std::move(owner));
  JsonFilter termination = JsonFilter::members().keep("reason").keep("exitCode").keep("startedAt");
  JsonFilter container = JsonFilter::members().keep("name").keep(
      "state", JsonFilter::members()
                   .keep("running", JsonFilter::members().keep("startedAt"))
                   .keep("terminated", std::move(termination)));
  JsonFilter status = JsonFilter::members()
                          .keep("phase")
                          .keep("reason")
                          .keep("startTime")
                          .keep("containerStatuses", std::move(container));
  JsonFilter pod =
      JsonFilter::members()
          .keep("apiVersion")
          .keep("kind")
          .keep("metadata", std::move(metadata))
          .keep("spec", JsonFilter::members().keep("schedulingGates").keep("activeDeadlineSeconds"))
          .keep("status", std::move(status));
  return std::make_shared<const JsonFilter>(std::move(pod));
}

void trim_runner_pod(json& pod) {
  json trimmed = json::object();
  move_keys(pod, trimmed, {"apiVersion", "kind"});
  json metadata = json::object();
  if (json* source = member(pod, "metadata")) {
    move_keys(
        *source, metadata,
        {"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"});
    // Perimeter's own labels (the environment's index, the session and work ids), not the
    // template's or the constant ones the informer's selector already matched.
    json labels = json::object();
    if (json* source_labels = member(*source, "labels");
        source_labels && source_labels->is_object()) {
      for (auto it = source_labels->begin(); it != source_labels->end(); ++it) {
        if (std::string_view(it.key()).starts_with("perimeter.dev/"))
          labels[it.key()] = std::move(it.value());
      }
    }
    metadata["labels"] = std::move(labels);
    json annotations = json::object();
    if (json* source_annotations = member(*source, "annotations")) {
      // A warm pod's token hash and assignment too: the assignment service reads them here.
      move_keys(*source_annotations, annotations,
                {kAnnotationWorkId.data(), kAnnotationClaimedAt.data(), kAnnotationOutcome.data(),
                 kAnnotationRecordedAt.data(), kAnnotationSecretVersion.data(),
                 kAnnotationWarmTokenSha256.data(), kAnnotationWarmTemplate.data(),
                 kAnnotationAssignedWorkId.data(), kAnnotationAssignedSessionId.data(),
                 kAnnotationAssignedSecret.data(), kAnnotationAssignmentConfirmedAt.data(),
                 kAnnotationAssignmentNonceSha256.data()});
    }
    metadata["annotations"] = std::move(annotations);
    // The owner, as the controller's owner watch reads it.
    json owners = json::array();
    if (json* source_owners = member(*source, "ownerReferences");
        source_owners && source_owners->is_array()) {
      for (auto& owner : *source_owners) {
        json kept = json::object();
        move_keys(owner, kept, {"kind", "name", "uid", "controller"});
        owners.push_back(std::move(kept));
      }
    }
    metadata["ownerReferences"] = std::move(owners);
  } else {
    metadata["labels"] = json::object();
    metadata["annotations"] = json::object();
    metadata["ownerReferences"] = json::array();
  }
  trimmed["metadata"] = std::move(metadata);

  if (json* spec = member(pod, "spec")) {
    // The deadline: a warm pod's assignment sets one, and lowers one an earlier version set.
    json kept = json::object();
    move_keys(*spec, kept, {"schedulingGates", "activeDeadlineSeconds"});
    if (!kept.empty()) trimmed["spec"] = std::move(kept);
  }

  if (json* status = member(pod, "status")) {
    json kept = json::object();
    // startTime: a warm pod's age at its assignment, which its session's deadline adds to.
    move_keys(*status, kept, {"phase", "reason", "startTime"});
    if (json* containers = member(*status, "containerStatuses");
        containers && containers->is_array()) {
      json terminations = json::array();
      for (auto& container : *containers) {
        json entry = json::object();
        move_keys(container, entry, {"name"});
        if (json* state = member(container, "state")) {
          // When the container started (the start-latency histogram), and how it ended.
          json kept_state = json::object();
          if (json* running = member(*state, "running")) {
            json start = json::object();
            move_keys(*running, start, {"startedAt"});
            kept_state["running"] = std::move(start);
          }
          if (json* terminated = member(*state, "terminated")) {
            json end = json::object();
            move_keys(*terminated, end, {"reason", "exitCode", "startedAt"});
            kept_state["terminated"] = std::move(end);
          }
          if (!kept_state.empty()) entry["state"] = std::move(kept_state);
        }
        terminations.push_back(std::move(entry));
      }
      kept["containerStatuses"] = std::move(terminations);
    }
    if (!kept.empty()) trimmed["status"] = std::move(kept);
  }
  pod = std::move(trimmed);
}

}  // namespace perimeter::agentenvironment
