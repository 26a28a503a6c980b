#include "localcluster/local_volumes.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <stdexcept>

namespace perimeter::localcluster {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kProvisionedBy = "pv.kubernetes.io/provisioned-by";

json parsed_or_throw(const HttpResponse& response, const std::string& what) {
  if (response.status / 100 != 2) {
    throw std::runtime_error(what + ": HTTP " + std::to_string(response.status) + ": " +
                             response.body);
  }
  return json::parse(response.body);
}

}  // namespace

json HttpVolumeApi::list_claims() {
  return parsed_or_throw(client_()->get("/api/v1/persistentvolumeclaims"),
                         "listing PersistentVolumeClaims");
}

json HttpVolumeApi::list_volumes() {
  return parsed_or_throw(client_()->get("/api/v1/persistentvolumes"), "listing PersistentVolumes");
}

void HttpVolumeApi::create_volume(const json& volume) {
  const auto response = client_()->request("POST", "/api/v1/persistentvolumes", volume.dump());
  if (response.status == 409) return;
  parsed_or_throw(response, "creating PersistentVolume " + volume["metadata"].value("name", ""));
}

void HttpVolumeApi::delete_volume(const std::string& name, const std::string& uid) {
  const json options = {
      {"apiVersion", "v1"}, {"kind", "DeleteOptions"}, {"preconditions", {{"uid", uid}}}};
  const auto response =
      client_()->request("DELETE", "/api/v1/persistentvolumes/" + name, options.dump());
  if (response.status == 404 || response.status == 409) return;
  parsed_or_throw(response, "deleting PersistentVolume " + name);
}

void HttpVolumeApi::ensure_storage_class(const json& storage_class) {
  const auto response =
      client_()->request("POST", "/apis/storage.k8s.io/v1/storageclasses", storage_class.dump());
  if (response.status == 409) return;
  parsed_or_throw(response, "creating StorageClass " + storage_class["metadata"].value("name", ""));
}

json local_storage_class() {
  return {{"apiVersion", "storage.k8s.io/v1"},
          {"kind", "StorageClass"},
          {"metadata",
           {{"name", kLocalStorageClass},
            {"annotations", {{"storageclass.kubernetes.io/is-default-class", "true"}}}}},
          {"provisioner", kLocalProvisioner},
          {"reclaimPolicy", "Delete"},
          {"volumeBindingMode", "Immediate"}};
}

LocalVolumeProvisioner::LocalVolumeProvisioner(VolumeApi& api, std::string root,
                                               std::string node_label, Logger logger)
    : api_(api),
      root_(std::move(root)),
      node_label_(std::move(node_label)),
      logger_(std::move(logger)) {}

std::string LocalVolumeProvisioner::folder_of(const std::string& claim_uid) const {
  return root_ + "/pvc-" + claim_uid;
}

