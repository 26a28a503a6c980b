#include "controllers/agentenvironment/runner_resources.h"

#include <arpa/inet.h>

#include <array>
#include <optional>

#include "controllers/agentenvironment/key_release.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/session_workspace.h"
#include "kube/pod_security.h"

namespace perimeter::agentenvironment {
namespace {

// The uid/gid the runner runs as when the image does not say: the conventional "nonroot" user of
// distroless images, so restricted admission passes without the image declaring a USER.
constexpr int kRunnerUid = 65532;
// The final memory sync (30 s) plus the flush (30 s) plus the force-stop, after SIGTERM.
constexpr int kRunnerTerminationGraceSeconds = 75;

// Ranges that are never destinations of runner egress unless a CIDR explicitly allows them:
// private networks (the organization's own), carrier-grade NAT, and link-local (cloud metadata).
constexpr std::array<const char*, 5> kPrivateIPv4 = {
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"};
constexpr std::array<const char*, 2> kPrivateIPv6 = {"fc00::/7", "fe80::/10"};

// "/32" or "/128" for an IP literal, empty for a hostname.
std::string host_cidr(const std::string& host) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, host.c_str(), buf) == 1) return host + "/32";
  if (inet_pton(AF_INET6, host.c_str(), buf) == 1) return host + "/128";
  return "";
}

struct Cidr {
  int family = 0;  // AF_INET or AF_INET6
  std::array<unsigned char, 16> bytes{};
  int prefix = 0;
};

std::optional<Cidr> parse_cidr(const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return std::nullopt;
  Cidr cidr;
  const std::string address = text.substr(0, slash);
  if (inet_pton(AF_INET, address.c_str(), cidr.bytes.data()) == 1) {
    cidr.family = AF_INET;
  } else if (inet_pton(AF_INET6, address.c_str(), cidr.bytes.data()) == 1) {
    cidr.family = AF_INET6;
  } else {
    return std::nullopt;
  }
  try {
    cidr.prefix = std::stoi(text.substr(slash + 1));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return cidr;
}

// Whether `outer` contains all of `inner`.
bool contains(const Cidr& outer, const Cidr& inner) {
  if (outer.family != inner.family || outer.prefix > inner.prefix) return false;
  for (int bit = 0; bit < outer.prefix; ++bit) {
    const unsigned char mask = static_cast<unsigned char>(0x80u >> (bit % 8));
    if ((outer.bytes[bit / 8] & mask) != (inner.bytes[bit / 8] & mask)) return false;
  }
  return true;
}

// A peer of pods in another namespace, selected by the namespace's name label (set by the
// apiserver on every namespace) and the pods' labels.
nlohmann::json pod_peer(const PodSelection& pods) {
  return {
      {"namespaceSelector", {{"matchLabels", {{"kubernetes.io/metadata.name", pods.namespace_}}}}},
      {"podSelector", {{"matchLabels", pods.labels}}}};
}

}  // namespace

nlohmann::json cidr_without_link_local(const std::string& text) {
  nlohmann::json block = {{"cidr", text}};
  const auto cidr = parse_cidr(text);
  if (!cidr) return block;
  for (const char* link_local : {"169.254.0.0/16", "fe80::/10"}) {
    const auto excluded = parse_cidr(link_local);
    if (contains(*cidr, *excluded) && cidr->prefix < excluded->prefix) {
      block["except"] = {link_local};
    }
  }
  return block;
}

nlohmann::json runner_policy_metadata(const AgentEnvironment& env) {
  return {{"name", network_policy_name(env)},
          {"namespace", env.namespace_},
          {"labels", environment_labels(env)},
          {"ownerReferences", nlohmann::json::array({owner_reference(env)})}};
}

nlohmann::json runner_pod_selector(const AgentEnvironment& env) {
  return {{"matchLabels",
           {{std::string(kLabelEnvironment), label_value_for(env.name)},
            {std::string(kLabelComponent), "runner"}}}};
}

nlohmann::json environment_labels(const AgentEnvironment& env) {
  return {{std::string(kLabelEnvironment), label_value_for(env.name)},
          {std::string(kLabelComponent), "runner"},
          {std::string(kLabelManagedBy), "perimeter"}};
}

