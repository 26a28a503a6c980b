#pragma once

#include "controllers/agentenvironment/session_ports.h"
#include "core/clock.h"
#include "kube/api_error.h"
#include "kube/resource_client.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {

// Writes a session's Secret and Pod through the Kubernetes API. `clock`'s wall time dates a warm
// pod's assignment, for the session's deadline.
class KubeSessionObjectWriter final : public SessionObjectWriter {
 public:
  KubeSessionObjectWriter(kube::ResourceClient& secrets, kube::ResourceClient& pods,
                          const Clock& clock = SystemClock::instance())
      : secrets_(secrets), pods_(pods), clock_(clock) {}
  std::optional<ObjectVersion> ensure_secret(const nlohmann::json& secret) override;
  bool ensure_pod(const nlohmann::json& pod) override;
  void check_pod(const nlohmann::json& pod) override;
  void release_pod(const std::string& ns, const std::string& name) override;
  void remove_finished(const nlohmann::json& pod) override;
  bool assign_warm_pod(const std::string& ns, const WarmPodRef& pod, const ClaimedSession& session,
                       const std::string& secret_name,
                       std::int64_t session_deadline_seconds) override;
  std::optional<std::string> find_assigned_pod(const std::string& ns,
                                               const std::string& environment_name,
                                               const std::string& work_id) override;

 private:
  // remove_finished of a warm pod that holds an assignment.
  void remove_assigned_warm_pod(const nlohmann::json& pod);

  kube::ResourceClient& secrets_;
  kube::ResourceClient& pods_;
  const Clock& clock_;
};

// Reads an environment's runner pods from the pod informer's store, through indexes it adds to
// that store (construct it before the informer starts): a census reads the unfinished, gated,
// ready warm and assigned pods only, however many finished ones are kept for their retention.
class StoreRunnerPodCensus final : public RunnerPodCensus {
 public:
  explicit StoreRunnerPodCensus(runtime::Store& pods);
  std::size_t unfinished(const std::string& ns, const std::string& environment_name) override;
  std::map<std::string, std::string> gated(const std::string& ns,
                                           const std::string& environment_name) override;
  bool cached(const std::string& ns, const std::string& name) override;
  std::vector<WarmPodRef> ready_warm_pods(const std::string& ns,
                                          const std::string& environment_name) override;
  std::optional<AssignedPod> assigned_pod(const std::string& ns,
                                          const std::string& work_id) override;

 private:
  runtime::Store& pods_;
};

// Whether the apiserver refused an object itself, as built, rather than this request at this
// moment: trying again cannot help until the spec changes.
bool refused_as_built(const kube::ApiError& e);

// Whether a pod has finished (Succeeded or Failed).
bool pod_finished(const nlohmann::json& pod);

}  // namespace perimeter::agentenvironment
