#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "core/log.h"
#include "localcluster/http_client.h"

namespace perimeter::localcluster {

// The real node's storage: a dynamic provisioner of host folders, so PersistentVolumeClaims (the
// session workspaces of spec.runner.workspace.persistentVolumeClaim) bind on the local stack.
// Why ours rather than rancher's local-path-provisioner: that one creates and removes each
// folder through a helper pod of a busybox image, and no image can be pulled here; this one runs
// in the real node's supervisor, on the host, and makes the folder itself (docs/development.md,
// "Storage on the real node").
//
// The StorageClass kLocalStorageClass (the cluster's default) names the provisioner
// kLocalProvisioner; for each claim of that class without a volume it makes a hostPath
// PersistentVolume bound to the claim (claimRef), on a folder of its own under the node's
// directory, pinned to the node; the controller manager's binder binds the two. A volume of its
// own that is Released (its claim deleted) with reclaim policy Delete has its folder removed,
// then is deleted (uid precondition). Level-triggered: each pass lists claims and volumes.
inline constexpr const char* kLocalStorageClass = "perimeter-local";
inline constexpr const char* kLocalProvisioner = "perimeter.dev/local-volumes";

// The apiserver as the provisioner needs it; an interface so its passes are unit-tested.
class VolumeApi {
 public:
  virtual ~VolumeApi() = default;
  virtual nlohmann::json list_claims() = 0;   // PersistentVolumeClaims, every namespace
  virtual nlohmann::json list_volumes() = 0;  // PersistentVolumes
  // Creates `volume`; AlreadyExists is fine. Throws with the server's answer otherwise.
  virtual void create_volume(const nlohmann::json& volume) = 0;
  // Deletes the volume `name` if its uid is still `uid`; gone is fine.
  virtual void delete_volume(const std::string& name, const std::string& uid) = 0;
  // Creates the StorageClass (the cluster's default); AlreadyExists is fine.
  virtual void ensure_storage_class(const nlohmann::json& storage_class) = 0;
};

// VolumeApi over the harness's HTTP client (an admin's credentials).
class HttpVolumeApi final : public VolumeApi {
 public:
  explicit HttpVolumeApi(std::function<std::unique_ptr<HttpClient>()> client)
      : client_(std::move(client)) {}
  nlohmann::json list_claims() override;
  nlohmann::json list_volumes() override;
  void create_volume(const nlohmann::json& volume) override;
  void delete_volume(const std::string& name, const std::string& uid) override;
  void ensure_storage_class(const nlohmann::json& storage_class) override;

 private:
  std::function<std::unique_ptr<HttpClient>()> client_;
};

// The StorageClass the provisioner serves.
nlohmann::json local_storage_class();

class LocalVolumeProvisioner {
 public:
  struct Pass {
    int provisioned = 0;
    int removed = 0;
  };
  // Folders go under `root` (created when missing); volumes are pinned to the nodes labelled
  // `node_label`=true (the real node's label: its folders are on this host).
  LocalVolumeProvisioner(VolumeApi& api, std::string root, std::string node_label, Logger logger);

  // One pass: a volume for every claim of the class that has none, and the folder and volume of
  // every released one of ours removed. Throws what the apiserver throws (the next pass retries).
  Pass pass();
  // The folder of the volume made for the claim of uid `claim_uid`.
  std::string folder_of(const std::string& claim_uid) const;

 private:
  VolumeApi& api_;
  std::string root_;
  std::string node_label_;
  Logger logger_;
};

// Runs a provisioner's passes on a thread of its own (every 500 ms, backing off to 5 s while the
// apiserver fails) until destroyed.
class LocalVolumeRunner {
 public:
  LocalVolumeRunner(std::unique_ptr<VolumeApi> api, std::string root, std::string node_label,
                    Logger logger);
  ~LocalVolumeRunner();
  LocalVolumeRunner(const LocalVolumeRunner&) = delete;
  LocalVolumeRunner& operator=(const LocalVolumeRunner&) = delete;

 private:
  std::unique_ptr<VolumeApi> api_;
  LocalVolumeProvisioner provisioner_;
  Logger logger_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace perimeter::localcluster