nlohmann::json build_session_secret(const AgentEnvironment& env, const ClaimedSession& session,
                                    const RunnerEgress& egress) {
  auto labels = environment_labels(env);
  labels[std::string(kLabelWorkId)] = label_value_for(session.work_id);
  labels[std::string(kLabelSessionId)] = label_value_for(session.session_id);
  nlohmann::json string_data = {{std::string(kSecretKeyWorkSecret), session.work_secret}};
  if (egress.mode == EgressMode::kGateway) {
    string_data[std::string(kSecretKeyHttpsProxy)] =
        egress_proxy_url(egress, env, session.session_id);
  }
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata",
           {{"name", runner_object_name(session.work_id)},
            {"namespace", env.namespace_},
            {"labels", labels},
            // claimed-at orders two claims of one item, and tells the orphan sweep when a
            // claim last used the Secret (docs/claiming.md).
            {"annotations",
             {{std::string(kAnnotationWorkId), session.work_id},
              {std::string(kAnnotationClaimedAt), session.claimed_at}}},
            {"ownerReferences", nlohmann::json::array({owner_reference(env)})}}},
          // Not immutable: a retried claim rewrites it when the re-poll re-issued the secret.
          {"type", "Opaque"},
          {"stringData", string_data}};
}

namespace {

// What sets one runner pod apart from the environment's template: a cold pod's session, or a warm
// pod's assignment channel.
struct RunnerPodShape {
  std::string name{};
  // The variables that come before the template's own (a cold pod's session, a warm pod's
  // assignment channel).
  nlohmann::json head_env = nlohmann::json::array();
  nlohmann::json labels = nlohmann::json::object();
  nlohmann::json annotations = nlohmann::json::object();
  // The session's own workspace claim; empty: an emptyDir.
  std::string workspace_claim{};
  nlohmann::json extra_mounts = nlohmann::json::array();
  nlohmann::json extra_volumes = nlohmann::json::array();
  // spec.runner.activeDeadlineSeconds, which the kubelet counts from the pod's start. A warm pod
  // has none: it starts long before its session, and its assignment sets the session's.
  bool session_deadline = true;
};

// The environment's runner pod template: restricted security defaults, the env contract of the
// design, an emptyDir workspace with a size limit, owned by the AgentEnvironment. In gateway mode
// the proxy variables point at the egress gateway, read from the Secret named like the pod.
nlohmann::json build_pod_from_template(const AgentEnvironment& env, const RunnerPodShape& shape,
                                       const RunnerEgress& egress) {
  const std::string& name = shape.name;
  // The template's labels and annotations first; the operator's own keys override them.
  nlohmann::json labels = env.runner.pod_labels;
  labels.update(environment_labels(env));
  labels.update(shape.labels);

  nlohmann::json env_vars = shape.head_env;
  for (nlohmann::json variable : nlohmann::json::array({
           {{"name", "ANTHROPIC_ENVIRONMENT_ID"}, {"value", env.environment_id}},
           {{"name", "ANTHROPIC_BASE_URL"}, {"value", env.api_base_url}},
           {{"name", "HOME"}, {"value", "/workspace"}},
           {{"name", kAuditLevelVariable}, {"value", env.audit_level}},
       })) {
    env_vars.push_back(std::move(variable));
  }
  const bool through_gateway = egress.mode == EgressMode::kGateway;
  for (const auto& [var, value] : env.runner.env) {
    // In gateway mode the operator owns the proxy variables: a template's own would route around
    // the gateway (and the NetworkPolicy would drop it) or break the API's path.
    if (through_gateway && is_proxy_variable(var)) continue;
    env_vars.push_back({{"name", var}, {"value", value}});
  }
  if (through_gateway) {
    // Both spellings: curl reads only the lower-case https_proxy, Go and Python read either.
    const nlohmann::json proxy_ref = {
        {"secretKeyRef", {{"name", name}, {"key", std::string(kSecretKeyHttpsProxy)}}}};
    const std::string no_proxy = egress_no_proxy(egress, env);
    for (const char* var : {"HTTPS_PROXY", "https_proxy"})
      env_vars.push_back({{"name", var}, {"valueFrom", proxy_ref}});
    for (const char* var : {"NO_PROXY", "no_proxy"})
      env_vars.push_back({{"name", var}, {"value", no_proxy}});
  }

  // A private CA for the API: its ConfigMap key as a read-only file the runner adds to its trust
  // (PERIMETER_API_CA_FILE), next to the image's CA store rather than instead of it.
  const bool api_ca = !env.api_ca_config_map_name.empty();
  if (api_ca) {
    env_vars.push_back({{"name", kApiCaFileVariable},
                        {"value", std::string(kApiCaMountPath) + "/" + kApiCaFileName}});
  }

  // Limits are always set: a session must not be able to starve its node.
  nlohmann::json resources = env.runner.resources;
  if (!resources.contains("requests"))
    resources["requests"] = {{"cpu", "100m"}, {"memory", "256Mi"}};
  if (!resources.contains("limits")) resources["limits"] = nlohmann::json::object();
  if (!resources["limits"].contains("cpu")) resources["limits"]["cpu"] = "1";
  if (!resources["limits"].contains("memory")) resources["limits"]["memory"] = "1Gi";

  // The container also pins the seccomp profile (the pod does too): kept from before the shared
  // definition, so a pod spec that drops the pod-level one still runs confined.
  nlohmann::json runner_security_context = kube::restricted_container_security_context();
  runner_security_context["seccompProfile"] = {{"type", "RuntimeDefault"}};
  nlohmann::json container = {
      {"name", "runner"},
      {"image", env.runner.image},
      {"imagePullPolicy", env.runner.image_pull_policy},
      {"env", env_vars},
      {"workingDir", "/workspace"},
      {"resources", resources},
      {"securityContext", runner_security_context},
      {"volumeMounts",
       {{{"name", "workspace"}, {"mountPath", "/workspace"}},
        {{"name", "tmp"}, {"mountPath", "/tmp"}},
        // Memory stores land at their mount_path, /mnt/memory/<store> (docs/runner.md).
        {{"name", "memory"}, {"mountPath", "/mnt/memory"}}}},
      {"terminationMessagePolicy", "FallbackToLogsOnError"},
  };

  nlohmann::json spec = {
      {"restartPolicy", "Never"},
      {"automountServiceAccountToken", false},
      {"enableServiceLinks", false},
      // SIGTERM during a clean end can meet the final memory sync (bounded at 30 s) and then the
      // flush (30 s more) before the force-stop: 75 s lets both finish and the item be stopped.
      {"terminationGracePeriodSeconds", kRunnerTerminationGraceSeconds},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", kRunnerUid},
        {"runAsGroup", kRunnerUid},
        {"fsGroup", kRunnerUid},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
      {"containers", {container}},
      {"volumes",
       {{{"name", "workspace"}, {"emptyDir", {{"sizeLimit", env.runner.workspace_size_limit}}}},
        {{"name", "tmp"}, {"emptyDir", {{"sizeLimit", "256Mi"}}}},
        {{"name", "memory"}, {"emptyDir", {{"sizeLimit", "1Gi"}}}}}},
  };
  if (shape.session_deadline) spec["activeDeadlineSeconds"] = env.runner.active_deadline_seconds;
  if (!shape.workspace_claim.empty()) {
    // The session's own claim: what an earlier item of the session left there, this one finds.
    spec["volumes"][0] = {{"name", "workspace"},
                          {"persistentVolumeClaim", {{"claimName", shape.workspace_claim}}}};
  }
  for (const nlohmann::json& mount : shape.extra_mounts) {
    spec["containers"][0]["volumeMounts"].push_back(mount);
  }
  for (const nlohmann::json& volume : shape.extra_volumes) spec["volumes"].push_back(volume);
  if (api_ca) {
    spec["containers"][0]["volumeMounts"].push_back(
        {{"name", "api-ca"}, {"mountPath", kApiCaMountPath}, {"readOnly", true}});
    const nlohmann::json item = {{"key", env.api_ca_config_map_key}, {"path", kApiCaFileName}};
    const nlohmann::json config_map = {{"name", env.api_ca_config_map_name},
                                       {"items", nlohmann::json::array({item})},
                                       {"defaultMode", 0444}};
    spec["volumes"].push_back({{"name", "api-ca"}, {"configMap", config_map}});
  }
  if (env.runner.service_account_name)
    spec["serviceAccountName"] = *env.runner.service_account_name;
  if (env.runner.runtime_class_name) spec["runtimeClassName"] = *env.runner.runtime_class_name;
  if (!env.runner.node_selector.empty()) spec["nodeSelector"] = env.runner.node_selector;
  if (!env.runner.tolerations.empty()) spec["tolerations"] = env.runner.tolerations;

  nlohmann::json annotations = env.runner.pod_annotations;
  annotations.update(shape.annotations);

  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", name},
            {"namespace", env.namespace_},
            {"labels", labels},
            {"annotations", annotations},
            {"ownerReferences", nlohmann::json::array({owner_reference(env)})}}},
          {"spec", spec}};
}

}  // namespace

