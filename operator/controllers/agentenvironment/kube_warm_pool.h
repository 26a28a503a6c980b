#pragma once

#include "controllers/agentenvironment/warm_pool.h"
#include "kube/resource_client.h"

namespace perimeter::agentenvironment {

// Creates and removes warm pods and their own Secrets through the Kubernetes API.
class KubeWarmPodWriter final : public WarmPodWriter {
 public:
  KubeWarmPodWriter(kube::ResourceClient& secrets, kube::ResourceClient& pods)
      : secrets_(secrets), pods_(pods) {}
  void create(const nlohmann::json& secret, const nlohmann::json& pod) override;
  bool remove(const std::string& ns, const std::string& name, const std::string& uid,
              const std::string& resource_version) override;

 private:
  kube::ResourceClient& secrets_;
  kube::ResourceClient& pods_;
};

}  // namespace perimeter::agentenvironment
