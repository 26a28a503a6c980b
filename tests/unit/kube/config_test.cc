#include "kube/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "kube/api_error.h"

namespace perimeter::kube {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/perimeter-kube-config-XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& contents) const {
    const auto file = (fs::path(path_) / name).string();
    std::ofstream(file) << contents;
    return file;
  }

 private:
  std::string path_;
};

// "hello-ca" and friends, base64-encoded, as kubeconfig *-data fields carry them.
constexpr const char* kTwoContexts = R"(
apiVersion: v1
kind: Config
current-context: admin
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: aGVsbG8tY2E=
- name: other
  cluster:
    server: https://127.0.0.1:7443
    insecure-skip-tls-verify: true
contexts:
- name: admin
  context: {cluster: local, user: admin, namespace: team-a}
- name: robot
  context: {cluster: other, user: robot}
users:
- name: admin
  user:
    client-certificate-data: aGVsbG8tY2VydA==
    client-key-data: aGVsbG8ta2V5
- name: robot
  user:
    token: s3cret
)";

TEST(ConfigTest, CurrentContextWithInlineCertificates) {
  const auto config = Config::from_kubeconfig_text(kTwoContexts, "");
  EXPECT_EQ(config.context_name, "admin");
  EXPECT_EQ(config.server, "https://127.0.0.1:6443");
  EXPECT_EQ(config.ca_pem, "hello-ca");
  EXPECT_EQ(config.client_cert_pem, "hello-cert");
  EXPECT_EQ(config.client_key_pem, "hello-key");
  EXPECT_EQ(config.default_namespace, "team-a");
  EXPECT_FALSE(config.insecure_skip_tls_verify);
  EXPECT_TRUE(config.bearer_token.empty());
}

TEST(ConfigTest, NamedContextWithTokenAndInsecureSkipVerify) {
  const auto config = Config::from_kubeconfig_text(kTwoContexts, "", "robot");
  EXPECT_EQ(config.server, "https://127.0.0.1:7443");
  EXPECT_TRUE(config.insecure_skip_tls_verify);
  EXPECT_EQ(config.bearer_token, "s3cret");
  EXPECT_EQ(config.default_namespace, "default");
}

TEST(ConfigTest, FilePathsResolveAgainstTheKubeconfigsFolder) {
  TempDir dir;
  dir.write("ca.crt", "file-ca");
  dir.write("client.crt", "file-cert");
  dir.write("client.key", "file-key");
  const auto path = dir.write("config", R"(
current-context: c
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1", certificate-authority: ca.crt}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
users: [{name: u, user: {client-certificate: client.crt, client-key: client.key}}]
)");
  const auto config = Config::from_kubeconfig_file(path);
  EXPECT_EQ(config.ca_pem, "file-ca");
  EXPECT_EQ(config.client_cert_pem, "file-cert");
  EXPECT_EQ(config.client_key_pem, "file-key");
}

TEST(ConfigTest, ClearErrorsForBadInput) {
  EXPECT_THROW(Config::from_kubeconfig_text(kTwoContexts, "", "missing"), ConfigError);
  EXPECT_THROW(Config::from_kubeconfig_text("{{{not yaml", ""), ConfigError);
  EXPECT_THROW(Config::from_kubeconfig_text("- a list", ""), ConfigError);
  EXPECT_THROW(Config::from_kubeconfig_file("/nonexistent/perimeter/kubeconfig"), ConfigError);
  try {
    Config::from_kubeconfig_text(R"(
current-context: c
clusters: [{name: k, cluster: {server: "https://h", certificate-authority-data: "!!notbase64"}}]
contexts: [{name: c, context: {cluster: k}}]
)",
                                 "");
    FAIL() << "bad base64 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("certificate-authority-data"), std::string::npos);
  }
  try {
    Config::from_kubeconfig_text(kTwoContexts, "", "nope");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
}

TEST(ConfigTest, InClusterReadsServiceAccountFilesAndEnv) {
  TempDir dir;
  Config::InClusterPaths paths{dir.write("token", "tok\n"), dir.write("ca.crt", "sa-ca"),
                               dir.write("namespace", "perimeter-system")};
  std::map<std::string, std::string> env{{"KUBERNETES_SERVICE_HOST", "127.0.0.1"},
                                         {"KUBERNETES_SERVICE_PORT", "443"}};
  const auto lookup = [&](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  const auto config = Config::in_cluster(paths, lookup);
  EXPECT_EQ(config.server, "https://127.0.0.1:443");
  EXPECT_EQ(config.ca_pem, "sa-ca");
  EXPECT_EQ(config.bearer_token_file, paths.token_file);
  EXPECT_EQ(config.default_namespace, "perimeter-system");

  env["KUBERNETES_SERVICE_HOST"] = "::1";
  EXPECT_EQ(Config::in_cluster(paths, lookup).server, "https://[::1]:443");

  env.erase("KUBERNETES_SERVICE_HOST");
  EXPECT_THROW(Config::in_cluster(paths, lookup), ConfigError);
}

TEST(ConfigTest, LoadPrefersTheExplicitPathThenTheFirstExistingKubeconfigFile) {
  TempDir dir;
  const auto first = dir.write("first", R"(
current-context: c
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1111"}}]
contexts: [{name: c, context: {cluster: k}}]
)");
  const auto second = dir.write("second", R"(
current-context: c
clusters: [{name: k, cluster: {server: "https://127.0.0.1:2222"}}]
contexts: [{name: c, context: {cluster: k}}]
)");
  // Tests run on one thread here; the variable is restored before returning.
  const char* saved = std::getenv("KUBECONFIG");  // NOLINT(concurrency-mt-unsafe)
  const std::string previous = saved ? saved : "";
  setenv("KUBECONFIG", (dir.path() + "/missing:" + second + ":" + first).c_str(), 1);
  EXPECT_EQ(Config::load().server, "https://127.0.0.1:2222");
  EXPECT_EQ(Config::load(first).server, "https://127.0.0.1:1111");
  setenv("KUBECONFIG", (dir.path() + "/missing").c_str(), 1);
  try {
    Config::load();
    FAIL() << "a KUBECONFIG naming no file was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
  if (saved)
    setenv("KUBECONFIG", previous.c_str(), 1);
  else
    unsetenv("KUBECONFIG");
}

TEST(ConfigTest, Base64DecodesStandardAndUrlAlphabets) {
  EXPECT_EQ(base64_decode("aGVsbG8=", "x"), "hello");
  EXPECT_EQ(base64_decode("aGVs\nbG8", "x"), "hello");
  EXPECT_EQ(base64_decode("-_8=", "x"), std::string("\xfb\xff", 2));
  EXPECT_THROW(base64_decode("a*b", "x"), ConfigError);
}

}  // namespace
}  // namespace perimeter::kube
