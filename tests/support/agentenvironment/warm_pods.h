#pragma once

// Warm runner pods in the in-memory apiserver, for the tests of the assignment service and its
// channel (docs/warm-pool.md): a pod as build_warm_runner_pod makes it, and what a claim will do
// to assign it.
#include <string>

#include "controllers/agentenvironment/runner_resources.h"
#include "controllers/agentenvironment/warm_assignment_service.h"
#include "core/base64.h"
#include "kube/fake_api_server.h"
#include "kube/resource_client.h"

namespace perimeter::agentenvironment::warm_test {

inline AgentEnvironment warm_pool_environment() {
  AgentEnvironment env;
  env.name = "payments";
  env.namespace_ = "a";
  env.uid = "uid-env";
  env.environment_id = "env_1";
  env.runner.image = "runner:1";
  return env;
}

struct SeededWarmPod {
  nlohmann::json pod;  // as the apiserver stored it
  std::string token;
};

// A Running warm pod in namespace "a".
inline SeededWarmPod seed_warm_pod(perimeter::testing::FakeApiServer& server,
                                   const std::string& name, const AssignmentEndpoint& endpoint) {
  const WarmPodToken minted = mint_warm_pod_token();
  nlohmann::json pod =
      build_warm_runner_pod(warm_pool_environment(), name, minted.sha256, endpoint);
  pod["status"] = {{"phase", "Running"}};
  return {server.seed("/api/v1/namespaces/a/pods", pod), minted.token};
}

// A warm pod ready for a claim: Running, its runner container running (docs/warm-pool.md).
inline SeededWarmPod seed_ready_warm_pod(perimeter::testing::FakeApiServer& server,
                                         const std::string& name,
                                         const AssignmentEndpoint& endpoint) {
  const WarmPodToken minted = mint_warm_pod_token();
  nlohmann::json pod =
      build_warm_runner_pod(warm_pool_environment(), name, minted.sha256, endpoint);
  pod["status"] = {
      {"phase", "Running"},
      {"containerStatuses",
       {{{"name", "runner"}, {"state", {{"running", {{"startedAt", "2026-12-01T00:00:00Z"}}}}}}}}};
  server.seed("/api/v1/namespaces/a/secrets",
              build_warm_pod_secret(warm_pool_environment(), name, minted.token, endpoint));
  return {server.seed("/api/v1/namespaces/a/pods", pod), minted.token};
}

// The session's Secret "run-<work id>" as the apiserver stores it (data, base64) holding
// "secret-of-<work id>", then the assignment on the pod. Returns the pod as it now is.
inline nlohmann::json seed_assignment(perimeter::testing::FakeApiServer& server,
                                      kube::ResourceClient& pods, const std::string& name,
                                      const std::string& work_id) {
  server.seed("/api/v1/namespaces/a/secrets",
              {{"apiVersion", "v1"},
               {"kind", "Secret"},
               {"metadata", {{"name", "run-" + work_id}, {"namespace", "a"}}},
               {"data", {{"work-secret", base64_encode("secret-of-" + work_id)}}}});
  return pods.merge_patch("a", name,
                          {{"metadata",
                            {{"annotations",
                              {{std::string(kAnnotationAssignedWorkId), work_id},
                               {std::string(kAnnotationAssignedSessionId), "sesn-" + work_id},
                               {std::string(kAnnotationAssignedSecret), "run-" + work_id}}}}}});
}

}  // namespace perimeter::agentenvironment::warm_test
