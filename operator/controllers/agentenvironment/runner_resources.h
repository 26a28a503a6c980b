#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "controllers/agentenvironment/agent_environment.h"
#include "controllers/agentenvironment/runner_egress.h"

namespace perimeter::agentenvironment {

// spec.apiCAConfigMapRef in the runner pod: the ConfigMap's key is mounted read-only as
// <kApiCaMountPath>/<kApiCaFileName>, and the runner reads the path from kApiCaFileVariable
// (agent_environment.h).
inline constexpr const char* kApiCaMountPath = "/etc/perimeter/api-ca";
inline constexpr const char* kApiCaFileName = "ca.crt";

// The uid and resourceVersion a write left on an object: a delete that names them as its
// preconditions removes exactly what was written, and nothing written since.
struct ObjectVersion {
  std::string uid;
  std::string resource_version;
};

// What the operator knows about a session it has polled: enough to build its Secret and Pod.
struct ClaimedSession {
  std::string work_id;
  std::string session_id;
  std::string work_secret;  // the item's one-time `secret`, as the API sent it
  // When the poll that handed the item out returned: RFC 3339 with microseconds. Orders two
  // claims of one item, and dates the claim for the orphan sweep and the latency figures.
  std::string claimed_at;
  // The Secret as this claim wrote it; unknown (empty) for a pod the claims sweep makes.
  ObjectVersion secret{};
};

// The Secret that carries the work secret into the pod (never a literal in the pod spec), and in
// gateway mode the session's HTTPS_PROXY with its gateway credential. `egress` defaults to the
// operator's default mode (public addresses).
nlohmann::json build_session_secret(const AgentEnvironment& env, const ClaimedSession& session,
                                    const RunnerEgress& egress = {});

// The runner Pod: the env contract of the design, restricted security defaults, an emptyDir
// workspace with a size limit, owned by the AgentEnvironment.
// In gateway mode the proxy variables point at the egress gateway.
nlohmann::json build_runner_pod(const AgentEnvironment& env, const ClaimedSession& session,
                                const RunnerEgress& egress = {});

// Where a warm runner asks for its assignment (docs/warm-pool.md).
struct AssignmentEndpoint {
  // https://<service>.<namespace>.svc:<port>, no path.
  std::string url{};
  // PEM: the CA that signed the service's certificate, the only CA the warm runner trusts for it.
  std::string ca_pem{};
};
// Where a warm pod's own Secret is mounted (read-only): <path>/token, <path>/ca.crt.
inline constexpr const char* kWarmCredentialMountPath = "/etc/perimeter/warm";

// A warm pod's own Secret, named like the pod: the token minted for it and the assignment
// service's CA. It opens nothing but that pod's assignment (warm_assignment_service.h).
nlohmann::json build_warm_pod_secret(const AgentEnvironment& env, const std::string& name,
                                     const std::string& token, const AssignmentEndpoint& endpoint);

// A warm runner pod: the same template as a session's pod (security context, limits, volumes,
// owner, the environment's NetworkPolicy) without a session: no work id, session id or work
// secret, labelled kLabelWarm, the token's hash in kAnnotationWarmTokenSha256, its own Secret
// mounted at kWarmCredentialMountPath, the runner told where to ask (PERIMETER_WARM_*), and the
// digest of its template in kAnnotationWarmTemplate. No activeDeadlineSeconds: the kubelet would
// count it from the pod's start, not the session's; the claim's assignment sets it
// (SessionObjectWriter::assign_warm_pod). Throws SpecError where a pod needs its session before it
// starts: gateway egress (the proxy credential is the session's) and a per-session workspace claim.
nlohmann::json build_warm_runner_pod(const AgentEnvironment& env, const std::string& name,
                                     const std::string& token_sha256,
                                     const AssignmentEndpoint& endpoint,
                                     const RunnerEgress& egress = {});

// The digest of the template build_warm_runner_pod makes pods from: everything but the pod's name
// and token. Two specs give the same digest exactly when their warm pods would be the same, so a
// warm pod whose digest is not the current one is of an earlier template. Throws SpecError as
// build_warm_runner_pod does.
std::string warm_runner_template_hash(const AgentEnvironment& env,
                                      const AssignmentEndpoint& endpoint,
                                      const RunnerEgress& egress = {});

// The operator's pods that serve warm runners their assignments, and the port: the one egress an
// environment with a warm pool adds to its runner pods (docs/warm-pool.md).
struct AssignmentPeer {
  PodSelection operator_pods{};
  int port = 0;
  // Set when the operator is reached at an address of its host (--warm-assignment-address, an
  // operator outside the cluster): the egress is to that address alone, not to pods.
  std::string direct_address{};
};

// One NetworkPolicy per environment for its runner pods: no ingress ever, never link-local
// (cloud metadata); egress by mode (runner_egress.h): public addresses on the API's port, or the
// gateway and the cluster's DNS, or nothing (Cilium mode: the CiliumNetworkPolicy allows); plus
// the allowed CIDRs in the first two; plus, given `assignment`, the operator's pods on the
// assignment port (in every mode: Cilium adds a NetworkPolicy's allows to its own).
nlohmann::json build_network_policy(const AgentEnvironment& env, const RunnerEgress& egress = {},
                                    const std::optional<AssignmentPeer>& assignment = std::nullopt);

// The name of the environment's NetworkPolicy.
std::string network_policy_name(const AgentEnvironment& env);

// An allowed CIDR as a NetworkPolicy ipBlock (and a Cilium CIDRRule, the same shape): a range
// wider than link-local gets link-local excepted, so no allowed range ever reaches cloud metadata.
// (The schema refuses ranges inside link-local.)
nlohmann::json cidr_without_link_local(const std::string& text);

// The runner policies' metadata (name, namespace, labels, owner) and their selector of the
// environment's runner pods, shared by the NetworkPolicy and the CiliumNetworkPolicy.
nlohmann::json runner_policy_metadata(const AgentEnvironment& env);
nlohmann::json runner_pod_selector(const AgentEnvironment& env);

// The labels every object made for the environment's sessions carries.
nlohmann::json environment_labels(const AgentEnvironment& env);

}  // namespace perimeter::agentenvironment
