#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/spec_fields.h"

namespace perimeter::agentenvironment {

inline constexpr const char* kGroup = "perimeter.dev";
inline constexpr const char* kVersion = "v1alpha1";
inline constexpr const char* kKind = "AgentEnvironment";
// The runner pod's variable that carries spec.audit.level to perimeter-runner.
inline constexpr const char* kAuditLevelVariable = "PERIMETER_AUDIT_LEVEL";
// The runner pod's variable naming the file of spec.apiCAConfigMapRef's certificates.
inline constexpr const char* kApiCaFileVariable = "PERIMETER_API_CA_FILE";
// spec.warmPool.maxReady's bound in the CRD: a pool is a burst's worth of pods, and one pass of
// the reconciler creates at most this many.
inline constexpr int kMaxWarmPoolPods = 1000;

// A spec the schema let through but the operator cannot act on; reported in a condition.
using SpecError = runtime::SpecError;

// spec.runner.workspace.persistentVolumeClaim: the session's workspace is a PersistentVolumeClaim
// of its own, made with its first work item and mounted by every later one (docs/workspaces.md).
struct WorkspaceClaimTemplate {
  std::string storage_class_name;  // empty: the cluster's default StorageClass
  std::string size = "1Gi";
  std::string access_mode = "ReadWriteOnce";
  // How long a workspace no pod uses is kept for the session's next message.
  std::int64_t idle_retention_seconds = 604800;
  // whenEnvironmentDeleted: Delete (the claim is owned by the AgentEnvironment and goes with it)
  // or Retain (it is not owned, and stays).
  bool delete_with_environment = true;
};

struct RunnerTemplate {
  std::string image;
  std::string image_pull_policy = "IfNotPresent";
  std::map<std::string, std::string> pod_labels;
  std::map<std::string, std::string> pod_annotations;
  nlohmann::json resources = nlohmann::json::object();
  std::optional<std::string> runtime_class_name;
  std::map<std::string, std::string> node_selector;
  nlohmann::json tolerations = nlohmann::json::array();
  std::vector<std::pair<std::string, std::string>> env;
  std::string workspace_size_limit = "1Gi";
  // Set: each session's /workspace is its own PersistentVolumeClaim; unset: an emptyDir per pod.
  std::optional<WorkspaceClaimTemplate> workspace_claim;
  std::int64_t active_deadline_seconds = 3600;
  std::optional<std::string> service_account_name;
};

// A name runner pods may reach on the listed ports (spec.egress.allowedHosts): exact, or
// "*.example.com" for one or more labels in front of example.com (not example.com itself).
struct AllowedHost {
  std::string host;
  std::vector<int> ports = {443};
};

// spec.warmPool: how many warm runner pods (started before any session, docs/warm-pool.md) the
// operator keeps. The pool's rule is in warm_pool.h.
struct WarmPoolSpec {
  int min_ready = 0;
  int max_ready = 0;
};

// The AgentEnvironment as the operator uses it: the spec with the schema's defaults applied,
// so an object stored before a default existed behaves like a new one.
struct AgentEnvironment {
  std::string name;
  std::string namespace_;
  std::string uid;
  std::int64_t generation = 0;

  std::string environment_id;
  std::string key_secret_name;
  std::string key_secret_key = "environment-key";
  std::string api_base_url = "https://api.anthropic.com";
  // spec.apiCAConfigMapRef: a ConfigMap key of PEM certificates runner pods trust for the API
  // besides the image's CA store; no name when absent.
  std::string api_ca_config_map_name;
  std::string api_ca_config_map_key = "ca.crt";
  int max_concurrent_sessions = 10;
  // Absent: no warm pods.
  std::optional<WarmPoolSpec> warm_pool;
  bool suspend = false;
  int poll_block_ms = 999;
  std::int64_t reclaim_older_than_ms = 5000;
  RunnerTemplate runner;
  std::vector<std::string> egress_allowed_cidrs;
  std::vector<AllowedHost> egress_allowed_hosts;
  std::int64_t retain_succeeded_seconds = 0;
  std::int64_t retain_failed_seconds = 86400;
  // "metadata" or "full": how much of each tool call the runner's audit line holds.
  std::string audit_level = "metadata";
};

// Reads an AgentEnvironment object. Throws SpecError naming the field when a required field is
// missing or has the wrong type.
AgentEnvironment parse_agent_environment(const nlohmann::json& object);

// The ownerReference that makes a child go with its AgentEnvironment.
nlohmann::json owner_reference(const AgentEnvironment& env);

}  // namespace perimeter::agentenvironment
