#include "controllers/agentenvironment/runner_pod_cache.h"

#include <initializer_list>
#include <string_view>

#include "controllers/agentenvironment/runner_naming.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// Copies the listed keys of `from` that exist into `to`.
void copy_keys(const json& from, json& to, std::initializer_list<const char*> keys) {
  if (!from.is_object()) return;
  for (const char* key : keys) {
    const auto it = from.find(key);
    if (it != from.end()) to[key] = *it;
  }
}

}  // namespace

void trim_runner_pod(json& pod) {
  json trimmed = json::object();
  copy_keys(pod, trimmed, {"apiVersion", "kind"});
  const json source = pod.value("metadata", json::object());
  json metadata = json::object();
  copy_keys(
      source, metadata,
      {"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"});
  // Perimeter's own labels (the environment's index, the session and work ids), not the
  // template's or the constant ones the informer's selector already matched.
  json labels = json::object();
  const json source_labels = source.value("labels", json::object());
  for (const auto& [key, value] : source_labels.items()) {
    if (std::string_view(key).starts_with("perimeter.dev/")) labels[key] = value;
  }
  metadata["labels"] = std::move(labels);
  json annotations = json::object();
  copy_keys(source.value("annotations", json::object()), annotations,
            {kAnnotationWorkId.data(), kAnnotationClaimedAt.data(), kAnnotationOutcome.data(),
             kAnnotationRecordedAt.data()});
  metadata["annotations"] = std::move(annotations);
  // The owner, as the controller's owner watch reads it.
  json owners = json::array();
  const json source_owners = source.value("ownerReferences", json::array());
  for (const auto& owner : source_owners) {
    json kept = json::object();
    copy_keys(owner, kept, {"kind", "name", "uid", "controller"});
    owners.push_back(std::move(kept));
  }
  metadata["ownerReferences"] = std::move(owners);
  trimmed["metadata"] = std::move(metadata);

  const json spec = pod.value("spec", json::object());
  if (const auto gates = spec.find("schedulingGates"); gates != spec.end()) {
    trimmed["spec"] = {{"schedulingGates", *gates}};
  }

  const json status = pod.value("status", json::object());
  json kept = json::object();
  copy_keys(status, kept, {"phase", "reason"});
  if (const auto containers = status.find("containerStatuses");
      containers != status.end() && containers->is_array()) {
    json terminations = json::array();
    for (const auto& container : *containers) {
      json entry = json::object();
      copy_keys(container, entry, {"name"});
      const json state = container.value("state", json::object());
      if (const auto terminated = state.find("terminated"); terminated != state.end()) {
        json end = json::object();
        copy_keys(*terminated, end, {"reason", "exitCode"});
        entry["state"] = {{"terminated", std::move(end)}};
      }
      terminations.push_back(std::move(entry));
    }
    kept["containerStatuses"] = std::move(terminations);
  }
  if (!kept.empty()) trimmed["status"] = std::move(kept);
  pod = std::move(trimmed);
}

}  // namespace perimeter::agentenvironment
