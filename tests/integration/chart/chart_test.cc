// The install paths users take, against a real control plane: the Helm chart, and the rendered
// manifests for `kubectl apply` and GitOps.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cluster/local_cluster.h"
#include "localcluster/tools.h"

namespace perimeter {
namespace {

std::string source_dir() {
  return std::getenv("PERIMETER_SOURCE_DIR");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult run(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class ChartTest : public ::testing::Test {
 protected:
  static testing::LocalClusterOptions cluster_options() {
    testing::LocalClusterOptions options;
    options.controller_manager = true;  // Deployments become ReplicaSets become Pods
    options.scheduler = true;
    options.kwok_nodes = 2;
    return options;
  }
  void SetUp() override {
    auto& cluster = testing::shared_cluster(cluster_options());
    const std::string tools = localcluster::tools_bin_dir();
    kubectl_ =
        localcluster::require_tool(tools, "kubectl") + " --kubeconfig " + cluster.kubeconfig_path();
    helm_ =
        localcluster::require_tool(tools, "helm") + " --kubeconfig " + cluster.kubeconfig_path();
    helm_binary_ = localcluster::require_tool(tools, "helm");
  }
  std::string kubectl_, helm_, helm_binary_;
};

TEST_F(ChartTest, TheChartShipsTheSameCrdsAsTheRepository) {
  const std::string crd = "perimeter.dev_agentenvironments.yaml";
  const std::string in_repo = read_file(source_dir() + "/crds/" + crd);
  ASSERT_FALSE(in_repo.empty());
  EXPECT_EQ(read_file(source_dir() + "/charts/perimeter/crds/" + crd), in_repo)
      << "charts/perimeter/crds/ is out of date: copy crds/ into it";
}

TEST_F(ChartTest, TheRenderedManifestsAreWhatTheChartRenders) {
  const std::string out = ::testing::TempDir() + "/perimeter-rendered.yaml";
  const auto rendered =
      run("HELM=" + helm_binary_ + " " + source_dir() + "/hack/render-manifests.sh " + out);
  ASSERT_EQ(rendered.exit_code, 0) << rendered.output;
  EXPECT_EQ(read_file(out), read_file(source_dir() + "/deploy/perimeter.yaml"))
      << "deploy/perimeter.yaml is out of date: run `make manifests`";
}

TEST_F(ChartTest, HelmInstallsALeastPrivilegeOperatorThatRestrictedAdmissionAdmits) {
  // The operator's own namespace enforces the "restricted" Pod Security Standard.
  ASSERT_EQ(run(kubectl_ + " create namespace perimeter-system").exit_code, 0);
  ASSERT_EQ(run(kubectl_ + " label namespace perimeter-system "
                           "pod-security.kubernetes.io/enforce=restricted")
                .exit_code,
            0);

  // The same objects, as `kubectl apply` of the rendered file would create them.
  const auto dry_run =
      run(kubectl_ + " apply --dry-run=server -f " + source_dir() + "/deploy/perimeter.yaml");
  ASSERT_EQ(dry_run.exit_code, 0) << dry_run.output;

  // team-a opts in to sessions; team-b does not.
  for (const char* ns : {"team-a", "team-b"}) {
    ASSERT_EQ(run(kubectl_ + " create namespace " + ns).exit_code, 0);
  }
  const auto install = run(helm_ + " install perimeter " + source_dir() +
                           "/charts/perimeter --namespace perimeter-system"
                           " --set sessionNamespaces={team-a} --wait --timeout 180s");
  ASSERT_EQ(install.exit_code, 0) << install.output;
  const auto ready = run(kubectl_ +
                         " -n perimeter-system get deployment perimeter"
                         " -o jsonpath={.status.availableReplicas}");
  EXPECT_EQ(ready.output, "2") << "both replicas should be admitted and available";
  const auto crd = run(kubectl_ + " get crd agentenvironments.perimeter.dev -o name");
  EXPECT_EQ(crd.exit_code, 0) << crd.output;

  const std::string as = " --as=system:serviceaccount:perimeter-system:perimeter";
  // The answer is the last line ("yes"/"no"); kubectl may warn above it.
  const auto can = [&](const std::string& what) {
    std::string out = run(kubectl_ + " auth can-i " + what + as).output;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  };
  EXPECT_EQ(can("create pods -n team-a"), "yes");
  EXPECT_EQ(can("update agentenvironments.perimeter.dev --subresource=status -n team-a"), "yes");
  EXPECT_EQ(can("create leases.coordination.k8s.io -n perimeter-system"), "yes");
  // Least privilege: nothing beyond what the controllers use.
  EXPECT_EQ(can("update agentenvironments.perimeter.dev -n team-a"), "no");
  EXPECT_EQ(can("create deployments.apps -n team-a"), "no");
  EXPECT_EQ(can("create pods --subresource=exec -n team-a"), "no");
  EXPECT_EQ(can("create clusterrolebindings.rbac.authorization.k8s.io"), "no");
  EXPECT_EQ(can("create leases.coordination.k8s.io -n team-a"), "no");
  // No Secret or Pod outside the namespaces that opted in, by any verb.
  for (const char* verb :
       {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}) {
    for (const char* ns : {"kube-system", "team-b", "perimeter-system"}) {
      EXPECT_EQ(can(std::string(verb) + " secrets -n " + ns), "no") << verb << " secrets in " << ns;
      EXPECT_EQ(can(std::string(verb) + " pods -n " + ns), "no") << verb << " pods in " << ns;
    }
  }

  const auto uninstall = run(helm_ + " uninstall perimeter --namespace perimeter-system --wait");
  EXPECT_EQ(uninstall.exit_code, 0) << uninstall.output;
}

// Cluster-wide mode exists on purpose and renders what it says: the session rules in the
// ClusterRole that is bound cluster-wide, and the operator told to serve every namespace. By
// default that ClusterRole has none of them.
TEST_F(ChartTest, ClusterWideModeGrantsTheSessionRulesEverywhereOnlyWhenAskedFor) {
  const auto rendered = [&](const std::string& set) {
    const auto out = run(helm_binary_ + " template perimeter " + source_dir() +
                         "/charts/perimeter --namespace perimeter-system " + set);
    EXPECT_EQ(out.exit_code, 0) << out.output;
    return out.output;
  };
  // The YAML document of the object of that kind and name.
  const auto document = [](const std::string& all, const std::string& kind,
                           const std::string& name) {
    size_t start = 0;
    while (start < all.size()) {
      size_t end = all.find("\n---", start);
      if (end == std::string::npos) end = all.size();
      const std::string doc = all.substr(start, end - start);
      if (doc.find("\nkind: " + kind + "\n") != std::string::npos &&
          doc.find("\n  name: " + name + "\n") != std::string::npos)
        return doc;
      start = end + 4;
    }
    return std::string();
  };
  const std::string by_default = rendered("");
  const std::string bound_role = document(by_default, "ClusterRole", "perimeter");
  ASSERT_FALSE(bound_role.empty()) << by_default;
  EXPECT_EQ(bound_role.find("secrets"), std::string::npos) << bound_role;
  EXPECT_EQ(bound_role.find("pods"), std::string::npos) << bound_role;
  EXPECT_FALSE(document(by_default, "ClusterRole", "perimeter-sessions").empty());
  EXPECT_TRUE(document(by_default, "RoleBinding", "perimeter-sessions").empty())
      << "no namespace opted in, so nothing binds the session rules";
  EXPECT_NE(by_default.find("- --session-namespaces=\n"), std::string::npos);
  EXPECT_FALSE(document(by_default, "NetworkPolicy", "perimeter").empty())
      << "the operator's own NetworkPolicy is on by default";

  const std::string cluster_wide = rendered("--set clusterWide=true");
  EXPECT_NE(document(cluster_wide, "ClusterRole", "perimeter").find("resources: [secrets]"),
            std::string::npos);
  EXPECT_NE(cluster_wide.find("- --session-namespaces=*"), std::string::npos);
  EXPECT_TRUE(document(cluster_wide, "ClusterRole", "perimeter-sessions").empty());
}

}  // namespace
}  // namespace perimeter
