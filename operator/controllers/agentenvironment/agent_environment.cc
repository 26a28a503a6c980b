#include "controllers/agentenvironment/agent_environment.h"

#include "runtime/spec_fields.h"

namespace perimeter::agentenvironment {

using runtime::child;
using runtime::read_optional;
using runtime::required_string;

namespace {

// A DNS name of letters, digits and hyphens in dot-separated labels of 1..63, optionally behind
// "*."; not an IP address (addresses belong in allowedCIDRs).
bool valid_allowed_host(const std::string& host) {
  std::string_view name = host;
  if (name.rfind("*.", 0) == 0) name.remove_prefix(2);
  if (name.empty() || name.size() > 253) return false;
  bool any_letter = false;
  std::size_t label = 0;
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (label == 0 || label > 63 || name[i - 1] == '-' || name[i - label] == '-') return false;
      label = 0;
      continue;
    }
    const char c = name[i];
    const bool letter = c >= 'a' && c <= 'z';
    if (!letter && !(c >= '0' && c <= '9') && c != '-') return false;
    any_letter = any_letter || letter;
    ++label;
  }
  return any_letter && name.find('.') != std::string_view::npos;
}

std::vector<AllowedHost> parse_allowed_hosts(const nlohmann::json& egress) {
  std::vector<AllowedHost> hosts;
  const auto it = egress.find("allowedHosts");
  if (it == egress.end() || it->is_null()) return hosts;
  if (!it->is_array()) throw SpecError("spec.egress.allowedHosts must be a list");
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string path = "spec.egress.allowedHosts[" + std::to_string(i) + "]";
    const auto& entry = (*it)[i];
    if (!entry.is_object()) throw SpecError(path + " must be an object");
    AllowedHost allowed;
    allowed.host = required_string(entry, "host", path);
    if (!valid_allowed_host(allowed.host)) {
      throw SpecError(path + ".host '" + allowed.host +
                      "' must be a lowercase DNS name such as api.github.com or *.pypi.org "
                      "(addresses go in allowedCIDRs)");
    }
    if (entry.contains("ports")) {
      allowed.ports.clear();
      read_optional(entry, "ports", path, &allowed.ports);
      if (allowed.ports.empty()) throw SpecError(path + ".ports must not be empty");
      for (const int port : allowed.ports) {
        if (port < 1 || port > 65535) {
          throw SpecError(path + ".ports: " + std::to_string(port) + " is not a TCP port");
        }
      }
    }
    hosts.push_back(std::move(allowed));
  }
  return hosts;
}

}  // namespace