nlohmann::json build_runner_pod(const AgentEnvironment& env, const ClaimedSession& session,
                                const RunnerEgress& egress) {
  RunnerPodShape shape;
  shape.name = runner_object_name(session.work_id);
  shape.labels[std::string(kLabelWorkId)] = label_value_for(session.work_id);
  shape.labels[std::string(kLabelSessionId)] = label_value_for(session.session_id);
  shape.head_env = nlohmann::json::array({
      {{"name", "ANTHROPIC_WORK_ID"}, {"value", session.work_id}},
      {{"name", "ANTHROPIC_SESSION_ID"}, {"value", session.session_id}},
      {{"name", "ANTHROPIC_WORK_SECRET"},
       {"valueFrom",
        {{"secretKeyRef", {{"name", shape.name}, {"key", std::string(kSecretKeyWorkSecret)}}}}}},
  });
  shape.annotations[std::string(kAnnotationWorkId)] = session.work_id;
  if (!session.claimed_at.empty())
    shape.annotations[std::string(kAnnotationClaimedAt)] = session.claimed_at;
  if (!session.secret.uid.empty() && !session.secret.resource_version.empty()) {
    shape.annotations[std::string(kAnnotationSecretVersion)] =
        session.secret.uid + "/" + session.secret.resource_version;
  }
  if (env.runner.workspace_claim) shape.workspace_claim = workspace_claim_name(session.session_id);
  return build_pod_from_template(env, shape, egress);
}

