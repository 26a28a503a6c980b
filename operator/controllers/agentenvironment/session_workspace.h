#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controllers/agentenvironment/agent_environment.h"
#include "kube/resource_client.h"

namespace perimeter::agentenvironment {

// A session's workspace as a PersistentVolumeClaim (spec.runner.workspace.persistentVolumeClaim):
// one claim per session, named from the session id alone, made with the session's first work
// item and mounted at /workspace by each later one, never by two live pods at once
// (docs/workspaces.md, and docs/claiming.md for the wait).

// The component label of workspace claims (runner pods, Secrets and policies say "runner").
inline constexpr std::string_view kWorkspaceComponent = "workspace";
// The exact session id (the label may be a hash of it).
inline constexpr std::string_view kAnnotationSessionId = "perimeter.dev/session-id";
// The exact name of the AgentEnvironment whose sessions use the claim (the label may be a hash).
inline constexpr std::string_view kAnnotationEnvironmentName = "perimeter.dev/environment-name";
// When the latest claim that mounts the workspace polled its item; written before its pod.
inline constexpr std::string_view kAnnotationWorkspaceClaimedAt =
    "perimeter.dev/workspace-claimed-at";
// When the operator first saw no live pod of the session after that claim: retention counts
// from here.
inline constexpr std::string_view kAnnotationWorkspaceIdleSince =
    "perimeter.dev/workspace-idle-since";

// The claim's name, from the session id alone: every item of the session finds it, and a retried
// create meets AlreadyExists. A DNS label of at most 63 characters.
std::string workspace_claim_name(std::string_view session_id);

// The PersistentVolumeClaim of `session_id` as `env`'s template builds it, stamped with
// `claimed_at`. Owned by the AgentEnvironment when whenEnvironmentDeleted is Delete.
nlohmann::json build_workspace_claim(const AgentEnvironment& env, const std::string& session_id,
                                     const std::string& claimed_at);

// The label selector of `env`'s workspace claims.
std::string workspace_claim_selector(const AgentEnvironment& env);

// The workspace is busy: another live pod of the session mounts it, another start of the session
// is under way, or the claim is being deleted. The item waits (docs/claiming.md).
class WorkspaceBusy : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The Kubernetes side of session workspaces, behind an interface so that the claim path and
// retention are unit-tested against the in-memory apiserver and fakes.
class SessionWorkspaces {
 public:
  virtual ~SessionWorkspaces() = default;
  // The names of `env`'s runner pods of `session_id` that have not finished, other than
  // `except`, as the apiserver lists them now (not a cache, which may not show a pod made a
  // moment ago by an earlier leader).
  virtual std::vector<std::string> live_pods(const AgentEnvironment& env,
                                             const std::string& session_id,
                                             const std::string& except) = 0;
  // Makes the claim, or records on the existing one that a new item will mount it (its
  // workspace-claimed-at, and no idle-since): the write that makes retention's delete, which
  // carries the resourceVersion it read, fail. Returns true when it created the claim. Throws
  // WorkspaceBusy when the claim is being deleted (the next pass makes it anew).
  virtual bool ensure_claim(const nlohmann::json& claim) = 0;
  // Stamps the idle-since annotation of the claim as cached, with its resourceVersion.
  virtual void mark_idle(const nlohmann::json& cached, const std::string& idle_since) = 0;
  // Deletes the claim as cached: uid and resourceVersion as preconditions, so a claim a new item
  // recorded itself on since stays. False when it was not deleted (changed, or gone).
  virtual bool remove_claim(const nlohmann::json& cached) = 0;
  // Makes the claim owned by the AgentEnvironment (`owner`), or not (null), as the policy says.
  virtual void set_owner(const nlohmann::json& cached, const nlohmann::json& owner) = 0;
};

class KubeSessionWorkspaces final : public SessionWorkspaces {
 public:
  KubeSessionWorkspaces(kube::ResourceClient& claims, kube::ResourceClient& pods)
      : claims_(claims), pods_(pods) {}
  std::vector<std::string> live_pods(const AgentEnvironment& env, const std::string& session_id,
                                     const std::string& except) override;
  bool ensure_claim(const nlohmann::json& claim) override;
  void mark_idle(const nlohmann::json& cached, const std::string& idle_since) override;
  bool remove_claim(const nlohmann::json& cached) override;
  void set_owner(const nlohmann::json& cached, const nlohmann::json& owner) override;

 private:
  kube::ResourceClient& claims_;
  kube::ResourceClient& pods_;
};

}  // namespace perimeter::agentenvironment