AgentEnvironment parse_agent_environment(const nlohmann::json& object) {
  if (!object.is_object()) throw SpecError("the object is not a JSON object");
  AgentEnvironment env;
  const auto& metadata = child(object, "metadata");
  read_optional(metadata, "name", "metadata", &env.name);
  read_optional(metadata, "namespace", "metadata", &env.namespace_);
  read_optional(metadata, "uid", "metadata", &env.uid);
  read_optional(metadata, "generation", "metadata", &env.generation);
  if (env.name.empty()) throw SpecError("metadata.name is required");

  const auto spec_it = object.find("spec");
  if (spec_it == object.end() || !spec_it->is_object()) throw SpecError("spec is required");
  const auto& spec = *spec_it;
  env.environment_id = required_string(spec, "environmentId", "spec");
  const auto& key_ref = child(spec, "environmentKeySecretRef");
  env.key_secret_name = required_string(key_ref, "name", "spec.environmentKeySecretRef");
  read_optional(key_ref, "key", "spec.environmentKeySecretRef", &env.key_secret_key);
  read_optional(spec, "apiBaseUrl", "spec", &env.api_base_url);
  if (spec.contains("apiCAConfigMapRef")) {
    const auto& ca_ref = child(spec, "apiCAConfigMapRef");
    env.api_ca_config_map_name = required_string(ca_ref, "name", "spec.apiCAConfigMapRef");
    read_optional(ca_ref, "key", "spec.apiCAConfigMapRef", &env.api_ca_config_map_key);
    // The key becomes a file name in the runner pod: the schema says so; an object stored before
    // it did must not be able to name a path.
    const std::string& key = env.api_ca_config_map_key;
    if (key.empty() || key == "." || key.rfind("..", 0) == 0 ||
        key.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") !=
            std::string::npos) {
      throw SpecError("spec.apiCAConfigMapRef.key '" + key + "' is not a file name");
    }
  }
  read_optional(spec, "maxConcurrentSessions", "spec", &env.max_concurrent_sessions);
  if (env.max_concurrent_sessions < 1) throw SpecError("spec.maxConcurrentSessions must be >= 1");
  if (spec.contains("warmPool") && !spec["warmPool"].is_null()) {
    // The schema bounds both and orders them; an object stored before it did is refused here.
    const auto& pool = child(spec, "warmPool");
    WarmPoolSpec parsed;
    read_optional(pool, "minReady", "spec.warmPool", &parsed.min_ready);
    read_optional(pool, "maxReady", "spec.warmPool", &parsed.max_ready);
    if (parsed.min_ready < 0 || parsed.max_ready > kMaxWarmPoolPods ||
        parsed.min_ready > parsed.max_ready) {
      throw SpecError("spec.warmPool must have 0 <= minReady <= maxReady <= " +
                      std::to_string(kMaxWarmPoolPods) + ", not minReady " +
                      std::to_string(parsed.min_ready) + " and maxReady " +
                      std::to_string(parsed.max_ready));
    }
    env.warm_pool = parsed;
  }
  read_optional(spec, "suspend", "spec", &env.suspend);

  const auto& poll = child(spec, "poll");
  read_optional(poll, "blockMs", "spec.poll", &env.poll_block_ms);
  if (env.poll_block_ms < 1 || env.poll_block_ms > 999) {
    throw SpecError("spec.poll.blockMs must be within 1..999");
  }
  read_optional(poll, "reclaimOlderThanMs", "spec.poll", &env.reclaim_older_than_ms);

  const auto& runner = child(spec, "runner");
  auto& r = env.runner;
  r.image = required_string(runner, "image", "spec.runner");
  read_optional(runner, "imagePullPolicy", "spec.runner", &r.image_pull_policy);
  read_optional(runner, "podLabels", "spec.runner", &r.pod_labels);
  read_optional(runner, "podAnnotations", "spec.runner", &r.pod_annotations);
  if (runner.contains("resources") && runner["resources"].is_object()) {
    r.resources = runner["resources"];
  }
  std::string runtime_class;
  read_optional(runner, "runtimeClassName", "spec.runner", &runtime_class);
  if (!runtime_class.empty()) r.runtime_class_name = runtime_class;
  read_optional(runner, "nodeSelector", "spec.runner", &r.node_selector);
  if (runner.contains("tolerations") && runner["tolerations"].is_array()) {
    r.tolerations = runner["tolerations"];
  }
  if (runner.contains("env") && runner["env"].is_array()) {
    for (const auto& var : runner["env"]) {
      std::string name = required_string(var, "name", "spec.runner.env[]");
      std::string value;
      read_optional(var, "value", "spec.runner.env[" + name + "]", &value);
      if (name.rfind("ANTHROPIC_", 0) == 0 || name == kAuditLevelVariable ||
          name == kApiCaFileVariable) {
        throw SpecError("spec.runner.env: " + name + " is reserved for the runner pod contract");
      }
      r.env.emplace_back(std::move(name), std::move(value));
    }
  }
  if (runner.contains("workspaceSizeLimit")) {
    const auto& limit = runner["workspaceSizeLimit"];
    if (limit.is_string())
      r.workspace_size_limit = limit.get<std::string>();
    else if (limit.is_number_integer())
      r.workspace_size_limit = std::to_string(limit.get<long long>());
    else
      throw SpecError("spec.runner.workspaceSizeLimit has the wrong type: " + limit.dump());
  }
  if (const auto& workspace = child(runner, "workspace");
      workspace.contains("persistentVolumeClaim")) {
    const std::string path = "spec.runner.workspace.persistentVolumeClaim";
    const auto& claim = child(workspace, "persistentVolumeClaim");
    WorkspaceClaimTemplate t;
    read_optional(claim, "storageClassName", path, &t.storage_class_name);
    if (claim.contains("size")) {
      const auto& size = claim["size"];
      if (size.is_string())
        t.size = size.get<std::string>();
      else if (size.is_number_integer())
        t.size = std::to_string(size.get<long long>());
      else
        throw SpecError(path + ".size has the wrong type: " + size.dump());
    }
    read_optional(claim, "accessMode", path, &t.access_mode);
    if (t.access_mode != "ReadWriteOnce" && t.access_mode != "ReadWriteOncePod" &&
        t.access_mode != "ReadWriteMany") {
      throw SpecError(path +
                      ".accessMode must be ReadWriteOnce, ReadWriteOncePod or "
                      "ReadWriteMany, not '" +
                      t.access_mode + "'");
    }
    read_optional(claim, "idleRetentionSeconds", path, &t.idle_retention_seconds);
    if (t.idle_retention_seconds < 0) throw SpecError(path + ".idleRetentionSeconds must be >= 0");
    std::string when_deleted = "Delete";
    read_optional(claim, "whenEnvironmentDeleted", path, &when_deleted);
    if (when_deleted != "Delete" && when_deleted != "Retain") {
      throw SpecError(path + ".whenEnvironmentDeleted must be Delete or Retain, not '" +
                      when_deleted + "'");
    }
    t.delete_with_environment = when_deleted == "Delete";
    r.workspace_claim = std::move(t);
  }
  read_optional(runner, "activeDeadlineSeconds", "spec.runner", &r.active_deadline_seconds);
  std::string service_account;
  read_optional(runner, "serviceAccountName", "spec.runner", &service_account);
  if (!service_account.empty()) r.service_account_name = service_account;

  read_optional(child(spec, "egress"), "allowedCIDRs", "spec.egress", &env.egress_allowed_cidrs);
  env.egress_allowed_hosts = parse_allowed_hosts(child(spec, "egress"));
  const auto& retention = child(spec, "retention");
  read_optional(retention, "succeededSeconds", "spec.retention", &env.retain_succeeded_seconds);
  read_optional(retention, "failedSeconds", "spec.retention", &env.retain_failed_seconds);
  read_optional(child(spec, "audit"), "level", "spec.audit", &env.audit_level);
  if (env.audit_level != "metadata" && env.audit_level != "full") {
    throw SpecError("spec.audit.level must be metadata or full, not '" + env.audit_level + "'");
  }
  return env;
}

nlohmann::json owner_reference(const AgentEnvironment& env) {
  return {{"apiVersion", std::string(kGroup) + "/" + kVersion},
          {"kind", kKind},
          {"name", env.name},
          {"uid", env.uid},
          {"controller", true},
          {"blockOwnerDeletion", true}};
}

}  // namespace perimeter::agentenvironment
