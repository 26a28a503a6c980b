// The real node's volume provisioner, one pass at a time against a fake apiserver and a
// temporary folder: a claim of its class gets a hostPath volume bound to it, a folder of its own
// any uid may write, once; a released volume of its own loses its folder, then itself.
#include "localcluster/local_volumes.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace perimeter::localcluster {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class FakeVolumeApi final : public VolumeApi {
 public:
  json list_claims() override { return {{"items", claims}}; }
  json list_volumes() override { return {{"items", volumes}}; }
  void create_volume(const json& volume) override {
    json stored = volume;
    stored["metadata"]["uid"] = "pv-uid-" + std::to_string(volumes.size());
    volumes.push_back(stored);
  }
  void delete_volume(const std::string& name, const std::string& uid) override {
    deleted.push_back(name + "/" + uid);
    for (auto it = volumes.begin(); it != volumes.end(); ++it) {
      if ((*it)["metadata"]["name"] == name) {
        volumes.erase(it);
        return;
      }
    }
  }
  void ensure_storage_class(const json&) override {}
  json claims = json::array(), volumes = json::array();
  std::vector<std::string> deleted;
};

json claim(const std::string& uid, const std::string& storage_class) {
  return {{"metadata", {{"name", "workspace-" + uid}, {"namespace", "agents"}, {"uid", uid}}},
          {"spec",
           {{"storageClassName", storage_class},
            {"accessModes", {"ReadWriteOncePod"}},
            {"resources", {{"requests", {{"storage", "2Gi"}}}}}}}};
}

class LocalVolumesTest : public ::testing::Test {
 protected:
  void TearDown() override { fs::remove_all(root_); }
  std::string root_ =
      (fs::temp_directory_path() / ("local-volumes-" + std::to_string(::getpid()))).string();
  FakeVolumeApi api_;
  LocalVolumeProvisioner provisioner_{api_, root_, "perimeter.dev/real-node",
                                      Logger("test", StderrSink::instance(), LogLevel::kError)};
};

TEST_F(LocalVolumesTest, AClaimOfTheClassGetsAWritableFolderAndAVolumeBoundToIt) {
  api_.claims = {claim("u1", kLocalStorageClass), claim("u2", "someone-elses")};
  EXPECT_EQ(provisioner_.pass().provisioned, 1);
  ASSERT_EQ(api_.volumes.size(), 1u);
  const json& volume = api_.volumes[0];
  EXPECT_EQ(volume["metadata"]["name"], "pvc-u1");
  EXPECT_EQ(volume["spec"]["claimRef"]["uid"], "u1");
  EXPECT_EQ(volume["spec"]["claimRef"]["namespace"], "agents");
  EXPECT_EQ(volume["spec"]["capacity"]["storage"], "2Gi");
  EXPECT_EQ(volume["spec"]["accessModes"], json::array({"ReadWriteOncePod"}));
  EXPECT_EQ(volume["spec"]["storageClassName"], kLocalStorageClass);
  EXPECT_EQ(volume["spec"]["hostPath"]["path"], provisioner_.folder_of("u1"));
  EXPECT_EQ(volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
                  [0]["key"],
            "perimeter.dev/real-node");
  struct stat info {};
  ASSERT_EQ(::stat(provisioner_.folder_of("u1").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0777u) << "the runner (uid 65532) could not write there";
  // The binder has not bound it yet: no second volume.
  EXPECT_EQ(provisioner_.pass().provisioned, 0);
  EXPECT_EQ(api_.volumes.size(), 1u);
}

TEST_F(LocalVolumesTest, AReleasedVolumeLosesItsFolderThenItself) {
  api_.claims = {claim("u1", kLocalStorageClass)};
  provisioner_.pass();
  std::ofstream(provisioner_.folder_of("u1") + "/notes.txt") << "turn one";
  api_.claims = json::array();  // the claim was deleted
  api_.volumes[0]["status"] = {{"phase", "Bound"}};
  EXPECT_EQ(provisioner_.pass().removed, 0);
  api_.volumes[0]["status"] = {{"phase", "Released"}};
  EXPECT_EQ(provisioner_.pass().removed, 1);
  EXPECT_FALSE(fs::exists(provisioner_.folder_of("u1")));
  EXPECT_EQ(api_.deleted, std::vector<std::string>{"pvc-u1/pv-uid-0"});
  EXPECT_TRUE(api_.volumes.empty());
}

TEST_F(LocalVolumesTest, VolumesItDidNotMakeAreLeftAlone) {
  api_.volumes = {
      {{"metadata", {{"name", "hand-made"}, {"uid", "x"}}},
       {"spec",
        {{"persistentVolumeReclaimPolicy", "Delete"}, {"hostPath", {{"path", root_ + "/keep"}}}}},
       {"status", {{"phase", "Released"}}}}};
  fs::create_directories(root_ + "/keep");
  EXPECT_EQ(provisioner_.pass().removed, 0);
  EXPECT_TRUE(fs::exists(root_ + "/keep"));
  EXPECT_TRUE(api_.deleted.empty());
}

}  // namespace
}  // namespace perimeter::localcluster
