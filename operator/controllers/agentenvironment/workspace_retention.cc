#include "controllers/agentenvironment/workspace_retention.h"

#include "controllers/agentenvironment/kube_session_objects.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_pod_cache.h"
#include "core/time_format.h"

namespace perimeter::agentenvironment {

using nlohmann::json;

WorkspaceRetention::WorkspaceRetention(Dependencies deps, Options options)
    : deps_(std::move(deps)), options_(options) {}

WorkspaceRetention::SessionPods WorkspaceRetention::pods_of(const AgentEnvironment& env,
                                                            const std::string& session_id,
                                                            const std::string& claimed_at) const {
  SessionPods found;
  const std::string environment = label_value_for(env.name);
  for (const auto& pod :
       deps_.pods.by_index(runtime::Store::kLabelIndex,
                           std::string(kLabelSessionId) + "=" + label_value_for(session_id))) {
    const json& metadata = (*pod)["metadata"];
    if (cached_string(metadata, "namespace") != env.namespace_) continue;
    const auto labels = metadata.find("labels");
    if (labels == metadata.end() ||
        cached_string(*labels, std::string(kLabelEnvironment)) != environment) {
      continue;
    }
    if (!pod_finished(*pod)) found.live = true;
    const auto annotations = metadata.find("annotations");
    if (!claimed_at.empty() && annotations != metadata.end() &&
        cached_string(*annotations, std::string(kAnnotationClaimedAt)) == claimed_at) {
      found.claim_seen = true;
    }
  }
  return found;
}

WorkspaceFigures WorkspaceRetention::survey(
    const AgentEnvironment& env, const std::set<std::string>& busy_sessions,
    const std::function<SessionFate(const std::string&)>& session_fate,
    const EventSink& record_event) {
  WorkspaceFigures figures;
  const auto now = deps_.clock.now();
  const auto wall = deps_.clock.wall_now();
  const std::string environment_label = env.namespace_ + "/" + env.name;
  const auto note_next = [&](Clock::Duration wait) {
    if (!figures.next_check || wait < *figures.next_check) figures.next_check = wait;
  };
  // The claims carry the environment's label; the namespace is checked (the label is not unique
  // across namespaces).
  const auto claims =
      deps_.claims.by_index(runtime::Store::kLabelIndex,
                            std::string(kLabelEnvironment) + "=" + label_value_for(env.name));
  const WorkspaceClaimTemplate policy =
      env.runner.workspace_claim.value_or(WorkspaceClaimTemplate{});
  json owner = nullptr;
  if (policy.delete_with_environment) {
    owner = owner_reference(env);
    owner["controller"] = false;
    owner["blockOwnerDeletion"] = false;
  }
  std::map<std::string, std::size_t> by_state;
  std::set<std::string> seen;
  for (const auto& claim : claims) {
    const json& metadata = (*claim)["metadata"];
    if (metadata.value("namespace", "") != env.namespace_) continue;
    const json labels = metadata.value("labels", json::object());
    if (labels.value(std::string(kLabelComponent), "") != kWorkspaceComponent) continue;
    const json annotations = metadata.value("annotations", json::object());
    const std::string session_id = annotations.value(std::string(kAnnotationSessionId), "");
    const std::string name = metadata.value("name", "");
    const std::string uid = metadata.value("uid", "");
    if (session_id.empty() || metadata.contains("deletionTimestamp")) continue;
    ++figures.total;
    seen.insert(uid);

    // whenEnvironmentDeleted may have changed since the claim was made: its owner follows.
    bool owned = false;
    for (const auto& ref : metadata.value("ownerReferences", json::array())) {
      owned = owned || ref.value("uid", "") == env.uid;
    }
    if (owned != policy.delete_with_environment) {
      try {
        deps_.workspaces.set_owner(*claim, owner);
      } catch (const std::exception& e) {
        deps_.logger.warn(
            "could not set the workspace claim's owner",
            {{"environment", environment_label}, {"claim", name}, {"error", e.what()}});
      }
    }

    const std::string phase = (*claim).value("status", json::object()).value("phase", "Pending");
    const std::string claimed_at_text =
        annotations.value(std::string(kAnnotationWorkspaceClaimedAt), "");
    const auto claimed_at = parse_rfc3339_micros(claimed_at_text);
    const SessionPods session_pods = pods_of(env, session_id, claimed_at_text);
    const bool busy =
        busy_sessions.count(session_id) > 0 || session_pods.live ||
        (claimed_at && !session_pods.claim_seen && wall - *claimed_at < options_.recent_claim);
    if (phase == "Lost") ++by_state["Lost"];
    if (phase != "Bound" && phase != "Lost") {
      ++figures.pending;
      ++by_state["Pending"];
      const auto created = parse_rfc3339(metadata.value("creationTimestamp", ""));
      if (created) {
        const auto age = wall - *created;
        if (age >= options_.unbound_warning) {
          bool first = false;
          {
            std::lock_guard lock(mutex_);
            first = remembered_[environment_label].warned_unbound.insert(uid).second;
          }
          if (first) {
            const std::string storage_class =
                (*claim)["spec"].value("storageClassName", std::string("the cluster's default"));
            record_event(
                "Warning", "WorkspaceNotBound",
                "workspace claim " + name + " of session " + session_id + " is not bound after " +
                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(age).count()) +
                    " s (storage class " + storage_class +
                    "): its pod cannot start; see kubectl describe pvc " + name);
          }
        } else {
          note_next(std::chrono::duration_cast<Clock::Duration>(options_.unbound_warning - age));
        }
      }
    } else if (phase == "Bound") {
      ++by_state[busy ? "Bound" : "Idle"];
    }
    if (busy) {
      ++figures.in_use;
      continue;
    }
    ++figures.idle;

    // Idle: since when? Stamped once after each item's claim; retention counts from the stamp.
    const auto idle_since =
        parse_rfc3339_micros(annotations.value(std::string(kAnnotationWorkspaceIdleSince), ""));
    if (!idle_since || (claimed_at && *idle_since < *claimed_at)) {
      try {
        deps_.workspaces.mark_idle(*claim, format_rfc3339_micros(wall));
      } catch (const std::exception& e) {
        deps_.logger.warn(
            "could not mark the workspace claim idle",
            {{"environment", environment_label}, {"claim", name}, {"error", e.what()}});
      }
      note_next(std::chrono::seconds(policy.idle_retention_seconds));
      continue;
    }
    std::string reason;
    const auto retained_until = *idle_since + std::chrono::seconds(policy.idle_retention_seconds);
    if (wall >= retained_until) {
      reason = "retention";
    } else {
      note_next(std::chrono::duration_cast<Clock::Duration>(retained_until - wall));
      bool ask = false;
      {
        std::lock_guard lock(mutex_);
        auto& checked = remembered_[environment_label].session_checked;
        const auto it = checked.find(uid);
        ask = session_fate && (it == checked.end() || now - it->second >= options_.session_check);
        if (ask) checked[uid] = now;
      }
      if (ask) {
        const SessionFate fate = session_fate(session_id);
        if (fate == SessionFate::kTerminated) reason = "terminated";
        if (fate == SessionFate::kGone) reason = "session_gone";
      }
      note_next(options_.session_check);
    }
    if (reason.empty()) continue;
    bool removed = false;
    try {
      removed = deps_.workspaces.remove_claim(*claim);
    } catch (const std::exception& e) {
      deps_.logger.warn("could not delete the workspace claim",
                        {{"environment", environment_label}, {"claim", name}, {"error", e.what()}});
      continue;
    }
    if (!removed) continue;  // stamped by a new item since the cache saw it, or gone
    seen.erase(uid);
    --figures.total;
    --figures.idle;
    if (phase == "Bound") --by_state["Idle"];
    deps_.metrics.workspaces_deleted_total
        .Add({{"environment", environment_label}, {"reason", reason}})
        .Increment();
    const std::string why = reason == "retention"
                                ? "no pod used it for " +
                                      std::to_string(policy.idle_retention_seconds) +
                                      " s (idleRetentionSeconds)"
                            : reason == "terminated" ? "the session is terminated"
                                                     : "the API no longer knows the session";
    deps_.logger.info("deleted a session workspace claim", {{"environment", environment_label},
                                                            {"claim", name},
                                                            {"session_id", session_id},
                                                            {"reason", reason}});
    record_event("Normal", "WorkspaceDeleted",
                 "workspace claim " + name + " of session " + session_id + " deleted: " + why);
  }
  deps_.metrics.set_session_workspaces(environment_label, by_state);
  {
    // Claims deleted, by us or anyone, are forgotten.
    std::lock_guard lock(mutex_);
    auto& remembered = remembered_[environment_label];
    std::erase_if(remembered.warned_unbound, [&](const auto& uid) { return !seen.count(uid); });
    std::erase_if(remembered.session_checked,
                  [&](const auto& entry) { return !seen.count(entry.first); });
  }
  return figures;
}

void WorkspaceRetention::forget(const std::string& environment_key) {
  std::lock_guard lock(mutex_);
  remembered_.erase(environment_key);
}

}  // namespace perimeter::agentenvironment
