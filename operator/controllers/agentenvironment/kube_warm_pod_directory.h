#pragma once

#include "controllers/agentenvironment/warm_assignment_service.h"
#include "kube/resource_client.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {

// The assignment service's view of the cluster: warm pods from the pod informer's store, through
// an index of their token hashes that this adds to it (construct it before the informer starts),
// session Secrets read from the apiserver (the operator caches no Secret), and the delivery as a
// JSON patch that tests what it was decided from.
class KubeWarmPodDirectory final : public WarmPodDirectory {
 public:
  KubeWarmPodDirectory(runtime::Store& pod_cache, kube::ResourceClient& secrets,
                       kube::ResourceClient& pods);
  std::optional<WarmPod> find_by_token_sha256(const std::string& token_sha256) override;
  std::optional<WarmPod> read_live(const WarmPod& pod) override;
  std::optional<std::string> read_work_secret(const std::string& ns,
                                              const std::string& name) override;
  bool mark_delivered(const WarmPod& pod, const WarmPodAssignment& assignment,
                      const std::string& nonce_sha256, const std::string& delivered_at) override;

 private:
  runtime::Store& pod_cache_;
  kube::ResourceClient& secrets_;
  kube::ResourceClient& pods_;
};

}  // namespace perimeter::agentenvironment