nlohmann::json build_warm_pod_secret(const AgentEnvironment& env, const std::string& name,
                                     const std::string& token, const AssignmentEndpoint& endpoint) {
  nlohmann::json labels = environment_labels(env);
  labels[std::string(kLabelWarm)] = "true";
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata",
           {{"name", name},
            {"namespace", env.namespace_},
            {"labels", labels},
            {"ownerReferences", nlohmann::json::array({owner_reference(env)})}}},
          {"type", "Opaque"},
          {"immutable", true},
          {"stringData",
           {{std::string(kSecretKeyWarmToken), token},
            {std::string(kSecretKeyWarmCa), endpoint.ca_pem}}}};
}

namespace {

nlohmann::json build_unstamped_warm_runner_pod(const AgentEnvironment& env, const std::string& name,
                                               const std::string& token_sha256,
                                               const AssignmentEndpoint& endpoint,
                                               const RunnerEgress& egress) {
  if (egress.mode == EgressMode::kGateway) {
    throw SpecError(
        "warm runner pods are not offered with gateway egress: the proxy credential belongs to "
        "the session, which a warm pod does not have when it starts");
  }
  if (env.runner.workspace_claim) {
    throw SpecError(
        "warm runner pods are not offered with spec.runner.workspace.persistentVolumeClaim: the "
        "claim belongs to the session, which a warm pod does not have when it starts");
  }
  RunnerPodShape shape;
  shape.name = name;
  shape.session_deadline = false;
  shape.labels[std::string(kLabelWarm)] = "true";
  shape.annotations[std::string(kAnnotationWarmTokenSha256)] = token_sha256;
  const std::string mount = kWarmCredentialMountPath;
  shape.head_env = nlohmann::json::array({
      {{"name", "PERIMETER_WARM_ASSIGNMENT_URL"}, {"value", endpoint.url}},
      {{"name", "PERIMETER_WARM_TOKEN_FILE"},
       {"value", mount + "/" + std::string(kSecretKeyWarmToken)}},
      {{"name", "PERIMETER_WARM_CA_FILE"}, {"value", mount + "/" + std::string(kSecretKeyWarmCa)}},
  });
  shape.extra_mounts.push_back({{"name", "warm"}, {"mountPath", mount}, {"readOnly", true}});
  // 0440: readable by the runner through the pod's fsGroup, by no other uid.
  shape.extra_volumes.push_back(
      {{"name", "warm"}, {"secret", {{"secretName", name}, {"defaultMode", 0440}}}});
  return build_pod_from_template(env, shape, egress);
}

}  // namespace

std::string warm_runner_template_hash(const AgentEnvironment& env,
                                      const AssignmentEndpoint& endpoint,
                                      const RunnerEgress& egress) {
  // The same placeholders every time: what is left to differ is the template.
  constexpr int kDigits = 16;
  return short_hash(
      build_unstamped_warm_runner_pod(env, "warm", std::string(64, '0'), endpoint, egress).dump(),
      kDigits);
}

nlohmann::json build_warm_runner_pod(const AgentEnvironment& env, const std::string& name,
                                     const std::string& token_sha256,
                                     const AssignmentEndpoint& endpoint,
                                     const RunnerEgress& egress) {
  nlohmann::json pod = build_unstamped_warm_runner_pod(env, name, token_sha256, endpoint, egress);
  pod["metadata"]["annotations"][std::string(kAnnotationWarmTemplate)] =
      warm_runner_template_hash(env, endpoint, egress);
  return pod;
}

