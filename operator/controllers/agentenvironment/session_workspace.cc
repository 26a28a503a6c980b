#include "controllers/agentenvironment/session_workspace.h"

#include <cctype>

#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "kube/api_error.h"

namespace perimeter::agentenvironment {

std::string workspace_claim_name(std::string_view session_id) {
  return object_name_for("workspace-", session_id);
}

std::string workspace_claim_selector(const AgentEnvironment& env) {
  return std::string(kLabelEnvironment) + "=" + label_value_for(env.name) + "," +
         std::string(kLabelComponent) + "=" + std::string(kWorkspaceComponent) + "," +
         std::string(kLabelManagedBy) + "=perimeter";
}

nlohmann::json build_workspace_claim(const AgentEnvironment& env, const std::string& session_id,
                                     const std::string& claimed_at) {
  const WorkspaceClaimTemplate t = env.runner.workspace_claim.value_or(WorkspaceClaimTemplate{});
  nlohmann::json labels = {{std::string(kLabelEnvironment), label_value_for(env.name)},
                           {std::string(kLabelComponent), std::string(kWorkspaceComponent)},
                           {std::string(kLabelManagedBy), "perimeter"},
                           {std::string(kLabelSessionId), label_value_for(session_id)}};
  nlohmann::json metadata = {{"name", workspace_claim_name(session_id)},
                             {"namespace", env.namespace_},
                             {"labels", labels},
                             {"annotations",
                              {{std::string(kAnnotationSessionId), session_id},
                               {std::string(kAnnotationEnvironmentName), env.name},
                               {std::string(kAnnotationWorkspaceClaimedAt), claimed_at}}}};
  // whenEnvironmentDeleted: Delete makes the AgentEnvironment the claim's owner, so the garbage
  // collector removes it with the resource (StatefulSet's persistentVolumeClaimRetentionPolicy
  // does the same); not the controller, so the runner pods' watch does not map it.
  if (t.delete_with_environment) {
    nlohmann::json owner = owner_reference(env);
    owner["controller"] = false;
    owner["blockOwnerDeletion"] = false;
    metadata["ownerReferences"] = nlohmann::json::array({owner});
  }
  nlohmann::json spec = {{"accessModes", {t.access_mode}},
                         {"resources", {{"requests", {{"storage", t.size}}}}},
                         {"volumeMode", "Filesystem"}};
  if (!t.storage_class_name.empty()) spec["storageClassName"] = t.storage_class_name;
  return {{"apiVersion", "v1"},
          {"kind", "PersistentVolumeClaim"},
          {"metadata", metadata},
          {"spec", spec}};
}

std::vector<std::string> KubeSessionWorkspaces::live_pods(const AgentEnvironment& env,
                                                          const std::string& session_id,
                                                          const std::string& except) {
  kube::ListOptions options;
  options.label_selector = std::string(kLabelEnvironment) + "=" + label_value_for(env.name) + "," +
                           std::string(kLabelSessionId) + "=" + label_value_for(session_id);
  std::vector<std::string> live;
  for (const auto& pod :
       pods_.list(env.namespace_, options).value("items", nlohmann::json::array())) {
    const std::string name = pod["metadata"].value("name", "");
    if (name == except || pod_finished(pod)) continue;
    live.push_back(name);
  }
  return live;
}

bool KubeSessionWorkspaces::ensure_claim(const nlohmann::json& claim) {
  const std::string ns = claim["metadata"].value("namespace", "");
  const std::string name = claim["metadata"].value("name", "");
  const std::string claimed_at =
      claim["metadata"]["annotations"].value(std::string(kAnnotationWorkspaceClaimedAt), "");
  // A later item of the session finds the claim there: one write that stamps it (and bumps its
  // resourceVersion, so a retention delete decided before it fails). A first item gets 404, and
  // creates it.
  const nlohmann::json patch = {{"metadata",
                                 {{"annotations",
                                   {{std::string(kAnnotationWorkspaceClaimedAt), claimed_at},
                                    {std::string(kAnnotationWorkspaceIdleSince), nullptr}}}}}};
  for (int attempt = 0; attempt < 3; ++attempt) {
    try {
      const nlohmann::json live = claims_.merge_patch(ns, name, patch);
      if (live["metadata"].contains("deletionTimestamp")) {
        throw WorkspaceBusy("the workspace claim " + ns + "/" + name +
                            " is being deleted; the item waits for it to go, then makes it anew");
      }
      return false;
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kNotFound) throw;
    }
    try {
      claims_.create(ns, claim);
      return true;
    } catch (const kube::ApiError& e) {
      if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
    }
  }
  throw std::runtime_error("workspace claim " + ns + "/" + name +
                           " kept appearing and disappearing while it was written");
}

void KubeSessionWorkspaces::mark_idle(const nlohmann::json& cached, const std::string& idle_since) {
  nlohmann::json updated = cached;
  updated["metadata"]["annotations"][std::string(kAnnotationWorkspaceIdleSince)] = idle_since;
  try {
    claims_.update(cached["metadata"].value("namespace", ""), updated);
  } catch (const kube::ApiError& e) {
    // Changed since the cache saw it (a new item stamped it) or gone: the next pass decides again.
    if (e.kind() != kube::ErrorKind::kConflict && e.kind() != kube::ErrorKind::kNotFound) throw;
  }
}

bool KubeSessionWorkspaces::remove_claim(const nlohmann::json& cached) {
  const auto& metadata = cached["metadata"];
  kube::DeleteOptions options;
  options.precondition_uid = metadata.value("uid", "");
  options.precondition_resource_version = metadata.value("resourceVersion", "");
  try {
    claims_.remove(metadata.value("namespace", ""), metadata.value("name", ""), options);
    return true;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kConflict && e.kind() != kube::ErrorKind::kNotFound) throw;
    return false;
  }
}

void KubeSessionWorkspaces::set_owner(const nlohmann::json& cached, const nlohmann::json& owner) {
  nlohmann::json updated = cached;
  updated["metadata"]["ownerReferences"] =
      owner.is_null() ? nlohmann::json::array() : nlohmann::json::array({owner});
  try {
    claims_.update(cached["metadata"].value("namespace", ""), updated);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kConflict && e.kind() != kube::ErrorKind::kNotFound) throw;
  }
}

}  // namespace perimeter::agentenvironment