LocalVolumeProvisioner::Pass LocalVolumeProvisioner::pass() {
  Pass done;
  const json volumes = api_.list_volumes();
  std::set<std::string> volume_names;
  for (const auto& volume : volumes.value("items", json::array())) {
    const auto& metadata = volume["metadata"];
    volume_names.insert(metadata.value("name", ""));
    const bool ours = metadata.value("annotations", json::object()).value(kProvisionedBy, "") ==
                      kLocalProvisioner;
    const json spec = volume.value("spec", json::object());
    if (!ours || volume.value("status", json::object()).value("phase", "") != "Released" ||
        spec.value("persistentVolumeReclaimPolicy", "") != "Delete") {
      continue;
    }
    // The folder first: a crash between the two leaves a volume whose folder is gone, which the
    // next pass deletes; the other order could leave a folder no volume names.
    const std::string path = spec.value("hostPath", json::object()).value("path", "");
    if (path.rfind(root_ + "/", 0) == 0) {
      std::error_code error;
      fs::remove_all(path, error);
      if (error) {
        logger_.warn("could not remove a released volume's folder",
                     {{"volume", metadata.value("name", "")}, {"error", error.message()}});
        continue;
      }
    }
    api_.delete_volume(metadata.value("name", ""), metadata.value("uid", ""));
    ++done.removed;
    logger_.info("removed a released volume", {{"volume", metadata.value("name", "")}});
  }
  for (const auto& claim : api_.list_claims().value("items", json::array())) {
    const auto& metadata = claim["metadata"];
    const json spec = claim.value("spec", json::object());
    if (spec.value("storageClassName", "") != kLocalStorageClass) continue;
    if (!spec.value("volumeName", "").empty() || metadata.contains("deletionTimestamp")) continue;
    const std::string uid = metadata.value("uid", "");
    const std::string name = "pvc-" + uid;
    if (volume_names.count(name) > 0) continue;  // made; the binder has not bound it yet
    const std::string folder = folder_of(uid);
    std::error_code error;
    fs::create_directories(folder, error);
    // Any uid may write: hostPath volumes get no fsGroup, and the runner runs as 65532. The
    // folder is the claim's alone, as local-path-provisioner's are.
    if (error || ::chmod(folder.c_str(), 0777) != 0) {
      throw std::runtime_error("cannot make the folder " + folder + ": " +
                               (error ? error.message() : std::string("chmod failed")));
    }
    const json storage = spec.value("resources", json::object())
                             .value("requests", json::object())
                             .value("storage", json("1Gi"));
    const json volume = {
        {"apiVersion", "v1"},
        {"kind", "PersistentVolume"},
        {"metadata",
         {{"name", name},
          {"labels", {{"app.kubernetes.io/managed-by", "perimeter-local-volumes"}}},
          {"annotations", {{kProvisionedBy, kLocalProvisioner}}}}},
        {"spec",
         {{"capacity", {{"storage", storage}}},
          {"accessModes", spec.value("accessModes", json::array({"ReadWriteOnce"}))},
          {"persistentVolumeReclaimPolicy", "Delete"},
          {"storageClassName", kLocalStorageClass},
          {"volumeMode", "Filesystem"},
          {"claimRef",
           {{"apiVersion", "v1"},
            {"kind", "PersistentVolumeClaim"},
            {"namespace", metadata.value("namespace", "")},
            {"name", metadata.value("name", "")},
            {"uid", uid}}},
          {"hostPath", {{"path", folder}, {"type", "Directory"}}},
          {"nodeAffinity",
           {{"required",
             {{"nodeSelectorTerms",
               {{{"matchExpressions",
                  {{{"key", node_label_}, {"operator", "In"}, {"values", {"true"}}}}}}}}}}}}}}};
    api_.create_volume(volume);
    ++done.provisioned;
    logger_.info("provisioned a volume",
                 {{"claim", metadata.value("namespace", "") + "/" + metadata.value("name", "")},
                  {"volume", name}});
  }
  return done;
}

LocalVolumeRunner::LocalVolumeRunner(std::unique_ptr<VolumeApi> api, std::string root,
                                     std::string node_label, Logger logger)
    : api_(std::move(api)),
      provisioner_(*api_, std::move(root), std::move(node_label), logger),
      logger_(std::move(logger)) {
  thread_ = std::thread([this] {
    bool class_made = false;
    auto wait = std::chrono::milliseconds(500);
    while (!stop_) {
      try {
        if (!class_made) {
          api_->ensure_storage_class(local_storage_class());
          class_made = true;
        }
        provisioner_.pass();
        wait = std::chrono::milliseconds(500);
      } catch (const std::exception& e) {
        logger_.warn("volume provisioner pass failed", {{"error", e.what()}});
        // Doubling to 5 s, with up to a quarter more at random so passes of two nodes spread.
        wait = std::min(wait * 2, std::chrono::milliseconds(5000));
        wait += std::chrono::milliseconds(std::rand() % (wait.count() / 4 + 1));
      }
      for (auto slept = std::chrono::milliseconds(0); slept < wait && !stop_;
           slept += std::chrono::milliseconds(50)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });
}

LocalVolumeRunner::~LocalVolumeRunner() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

}  // namespace perimeter::localcluster
