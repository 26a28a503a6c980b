// The files the harness writes for others to read: kubeconfig (kubectl, clients) and the KWOK
// stage configuration.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "localcluster/kubeconfig.h"
#include "localcluster/kwok_stages.h"

namespace perimeter::localcluster {
namespace {

using ::testing::HasSubstr;

TEST(KubeconfigTest, PointsAtTheServerAndTheAdminCertificateFiles) {
  KubeconfigSpec spec;
  spec.server = "https://127.0.0.1:6443";
  spec.ca_file = "/tmp/x/pki/ca.crt";
  spec.client_cert_file = "/tmp/x/pki/admin.crt";
  spec.client_key_file = "/tmp/x/pki/admin key.pem";  // spaces survive quoting
  YAML::Node config = YAML::Load(render_kubeconfig(spec));
  EXPECT_EQ(config["kind"].as<std::string>(), "Config");
  EXPECT_EQ(config["current-context"].as<std::string>(), "perimeter-local");
  EXPECT_EQ(config["clusters"][0]["cluster"]["server"].as<std::string>(), spec.server);
  EXPECT_EQ(config["clusters"][0]["cluster"]["certificate-authority"].as<std::string>(),
            spec.ca_file);
  EXPECT_EQ(config["users"][0]["user"]["client-certificate"].as<std::string>(),
            spec.client_cert_file);
  EXPECT_EQ(config["users"][0]["user"]["client-key"].as<std::string>(), spec.client_key_file);
  EXPECT_EQ(config["contexts"][0]["context"]["cluster"].as<std::string>(),
            config["clusters"][0]["name"].as<std::string>());
  EXPECT_EQ(config["contexts"][0]["context"]["user"].as<std::string>(),
            config["users"][0]["name"].as<std::string>());
}

TEST(KubeconfigTest, IsWrittenReadableOnlyByItsOwner) {
  const std::string path = ::testing::TempDir() + "/kubeconfig-" + std::to_string(::getpid());
  KubeconfigSpec spec;
  spec.server = "https://127.0.0.1:1";
  write_kubeconfig(path, spec);
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
  std::filesystem::remove(path);
  EXPECT_THAT(
      [&] { write_kubeconfig("/nonexistent-dir/kubeconfig", spec); },
      ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("/nonexistent-dir/kubeconfig")));
}

std::vector<YAML::Node> stages() {
  return YAML::LoadAll(render_kwok_pod_stages());
}

YAML::Node stage_named(const std::string& name) {
  for (const auto& stage : stages()) {
    if (stage["metadata"]["name"].as<std::string>() == name) return stage;
  }
  return YAML::Node();
}

TEST(KwokStagesTest, EveryDocumentIsAPodStage) {
  auto all = stages();
  ASSERT_EQ(all.size(), 4u);
  for (const auto& stage : all) {
    EXPECT_EQ(stage["apiVersion"].as<std::string>(), "kwok.x-k8s.io/v1alpha1");
    EXPECT_EQ(stage["kind"].as<std::string>(), "Stage");
    EXPECT_EQ(stage["spec"]["resourceRef"]["kind"].as<std::string>(), "Pod");
    EXPECT_TRUE(stage["spec"]["next"].IsMap());
  }
}

TEST(KwokStagesTest, CompletionIsDelayedByTheAnnotatedDuration) {
  YAML::Node complete = stage_named("perimeter-pod-complete");
  ASSERT_TRUE(complete.IsDefined());
  EXPECT_EQ(complete["spec"]["delay"]["durationFrom"]["jq"]["expression"].as<std::string>(),
            ".metadata.annotations[\"perimeter.dev/kwok-complete-after\"]");
  std::ostringstream selector;
  selector << complete["spec"]["selector"];
  EXPECT_THAT(selector.str(), HasSubstr("Running"));
  EXPECT_THAT(selector.str(), HasSubstr("perimeter.dev/kwok-complete-after"));
  const std::string status = complete["spec"]["next"]["statusTemplate"].as<std::string>();
  EXPECT_THAT(status, HasSubstr("Succeeded"));
  EXPECT_THAT(status, HasSubstr("perimeter.dev/kwok-exit-code"));
  EXPECT_THAT(status, HasSubstr("terminated"));
}

TEST(KwokStagesTest, MalformedDurationsFailThePodInsteadOfRunningForever) {
  YAML::Node invalid = stage_named("perimeter-pod-invalid-completion");
  ASSERT_TRUE(invalid.IsDefined());
  const std::string status = invalid["spec"]["next"]["statusTemplate"].as<std::string>();
  EXPECT_THAT(status, HasSubstr("phase: Failed"));
  EXPECT_THAT(status, HasSubstr("InvalidCompletionAnnotation"));
  // Both stages use the same pattern, so exactly one of them matches any annotated pod.
  std::ostringstream complete, rejected;
  complete << stage_named("perimeter-pod-complete")["spec"]["selector"];
  rejected << invalid["spec"]["selector"];
  EXPECT_THAT(complete.str(), HasSubstr("(ns|us|ms|s|m|h)"));
  EXPECT_THAT(rejected.str(), HasSubstr("(ns|us|ms|s|m|h)"));
}

TEST(KwokStagesTest, PodsGoRunningAndDeletedPodsGo) {
  EXPECT_THAT(
      stage_named("perimeter-pod-running")["spec"]["next"]["statusTemplate"].as<std::string>(),
      HasSubstr("phase: Running"));
  YAML::Node deleted = stage_named("perimeter-pod-delete");
  EXPECT_TRUE(deleted["spec"]["next"]["delete"].as<bool>());
  EXPECT_TRUE(deleted["spec"]["next"]["finalizers"]["empty"].as<bool>());
}

}  // namespace
}  // namespace perimeter::localcluster
