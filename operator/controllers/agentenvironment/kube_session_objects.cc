#include "controllers/agentenvironment/kube_session_objects.h"

#include "controllers/agentenvironment/runner_naming.h"
#include "kube/api_error.h"

namespace perimeter::agentenvironment {

void KubeSessionObjectWriter::ensure_secret(const nlohmann::json& secret) {
  const std::string ns = secret["metadata"]["namespace"];
  try {
    secrets_.create(ns, secret);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
    // A retried claim: the item's secret may have been re-issued with the re-poll.
    secrets_.merge_patch(ns, secret["metadata"]["name"], {{"stringData", secret["stringData"]}});
  }
}

bool KubeSessionObjectWriter::ensure_pod(const nlohmann::json& pod) {
  const std::string ns = pod["metadata"]["namespace"];
  const std::string name = pod["metadata"]["name"];
  try {
    pods_.create(ns, pod);
    return true;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
  }
  const auto existing = pods_.get(ns, name);
  const std::string want = pod["metadata"]["annotations"].value(std::string(kAnnotationWorkId), "");
  const auto annotations = existing["metadata"].value("annotations", nlohmann::json::object());
  const std::string have = annotations.value(std::string(kAnnotationWorkId), "");
  if (have != want) {
    throw std::runtime_error("pod " + ns + "/" + name + " belongs to work item '" + have +
                             "', not '" + want + "'");
  }
  return false;
}

bool pod_finished(const nlohmann::json& pod) {
  const auto status = pod.find("status");
  if (status == pod.end() || !status->is_object()) return false;
  const std::string phase = status->value("phase", "");
  return phase == "Succeeded" || phase == "Failed";
}

PodCensus StoreRunnerPodCensus::census(const std::string& ns, const std::string& environment_name) {
  PodCensus census;
  const std::string selector =
      std::string(kLabelEnvironment) + "=" + label_value_for(environment_name);
  for (const auto& pod : pods_.by_index(runtime::Store::kLabelIndex, selector)) {
    const auto& metadata = (*pod)["metadata"];
    if (metadata.value("namespace", "") != ns) continue;
    const std::string name = metadata.value("name", "");
    census.all.insert(name);
    if (!pod_finished(*pod)) census.unfinished.insert(name);
  }
  return census;
}

}  // namespace perimeter::agentenvironment