std::string network_policy_name(const AgentEnvironment& env) {
  // Object names are DNS subdomains of at most 253 characters; keep the suffix readable.
  constexpr std::size_t kMaxName = 253;
  const std::string suffix = "-runners";
  if (env.name.size() + suffix.size() <= kMaxName) return env.name + suffix;
  return env.name.substr(0, kMaxName - suffix.size() - 11) + "-" + short_hash(env.name, 10) +
         suffix;
}

nlohmann::json build_network_policy(const AgentEnvironment& env, const RunnerEgress& egress,
                                    const std::optional<AssignmentPeer>& assignment) {
  nlohmann::json egress_rules = nlohmann::json::array();
  // The reconciler applies this only after check_api_host() accepted the URL.
  std::string why;
  const auto api = parse_api_origin(env.api_base_url, &why);
  if (!api) throw SpecError("spec.apiBaseUrl '" + env.api_base_url + "' is not usable: " + why);
  const nlohmann::json api_ports = {{{"protocol", "TCP"}, {"port", api->port}}};
  const nlohmann::json dns_ports = {{{"protocol", "UDP"}, {"port", 53}},
                                    {{"protocol", "TCP"}, {"port", 53}}};
  const auto exact = host_cidr(api->host);

  switch (egress.mode) {
    case EgressMode::kCiliumFqdn:
      // Deny all here; the CiliumNetworkPolicy of the same name allows. Cilium adds policies
      // together, and without Cilium the pods fail closed.
      break;
    case EgressMode::kGateway:
      egress_rules.push_back({{"to", {pod_peer(egress.cluster_dns)}}, {"ports", dns_ports}});
      egress_rules.push_back({{"to", {pod_peer(egress.gateway_pods)}},
                              {"ports", {{{"protocol", "TCP"}, {"port", egress.gateway_port}}}}});
      // An API given as an address is reached directly (the gateway takes names only).
      if (!exact.empty())
        egress_rules.push_back({{"to", {{{"ipBlock", {{"cidr", exact}}}}}}, {"ports", api_ports}});
      break;
    case EgressMode::kPublicAddresses:
      // DNS anywhere in the cluster: the resolver's address differs per distribution.
      egress_rules.push_back({{"ports", dns_ports}});
      // A literal IP is allowed exactly; a hostname cannot be expressed in a NetworkPolicy, so
      // its port is allowed to public addresses only (never private ranges or link-local).
      if (!exact.empty()) {
        egress_rules.push_back({{"to", {{{"ipBlock", {{"cidr", exact}}}}}}, {"ports", api_ports}});
      } else {
        nlohmann::json v4_except = nlohmann::json::array();
        for (const char* cidr : kPrivateIPv4) v4_except.push_back(cidr);
        nlohmann::json v6_except = nlohmann::json::array();
        for (const char* cidr : kPrivateIPv6) v6_except.push_back(cidr);
        egress_rules.push_back({{"to",
                                 {{{"ipBlock", {{"cidr", "0.0.0.0/0"}, {"except", v4_except}}}},
                                  {{"ipBlock", {{"cidr", "::/0"}, {"except", v6_except}}}}}},
                                {"ports", api_ports}});
      }
      break;
  }
  if (egress.mode != EgressMode::kCiliumFqdn && !env.egress_allowed_cidrs.empty()) {
    nlohmann::json to = nlohmann::json::array();
    for (const auto& cidr : env.egress_allowed_cidrs)
      to.push_back({{"ipBlock", cidr_without_link_local(cidr)}});
    egress_rules.push_back({{"to", to}});
  }
  if (assignment) {
    const bool ipv6 = assignment->direct_address.find(':') != std::string::npos;
    const nlohmann::json peer =
        assignment->direct_address.empty()
            ? pod_peer(assignment->operator_pods)
            : nlohmann::json{
                  {"ipBlock", {{"cidr", assignment->direct_address + (ipv6 ? "/128" : "/32")}}}};
    egress_rules.push_back(
        {{"to", {peer}}, {"ports", {{{"protocol", "TCP"}, {"port", assignment->port}}}}});
  }

  return {{"apiVersion", "networking.k8s.io/v1"},
          {"kind", "NetworkPolicy"},
          {"metadata", runner_policy_metadata(env)},
          {"spec",
           {{"podSelector", runner_pod_selector(env)},
            {"policyTypes", {"Ingress", "Egress"}},
            {"ingress", nlohmann::json::array()},
            {"egress", egress_rules}}}};
}

}  // namespace perimeter::agentenvironment
