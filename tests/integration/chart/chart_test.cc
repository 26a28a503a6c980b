// The install paths users take, against a real control plane: the Helm chart, and the rendered
// manifests for `kubectl apply` and GitOps.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

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
  // `helm template` of the chart with `set` (e.g. "--set runnerEgress.mode=cilium").
  std::string render(const std::string& set) {
    const auto out = run(helm_binary_ + " template perimeter " + source_dir() +
                         "/charts/perimeter --namespace perimeter-system " + set);
    EXPECT_EQ(out.exit_code, 0) << out.output;
    return out.output;
  }
  std::string kubectl_, helm_, helm_binary_;
};

TEST_F(ChartTest, TheChartShipsTheSameCrdsAsTheRepository) {
  const auto names_in = [](const std::string& dir) {
    std::set<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      names.insert(entry.path().filename().string());
    return names;
  };
  const auto in_repo = names_in(source_dir() + "/crds");
  EXPECT_EQ(names_in(source_dir() + "/charts/perimeter/crds"), in_repo)
      << "charts/perimeter/crds/ is out of date: copy crds/ into it";
  for (const char* crd :
       {"perimeter.dev_agentenvironments.yaml", "perimeter.dev_mcptunnels.yaml"}) {
    EXPECT_TRUE(in_repo.contains(crd)) << crd;
    const std::string text = read_file(source_dir() + "/crds/" + crd);
    ASSERT_FALSE(text.empty()) << crd;
    EXPECT_EQ(read_file(source_dir() + "/charts/perimeter/crds/" + crd), text)
        << crd << ": charts/perimeter/crds/ is out of date: copy crds/ into it";
  }
}

TEST_F(ChartTest, TheRenderedManifestsAreWhatTheChartRenders) {
  const std::string out = ::testing::TempDir() + "/perimeter-rendered.yaml";
  const auto rendered =
      run("HELM=" + helm_binary_ + " " + source_dir() + "/hack/render-manifests.sh " + out);
  ASSERT_EQ(rendered.exit_code, 0) << rendered.output;
  EXPECT_EQ(read_file(out), read_file(source_dir() + "/deploy/perimeter.yaml"))
      << "deploy/perimeter.yaml is out of date: run `make manifests`";
  // The chart renders its `helm test` hooks by default; the file for `kubectl apply` has none
  // (kubectl would create the test pod as an ordinary one).
  const std::string manifests = read_file(out);
  ASSERT_FALSE(manifests.empty());
  EXPECT_EQ(manifests.find("helm.sh/hook: test"), std::string::npos);
  EXPECT_EQ(manifests.find("perimeter-test"), std::string::npos);
  const auto by_default = run(helm_binary_ + " template perimeter " + source_dir() +
                              "/charts/perimeter --namespace perimeter-system");
  ASSERT_EQ(by_default.exit_code, 0) << by_default.output;
  EXPECT_NE(by_default.output.find("name: perimeter-test"), std::string::npos)
      << "tests.enabled is on by default: the test pod should render";
  EXPECT_NE(by_default.output.find("helm.sh/hook: test"), std::string::npos);
  const std::string readme = read_file(source_dir() + "/charts/perimeter/README.md");
  EXPECT_NE(readme.find("| `tests.enabled` | `true` |"), std::string::npos)
      << "charts/perimeter/README.md should give tests.enabled's default as true";
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

  // team-a opts in to sessions, tunnels-a to McpTunnels; team-b to neither.
  for (const char* ns : {"team-a", "team-b", "tunnels-a"}) {
    ASSERT_EQ(run(kubectl_ + " create namespace " + ns).exit_code, 0);
  }
  const auto install = run(helm_ + " install perimeter " + source_dir() +
                           "/charts/perimeter --namespace perimeter-system"
                           " --set sessionNamespaces={team-a} --set tunnelNamespaces={tunnels-a}"
                           " --wait --timeout 180s");
  ASSERT_EQ(install.exit_code, 0) << install.output;
  const auto ready = run(kubectl_ +
                         " -n perimeter-system get deployment perimeter"
                         " -o jsonpath={.status.availableReplicas}");
  EXPECT_EQ(ready.output, "2") << "both replicas should be admitted and available";
  for (const char* name : {"agentenvironments.perimeter.dev", "mcptunnels.perimeter.dev"}) {
    const auto crd = run(kubectl_ + " get crd " + name + " -o name");
    EXPECT_EQ(crd.exit_code, 0) << crd.output;
  }

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
  // The runner NetworkPolicy is watched, so one deleted or edited by hand is put back at once.
  EXPECT_EQ(can("watch networkpolicies.networking.k8s.io -n team-a"), "yes");
  EXPECT_EQ(can("delete networkpolicies.networking.k8s.io -n team-a"), "no");
  // The ConfigMap of an apiCAConfigMapRef is read by name, in the namespaces that opted in only.
  EXPECT_EQ(can("get configmaps -n team-a"), "yes");
  for (const char* what :
       {"list configmaps -n team-a", "watch configmaps -n team-a", "patch configmaps -n team-a",
        "get configmaps -n team-b", "get configmaps -n kube-system"}) {
    EXPECT_EQ(can(what), "no") << what;
  }
  // Least privilege: nothing beyond what the controllers use.
  EXPECT_EQ(can("update agentenvironments.perimeter.dev -n team-a"), "no");
  EXPECT_EQ(can("create deployments.apps -n team-a"), "no");
  EXPECT_EQ(can("create pods --subresource=exec -n team-a"), "no");
  EXPECT_EQ(can("create clusterrolebindings.rbac.authorization.k8s.io"), "no");
  EXPECT_EQ(can("create leases.coordination.k8s.io -n team-a"), "no");
  // No Secret, Pod or NetworkPolicy outside the namespaces that opted in, by any verb.
  for (const char* verb :
       {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}) {
    for (const char* ns : {"kube-system", "team-b", "perimeter-system"}) {
      EXPECT_EQ(can(std::string(verb) + " secrets -n " + ns), "no") << verb << " secrets in " << ns;
      EXPECT_EQ(can(std::string(verb) + " pods -n " + ns), "no") << verb << " pods in " << ns;
      EXPECT_EQ(can(std::string(verb) + " networkpolicies.networking.k8s.io -n " + ns), "no")
          << verb << " networkpolicies in " << ns;
    }
  }

  // McpTunnels: read everywhere, finalizer and status written; the gateway's objects only in the
  // namespace listed in tunnelNamespaces.
  EXPECT_EQ(can("list mcptunnels.perimeter.dev --all-namespaces"), "yes");
  EXPECT_EQ(can("watch mcptunnels.perimeter.dev --all-namespaces"), "yes");
  EXPECT_EQ(can("patch mcptunnels.perimeter.dev -n team-b"), "yes");
  EXPECT_EQ(can("patch mcptunnels.perimeter.dev --subresource=status -n team-b"), "yes");
  EXPECT_EQ(can("update mcptunnels.perimeter.dev --subresource=finalizers -n team-b"), "yes");
  EXPECT_EQ(can("create mcptunnels.perimeter.dev -n tunnels-a"), "no");
  EXPECT_EQ(can("delete mcptunnels.perimeter.dev -n tunnels-a"), "no");
  EXPECT_EQ(can("patch deployments.apps -n tunnels-a"), "yes");
  EXPECT_EQ(can("get secrets -n tunnels-a"), "yes");
  EXPECT_EQ(can("update secrets -n tunnels-a"), "yes");
  EXPECT_EQ(can("patch configmaps -n tunnels-a"), "yes");
  EXPECT_EQ(can("watch services -n tunnels-a"), "yes");
  EXPECT_EQ(can("patch networkpolicies.networking.k8s.io -n tunnels-a"), "yes");
  EXPECT_EQ(can("delete poddisruptionbudgets.policy -n tunnels-a"), "yes");
  // Secrets there are read by name only, never listed, watched or deleted; no pods of its own.
  for (const char* verb : {"list", "watch", "delete", "deletecollection"}) {
    EXPECT_EQ(can(std::string(verb) + " secrets -n tunnels-a"), "no") << verb;
  }
  EXPECT_EQ(can("create pods -n tunnels-a"), "no");
  EXPECT_EQ(can("delete deployments.apps -n tunnels-a"), "no");
  EXPECT_EQ(can("get services -n tunnels-a --subresource=proxy"), "no");
  for (const char* ns : {"team-b", "team-a", "kube-system", "perimeter-system"}) {
    for (const char* what :
         {"patch deployments.apps", "list deployments.apps", "get services", "list services",
          "patch configmaps", "create poddisruptionbudgets.policy", "update secrets"}) {
      EXPECT_EQ(can(std::string(what) + " -n " + ns), "no") << what << " in " << ns;
    }
  }
  for (const char* what : {"list services", "list deployments.apps", "get secrets"}) {
    EXPECT_EQ(can(std::string(what) + " --all-namespaces"), "no") << what;
  }

  // Workload identity: tokens for its own ServiceAccount, and for no other.
  EXPECT_EQ(can("create serviceaccounts/perimeter --subresource=token -n perimeter-system"), "yes");
  EXPECT_EQ(can("create serviceaccounts/default --subresource=token -n perimeter-system"), "no");
  EXPECT_EQ(can("create serviceaccounts --subresource=token -n perimeter-system"), "no");
  EXPECT_EQ(can("create serviceaccounts/perimeter --subresource=token -n kube-system"), "no");
  EXPECT_EQ(can("create serviceaccounts/perimeter --subresource=token -n tunnels-a"), "no");
  EXPECT_EQ(can("get serviceaccounts/perimeter -n perimeter-system"), "no");
  // The attack, performed: as the operator, mint a token for its own ServiceAccount (allowed)
  // and for another one in the same namespace and in kube-system (refused by RBAC).
  const auto own =
      run(kubectl_ + " -n perimeter-system create token perimeter --duration=10m" + as);
  EXPECT_EQ(own.exit_code, 0) << own.output;
  EXPECT_EQ(own.output.rfind("eyJ", 0), 0u) << "a JWT for its own ServiceAccount: " << own.output;
  ASSERT_EQ(run(kubectl_ + " -n perimeter-system create serviceaccount bystander").exit_code, 0);
  const std::vector<std::pair<std::string, std::string>> others = {
      {"perimeter-system", "bystander"},
      {"perimeter-system", "default"},
      {"kube-system", "default"}};
  for (const auto& [ns, account] : others) {
    const auto stolen =
        run(kubectl_ + " -n " + ns + " create token " + account + " --duration=10m" + as);
    EXPECT_NE(stolen.exit_code, 0) << ns << "/" << account << ": a token was issued";
    EXPECT_NE(stolen.output.find("forbidden"), std::string::npos)
        << ns << "/" << account << ": " << stolen.output.substr(0, 200);
    EXPECT_EQ(stolen.output.find("eyJ"), std::string::npos)
        << ns << "/" << account << ": a token was issued";
  }
  EXPECT_EQ(run(kubectl_ + " -n perimeter-system delete serviceaccount bystander").exit_code, 0);

  const auto uninstall = run(helm_ + " uninstall perimeter --namespace perimeter-system --wait");
  EXPECT_EQ(uninstall.exit_code, 0) << uninstall.output;
}

// Cluster-wide mode exists on purpose and renders what it says: the session rules in the
// ClusterRole that is bound cluster-wide, and the operator told to serve every namespace. By
// default that ClusterRole has none of them.
TEST_F(ChartTest, ClusterWideModeGrantsTheSessionRulesEverywhereOnlyWhenAskedFor) {
  const auto rendered = [&](const std::string& set) { return render(set); };
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

// Issue 17: the runner egress mode reaches the operator's flags, and the Cilium policy rules are
// granted only when the cluster is said to run Cilium.
TEST_F(ChartTest, CiliumPolicyRulesAreGrantedOnlyInCiliumEgressMode) {
  const auto rendered = [&](const std::string& set) { return render(set); };
  const std::string by_default = rendered("");
  EXPECT_NE(by_default.find("- --runner-egress=public-addresses\n"), std::string::npos);
  EXPECT_EQ(by_default.find("ciliumnetworkpolicies"), std::string::npos);

  const std::string cilium =
      rendered("--set runnerEgress.mode=cilium --set runnerEgress.clusterDns=dns/app=coredns");
  EXPECT_NE(cilium.find("- --runner-egress=cilium\n"), std::string::npos);
  EXPECT_NE(cilium.find("- --cluster-dns=dns/app=coredns\n"), std::string::npos);
  EXPECT_NE(cilium.find("resources: [ciliumnetworkpolicies]"), std::string::npos) << cilium;
}

// The attack: a cluster admin (or anyone with RBAC on NetworkPolicies) opens or deletes the policy
// that holds runner pods in. The operator would put it back within seconds; with the chart's
// ValidatingAdmissionPolicy the change is refused outright, so the pods are never open. The
// operator's own ServiceAccount still may change it.
TEST_F(ChartTest, OnlyTheOperatorMayOpenOrDeleteARunnerPolicy) {
  const std::string ns = "protect-a";
  ASSERT_EQ(run(kubectl_ + " create namespace " + ns).exit_code, 0);
  const std::string policies = ::testing::TempDir() + "/policy-protection.yaml";
  const auto rendered = run(helm_binary_ + " template perimeter " + source_dir() +
                            "/charts/perimeter --namespace perimeter-system"
                            " --show-only templates/policy-protection.yaml > " +
                            policies);
  ASSERT_EQ(rendered.exit_code, 0) << rendered.output;
  ASSERT_EQ(run(kubectl_ + " apply -f " + policies).exit_code, 0);
  // The operator's ServiceAccount may patch policies in this namespace (the chart's session rules).
  ASSERT_EQ(run(kubectl_ + " -n " + ns +
                " create rolebinding operator-patch --clusterrole=edit"
                " --serviceaccount=perimeter-system:perimeter")
                .exit_code,
            0);
  const std::string policy = R"({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
    "metadata":{"name":"run-a","labels":{"app.kubernetes.io/managed-by":"perimeter",
    "app.kubernetes.io/component":"runner"}},"spec":{"podSelector":{},"policyTypes":["Egress"]}})";
  ASSERT_EQ(run("echo '" + policy + "' | " + kubectl_ + " -n " + ns + " create -f -").exit_code, 0)
      << "creating one stays allowed: the operator is not the only creator of policies";

  const std::string open = " -n " + ns +
                           " patch networkpolicy run-a --type merge -p "
                           "'{\"spec\":{\"egress\":[{}]}}'";
  // A new admission policy takes effect once the apiserver has loaded it: wait for the refusal.
  CommandResult opened;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  do {
    opened = run(kubectl_ + open);
    if (opened.exit_code != 0) break;
    // Not refused yet: close it again, as the operator (always allowed), and try once more.
    run(kubectl_ + " -n " + ns +
        " patch networkpolicy run-a --type json -p '[{\"op\":\"remove\",\"path\":"
        "\"/spec/egress\"}]' --as=system:serviceaccount:perimeter-system:perimeter");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_NE(opened.exit_code, 0) << "an admin opened the runner policy: " << opened.output;
  EXPECT_NE(opened.output.find("only the Perimeter operator may change or delete it"),
            std::string::npos)
      << opened.output;

  const auto deleted = run(kubectl_ + " -n " + ns + " delete networkpolicy run-a");
  EXPECT_NE(deleted.exit_code, 0) << "an admin deleted the runner policy";
  const auto unlabelled =
      run(kubectl_ + " -n " + ns + " label networkpolicy run-a app.kubernetes.io/component-");
  EXPECT_NE(unlabelled.exit_code, 0) << "removing the label would step around the protection";
  EXPECT_EQ(
      run(kubectl_ + " -n " + ns + " get networkpolicy run-a -o jsonpath={.spec.egress}").output,
      "")
      << "the policy is as the operator left it";

  const auto by_operator =
      run(kubectl_ + open + " --as=system:serviceaccount:perimeter-system:perimeter");
  EXPECT_EQ(by_operator.exit_code, 0) << by_operator.output;

  EXPECT_EQ(run(kubectl_ + " delete -f " + policies).exit_code, 0);
  EXPECT_EQ(run(kubectl_ + " delete namespace " + ns + " --wait=false").exit_code, 0);
}

// Gateway egress mode: the operator runs the egress gateway in its own namespace, so it is
// granted the gateway's objects there by name, and nothing else of that namespace (Helm's release
// Secrets live in it); other modes grant none of it.
TEST_F(ChartTest, GatewayObjectsAreGrantedByNameOnlyInGatewayEgressMode) {
  const auto rendered = [&](const std::string& set) { return render(set); };
  const std::string by_default = rendered("");
  EXPECT_EQ(by_default.find("perimeter-egress-gateway"), std::string::npos);
  EXPECT_EQ(by_default.find("--egress-gateway"), std::string::npos);

  const std::string gateway = rendered(
      "--set runnerEgress.mode=gateway --set runnerEgress.gateway.image=registry.example/gw:1"
      " --set runnerEgress.gateway.replicas=3");
  EXPECT_NE(gateway.find("- --runner-egress=gateway\n"), std::string::npos);
  EXPECT_NE(gateway.find("- --egress-gateway-namespace=perimeter-system\n"), std::string::npos);
  EXPECT_NE(gateway.find("- --egress-gateway-image=registry.example/gw:1\n"), std::string::npos);
  EXPECT_NE(gateway.find("- --egress-gateway-replicas=3\n"), std::string::npos);
  const size_t role =
      gateway.find("  name: perimeter-egress-gateway\n  namespace: perimeter-system");
  ASSERT_NE(role, std::string::npos) << gateway;
  const std::string rules = gateway.substr(role, gateway.find("\n---", role) - role);
  EXPECT_NE(rules.find("resources: [secrets]\n    resourceNames: [perimeter-egress-gateway-key]"),
            std::string::npos)
      << rules;
  // Every rule but create names its objects.
  size_t at = 0;
  while ((at = rules.find("verbs: [", at)) != std::string::npos) {
    const std::string verbs = rules.substr(at, rules.find(']', at) - at);
    const size_t rule_start = rules.rfind("- apiGroups", at);
    const std::string rule = rules.substr(rule_start, at - rule_start);
    if (verbs != "verbs: [create") {
      EXPECT_NE(rule.find("resourceNames:"), std::string::npos) << rule << verbs;
    }
    ++at;
  }
}

// Warm assignment (docs/warm-pool.md) is off by default and then renders nothing. On, it renders
// the ClusterIP Service on the operator's pods, the container port and the flags, exactly one more
// ingress in the operator's NetworkPolicy (warm runner pods, any namespace, that port), and a Role
// that reads the CA Secret by name and creates Secrets; the real apiserver accepts them all.
TEST_F(ChartTest, WarmAssignmentRendersItsServiceIngressAndCaSecretRuleOnlyWhenEnabled) {
  const std::string by_default = render("--skip-tests");
  for (const char* absent : {"perimeter-assignment", "--warm-assignment", "name: assignment"}) {
    EXPECT_EQ(by_default.find(absent), std::string::npos) << absent;
  }

  const std::string on =
      render("--skip-tests --set warmAssignment.enabled=true --set warmAssignment.port=9443");
  for (const char* flag :
       {"- --warm-assignment-port=9443\n", "- --warm-assignment-service=perimeter-assignment\n",
        "- --warm-assignment-ca-secret=perimeter-assignment-ca\n",
        "- --warm-assignment-pod-labels=app.kubernetes.io/component=operator,"
        "app.kubernetes.io/instance=perimeter,app.kubernetes.io/name=perimeter\n",
        "- {name: assignment, containerPort: 9443, protocol: TCP}\n"}) {
    EXPECT_NE(on.find(flag), std::string::npos) << flag;
  }

  const size_t service = on.find("kind: Service\nmetadata:\n  name: perimeter-assignment\n");
  ASSERT_NE(service, std::string::npos) << on;
  const std::string service_doc = on.substr(service, on.find("\n---", service) - service);
  EXPECT_NE(service_doc.find("  type: ClusterIP\n  selector:\n"
                             "    app.kubernetes.io/name: perimeter\n"
                             "    app.kubernetes.io/instance: perimeter\n"
                             "    app.kubernetes.io/component: operator\n"
                             "  ports:\n"
                             "    - {name: assignment, port: 9443, targetPort: assignment, "
                             "protocol: TCP}"),
            std::string::npos)
      << service_doc;

  // The operator's NetworkPolicy: the ingress is the default one plus exactly this rule.
  const auto ingress_of = [](const std::string& rendered) {
    const size_t policy = rendered.find("kind: NetworkPolicy\nmetadata:\n  name: perimeter\n");
    const size_t from = rendered.find("  ingress:\n", policy);
    return rendered.substr(from, rendered.find("  egress:\n", from) - from);
  };
  const std::string default_ingress = ingress_of(by_default);
  const std::string warm_ingress = ingress_of(on);
  ASSERT_EQ(warm_ingress.rfind(default_ingress, 0), 0u) << warm_ingress;
  const std::string added = warm_ingress.substr(default_ingress.size());
  const std::string expected_rule =
      "    - from:\n"
      "        - namespaceSelector: {}\n"
      "          podSelector:\n"
      "            matchLabels:\n"
      "              app.kubernetes.io/managed-by: perimeter\n"
      "              app.kubernetes.io/component: runner\n"
      "              perimeter.dev/warm: \"true\"\n"
      "      ports:\n"
      "        - {port: 9443, protocol: TCP}\n";
  // Comment lines aside, the addition is that one rule.
  std::string rules;
  std::istringstream lines(added);
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(' ') != std::string::npos &&
        line[line.find_first_not_of(' ')] == '#')
      continue;
    rules += line + "\n";
  }
  EXPECT_EQ(rules, expected_rule);

  const size_t role = on.find("  name: perimeter-warm-assignment\n  namespace: perimeter-system");
  ASSERT_NE(role, std::string::npos) << on;
  const std::string role_doc = on.substr(role, on.find("\n---", role) - role);
  EXPECT_NE(role_doc.find("  - apiGroups: [\"\"]\n    resources: [secrets]\n"
                          "    resourceNames: [\"perimeter-assignment-ca\"]\n    verbs: [get]\n"
                          "  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [create]"),
            std::string::npos)
      << role_doc;
  EXPECT_EQ(role_doc.find("update"), std::string::npos) << role_doc;
  EXPECT_EQ(role_doc.find("list"), std::string::npos) << role_doc;

  // The real apiserver takes every object as rendered.
  run(kubectl_ + " create namespace perimeter-system");  // another test may have made it
  const std::string file = ::testing::TempDir() + "/perimeter-warm-assignment.yaml";
  std::ofstream(file) << on;
  const auto dry_run = run(kubectl_ + " apply --dry-run=server -f " + file);
  EXPECT_EQ(dry_run.exit_code, 0) << dry_run.output;
  EXPECT_NE(dry_run.output.find("service/perimeter-assignment created (server dry run)"),
            std::string::npos)
      << dry_run.output;
}

// The tunnel rules follow the session rules' shapes: bound only in tunnelNamespaces by default,
// in the cluster-wide ClusterRole with clusterWide, in the Role with watchNamespace; the operator
// is told the same namespaces, and its own ServiceAccount, whose tokens alone it may request.
TEST_F(ChartTest, TunnelRulesAreGrantedOnlyWhereTunnelNamespacesOrClusterWideSaySo) {
  const auto rendered = [&](const std::string& set) { return render(set); };
  // Every YAML document of that kind and name (a RoleBinding name repeats across namespaces).
  const auto documents = [](const std::string& all, const std::string& kind,
                            const std::string& name) {
    std::vector<std::string> found;
    size_t start = 0;
    while (start < all.size()) {
      size_t end = all.find("\n---", start);
      if (end == std::string::npos) end = all.size();
      const std::string doc = all.substr(start, end - start);
      if (doc.find("\nkind: " + kind + "\n") != std::string::npos &&
          doc.find("\n  name: " + name + "\n") != std::string::npos)
        found.push_back(doc);
      start = end + 4;
    }
    return found;
  };
  const auto one = [&](const std::string& all, const std::string& kind, const std::string& name) {
    const auto found = documents(all, kind, name);
    return found.size() == 1 ? found[0] : std::string();
  };
  const std::vector<std::string> gateway_kinds = {
      "resources: [configmaps]", "resources: [services]", "resources: [deployments]",
      "resources: [poddisruptionbudgets]"};

  const std::string by_default = rendered("");
  const std::string bound_role = one(by_default, "ClusterRole", "perimeter");
  ASSERT_FALSE(bound_role.empty()) << by_default;
  EXPECT_NE(bound_role.find("resources: [mcptunnels]"), std::string::npos) << bound_role;
  EXPECT_NE(bound_role.find("resources: [mcptunnels/finalizers]"), std::string::npos);
  for (const auto& rule : gateway_kinds)
    EXPECT_EQ(bound_role.find(rule), std::string::npos) << rule << " in\n" << bound_role;
  const std::string tunnel_role = one(by_default, "ClusterRole", "perimeter-tunnels");
  ASSERT_FALSE(tunnel_role.empty()) << by_default;
  for (const auto& rule : gateway_kinds)
    EXPECT_NE(tunnel_role.find(rule), std::string::npos) << rule << " in\n" << tunnel_role;
  EXPECT_TRUE(documents(by_default, "RoleBinding", "perimeter-tunnels").empty())
      << "no namespace opted in, so nothing binds the tunnel rules";
  EXPECT_NE(by_default.find("- --tunnel-namespaces=\n"), std::string::npos);
  EXPECT_NE(by_default.find("- --tunnels-service-account=perimeter-system/perimeter\n"),
            std::string::npos);
  EXPECT_NE(by_default.find("- --cluster-domain=cluster.local\n"), std::string::npos);
  const std::string token_role = one(by_default, "Role", "perimeter-token");
  ASSERT_FALSE(token_role.empty()) << by_default;
  EXPECT_NE(token_role.find("  namespace: perimeter-system\n"), std::string::npos) << token_role;
  EXPECT_NE(token_role.find("resources: [serviceaccounts/token]"), std::string::npos);
  EXPECT_NE(token_role.find("resourceNames: [\"perimeter\"]"), std::string::npos) << token_role;
  EXPECT_NE(token_role.find("verbs: [create]"), std::string::npos) << token_role;
  EXPECT_FALSE(one(by_default, "RoleBinding", "perimeter-token").empty());

  const std::string listed = rendered("--set tunnelNamespaces={mcp-a,mcp-b}");
  const auto bindings = documents(listed, "RoleBinding", "perimeter-tunnels");
  ASSERT_EQ(bindings.size(), 2u) << listed;
  EXPECT_NE(bindings[0].find("  namespace: mcp-a\n"), std::string::npos) << bindings[0];
  EXPECT_NE(bindings[1].find("  namespace: mcp-b\n"), std::string::npos) << bindings[1];
  EXPECT_NE(listed.find("- --tunnel-namespaces=mcp-a,mcp-b\n"), std::string::npos);

  const std::string cluster_wide =
      rendered("--set clusterWide=true --set tunnelNamespaces={mcp-a}");
  const std::string wide_role = one(cluster_wide, "ClusterRole", "perimeter");
  for (const auto& rule : gateway_kinds)
    EXPECT_NE(wide_role.find(rule), std::string::npos) << rule << " in\n" << wide_role;
  EXPECT_NE(cluster_wide.find("- --tunnel-namespaces=*\n"), std::string::npos);
  EXPECT_TRUE(documents(cluster_wide, "ClusterRole", "perimeter-tunnels").empty());
  EXPECT_TRUE(documents(cluster_wide, "RoleBinding", "perimeter-tunnels").empty());
  EXPECT_FALSE(one(cluster_wide, "Role", "perimeter-token").empty())
      << "tokens stay limited to the operator's own ServiceAccount in every mode";

  const std::string one_namespace = rendered("--set watchNamespace=mcp-a");
  const std::string namespace_role = one(one_namespace, "Role", "perimeter");
  for (const auto& rule : gateway_kinds)
    EXPECT_NE(namespace_role.find(rule), std::string::npos) << rule << " in\n" << namespace_role;
  EXPECT_EQ(one_namespace.find("--tunnel-namespaces"), std::string::npos)
      << "the operator serves McpTunnels of the watched namespace only";

  // The token rule follows the ServiceAccount's name.
  const std::string renamed = rendered("--set fullnameOverride=edge");
  EXPECT_NE(one(renamed, "Role", "edge-token").find("resourceNames: [\"edge\"]"),
            std::string::npos);
  EXPECT_NE(renamed.find("- --tunnels-service-account=perimeter-system/edge\n"), std::string::npos);
}

// Issue 20: a wrong value fails at `helm template` and `helm install`, naming the field, before
// anything reaches the cluster; the operator would otherwise refuse it at start-up (or, for a typo,
// silently run with the default).
TEST_F(ChartTest, TheSchemaRejectsBadValuesNamingTheField) {
  struct Case {
    std::string set;    // --set arguments
    std::string field;  // as the schema error names it
  };
  const std::vector<Case> cases = {
      {"--set runnerEgress.mode=open", "/runnerEgress/mode"},
      {"--set runnerEgres.mode=cilium", "'runnerEgres'"},
      {"--set runnerEgress.clusterDns=kube-dns", "/runnerEgress/clusterDns"},
      {"--set runnerEgress.clusterDns=kube-system/", "/runnerEgress/clusterDns"},
      {"--set runnerEgress.gateway.replicas=0", "/runnerEgress/gateway/replicas"},
      {"--set runnerEgress.gateway.imag=x", "'imag'"},
      {"--set logLevel=verbose", "/logLevel"},
      {"--set allowedApiHosts={api.anthropic.com}", "/allowedApiHosts/0"},
      {"--set allowedApiHosts={https://api.example/v1}", "/allowedApiHosts/0"},
      {"--set allowedApiHosts={https://user@api.example}", "/allowedApiHosts/0"},
      {"--set allowedApiHosts=null", "'allowedApiHosts'"},  // helm drops a null key
      {"--set tunnelAudiences={}", "/tunnelAudiences"},
      {"--set sessionNamespaces={Team_A}", "/sessionNamespaces/0"},
      {"--set tunnelNamespaces={a,a}", "/tunnelNamespaces"},
      {"--set watchNamespace=-x", "/watchNamespace"},
      {"--set replicaCount=0", "/replicaCount"},
      {"--set workers=-1", "/workers"},
      {"--set pollThreads=two", "/pollThreads"},
      {"--set maxExtraPollThreads=0", "/maxExtraPollThreads"},
      {"--set leaderElection.enabled=maybe", "/leaderElection/enabled"},
      {"--set clusterWide=yes", "/clusterWide"},
      {"--set image.pullPolicy=Sometimes", "/image/pullPolicy"},
      {"--set image.repository=", "/image/repository"},
      {"--set image.tag=1", "/image/tag"},  // a number: --set-string is needed
      {"--set metrics.port=70000", "/metrics/port"},
      {"--set healthProbePort=0", "/healthProbePort"},
      {"--set networkPolicy.egressPorts={0}", "/networkPolicy/egressPorts/0"},
      {"--set metrics.serviceMonitor.interval=30", "/metrics/serviceMonitor/interval"},
      {"--set metrics.prometheusRule.alerts.PerimeterNoLeader.for=soon",
       "/metrics/prometheusRule/alerts/PerimeterNoLeader/for"},
      {"--set metrics.prometheusRule.alerts.PerimeterNoLeader.enable=false", "'enable'"},
      {"--set metrics.grafanaDashboard.label=", "/metrics/grafanaDashboard/label"},
      {"--set metrics.prometheusRule.runbookBaseUrl=docs",
       "/metrics/prometheusRule/runbookBaseUrl"},
      {"--set tests.image.pullPolicy=Maybe", "/tests/image/pullPolicy"},
      {"--set mcpGuard.image='a b'", "/mcpGuard/image"},
  };
  const std::string chart = source_dir() + "/charts/perimeter";
  for (const auto& c : cases) {
    const auto out = run(helm_binary_ + " template perimeter " + chart +
                         " --namespace perimeter-system " + c.set);
    EXPECT_NE(out.exit_code, 0) << c.set << " was accepted";
    EXPECT_NE(out.output.find("values don't meet the specifications of the schema"),
              std::string::npos)
        << c.set << ": " << out.output;
    EXPECT_NE(out.output.find(c.field), std::string::npos)
        << c.set << ": the error should name " << c.field << ":\n"
        << out.output;
  }
  // Good values of the same fields pass.
  const auto good = run(helm_binary_ + " template perimeter " + chart +
                        " --namespace perimeter-system --set runnerEgress.mode=gateway"
                        " --set 'runnerEgress.clusterDns=dns/app=coredns\\,tier=node'"
                        " --set allowedApiHosts={https://api.anthropic.com,http://127.0.0.1:8443/}"
                        " --set sessionNamespaces={team-a} --set logLevel=debug"
                        " --set-string image.tag=1 --set image.repository=registry.example:5000/"
                        "perimeter-operator --set metrics.prometheusRule.alerts.PerimeterNoLeader"
                        ".for=15m --set tests.enabled=true");
  EXPECT_EQ(good.exit_code, 0) << good.output;

  // `helm install` refuses the same way, and installs nothing.
  ASSERT_EQ(run(kubectl_ + " create namespace perimeter-schema").exit_code, 0);
  const auto install = run(helm_ + " install perimeter-schema " + chart +
                           " --namespace perimeter-schema --set runnerEgress.mode=open");
  EXPECT_NE(install.exit_code, 0) << install.output;
  EXPECT_NE(install.output.find("/runnerEgress/mode"), std::string::npos) << install.output;
  const auto releases = run(helm_ + " list --namespace perimeter-schema --all -q");
  EXPECT_EQ(releases.output, "") << "nothing should be installed";
  const auto objects =
      run(kubectl_ + " -n perimeter-schema get deployments,serviceaccounts -o name");
  EXPECT_EQ(objects.output.find("perimeter-schema"), std::string::npos) << objects.output;
  EXPECT_EQ(run(kubectl_ + " delete namespace perimeter-schema --wait=false").exit_code, 0);
}

// Every value users may set is described in the chart's README, under its full dotted name.
TEST_F(ChartTest, TheChartReadmeDescribesEveryValue) {
  const std::string readme = read_file(source_dir() + "/charts/perimeter/README.md");
  ASSERT_FALSE(readme.empty()) << "charts/perimeter/README.md is missing";
  const std::string schema = read_file(source_dir() + "/charts/perimeter/values.schema.json");
  // values.yaml's keys by indentation: a key followed by more indented keys is a parent; any other
  // (a scalar, a flow map, a list, block or flow) is a leaf.
  std::ifstream values(source_dir() + "/charts/perimeter/values.yaml");
  std::vector<std::pair<size_t, std::string>> lines;  // indent, text: no blanks, no comments
  for (std::string line; std::getline(values, line);) {
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    lines.emplace_back(indent, line.substr(indent));
  }
  std::vector<std::pair<size_t, std::string>> parents;  // indent, key
  std::vector<std::string> leaves;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& [indent, text] = lines[i];
    const size_t colon = text.find(':');
    if (text[0] == '-' || colon == std::string::npos) continue;
    while (!parents.empty() && parents.back().first >= indent) parents.pop_back();
    std::string path;
    for (const auto& [_, parent] : parents) path += parent + ".";
    path += text.substr(0, colon);
    const bool has_children = i + 1 < lines.size() && lines[i + 1].first > indent &&
                              lines[i + 1].second[0] != '-' &&
                              text.find_first_not_of(' ', colon + 1) == std::string::npos;
    if (has_children)
      parents.emplace_back(indent, text.substr(0, colon));
    else
      leaves.push_back(path);
  }
  ASSERT_GT(leaves.size(), 40u) << "values.yaml did not parse";
  for (const auto& leaf : leaves) {
    EXPECT_NE(readme.find("`" + leaf + "`"), std::string::npos)
        << leaf << " is not described in charts/perimeter/README.md";
    const std::string last = leaf.substr(leaf.rfind('.') + 1);
    EXPECT_NE(schema.find("\"" + last + "\""), std::string::npos)
        << leaf << " is not in values.schema.json";
  }
}

// `helm test`: the test pod is admitted under the restricted Pod Security Standard, with an
// identity that may read the operator's Lease and nothing else. KWOK fakes the pod (no container
// runs here; it goes Succeeded on the harness's annotation), so what `helm test` shows in this
// harness is the hook objects and the flow; the Lease read is performed below as that identity.
// e2e/real_node/helm_chart_real_node_test.cc runs the hook pod for real, against the operator
// image, and shows it fail when it should.
TEST_F(ChartTest, HelmTestHooksRunUnderRestrictedPodSecurityAndMayOnlyReadTheLease) {
  const std::string ns = "perimeter-hooks";
  const std::string chart = source_dir() + "/charts/perimeter";
  ASSERT_EQ(run(kubectl_ + " create namespace " + ns).exit_code, 0);
  ASSERT_EQ(
      run(kubectl_ + " label namespace " + ns + " pod-security.kubernetes.io/enforce=restricted")
          .exit_code,
      0);

  // The test's RBAC, applied as is, then its rights as the test's ServiceAccount.
  const auto rbac = run(helm_binary_ + " template hooks " + chart + " --namespace " + ns +
                        " --set tests.enabled=true --show-only templates/tests/rbac.yaml | " +
                        kubectl_ + " apply -f -");
  ASSERT_EQ(rbac.exit_code, 0) << rbac.output;
  const std::string as = " --as=system:serviceaccount:" + ns + ":hooks-perimeter-test";
  const auto can = [&](const std::string& what) {
    std::string out = run(kubectl_ + " auth can-i " + what + as).output;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  };
  EXPECT_EQ(can("get leases.coordination.k8s.io/hooks-perimeter -n " + ns), "yes");
  EXPECT_EQ(can("get leases.coordination.k8s.io/other -n " + ns), "no");
  for (const char* verb : {"list", "watch", "update", "patch", "create", "delete"})
    EXPECT_EQ(can(std::string(verb) + " leases.coordination.k8s.io -n " + ns), "no") << verb;
  EXPECT_EQ(can("get leases.coordination.k8s.io/hooks-perimeter -n default"), "no");
  EXPECT_EQ(can("get secrets -n " + ns), "no");
  EXPECT_EQ(can("get pods -n " + ns), "no");
  // The read the test pod makes, as its identity, of a Lease a leader holds.
  const std::string lease =
      "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":"
      "\"hooks-perimeter\"},\"spec\":{\"holderIdentity\":\"replica-a\","
      "\"leaseDurationSeconds\":15}}";
  ASSERT_EQ(run("echo '" + lease + "' | " + kubectl_ + " -n " + ns + " create -f -").exit_code, 0);
  const auto holder = run(kubectl_ + " -n " + ns +
                          " get lease hooks-perimeter -o jsonpath={.spec.holderIdentity}" + as);
  EXPECT_EQ(holder.output, "replica-a");
  ASSERT_EQ(run(helm_binary_ + " template hooks " + chart + " --namespace " + ns +
                " --set tests.enabled=true --show-only templates/tests/rbac.yaml | " + kubectl_ +
                " delete -f -")
                .exit_code,
            0);

  // Install with the default values (tests on) and `helm test`: the pod must be admitted by
  // restricted admission to run at all.
  const auto install =
      run(helm_ + " install hooks " + chart + " --namespace " + ns +
          " --set-string 'tests.podAnnotations.perimeter\\.dev/kwok-complete-after=1s'"
          " --wait --timeout 180s");
  ASSERT_EQ(install.exit_code, 0) << install.output;
  const auto test = run(helm_ + " test hooks --namespace " + ns + " --timeout 120s");
  EXPECT_EQ(test.exit_code, 0) << test.output;
  EXPECT_NE(test.output.find("hooks-perimeter-test"), std::string::npos) << test.output;
  EXPECT_NE(test.output.find("Succeeded"), std::string::npos) << test.output;
  const auto warnings = run(kubectl_ + " get events -n " + ns + " --field-selector reason=Failed");
  EXPECT_EQ(warnings.output.find("violates PodSecurity"), std::string::npos) << warnings.output;
  // Test objects go once they passed.
  const auto left = run(kubectl_ + " -n " + ns + " get serviceaccounts,roles,pods -o name");
  EXPECT_EQ(left.output.find("hooks-perimeter-test"), std::string::npos) << left.output;

  EXPECT_EQ(run(helm_ + " uninstall hooks --namespace " + ns + " --wait").exit_code, 0);
  EXPECT_EQ(run(kubectl_ + " delete namespace " + ns + " --wait=false").exit_code, 0);
}

// Helm installs crds/ only on the first install. An upgrade from a chart whose AgentEnvironment CRD
// lacks spec.egress.allowedHosts: refused until the CRDs are applied (naming the command), then
// done; the AgentEnvironment and its session pod are still there, and the new field is kept.
TEST_F(ChartTest, AnUpgradeFromThePreviousChartUpdatesTheCrdsAndKeepsSessions) {
  const std::string chart = source_dir() + "/charts/perimeter";
  const std::string ns = "perimeter-upgrade";
  const std::string sessions = "upgrade-sessions";
  const std::string crd = "agentenvironments.perimeter.dev";

  // The previous chart: this one as it was before the CRD got spec.egress.allowedHosts, and
  // before the CRD check, the schema and the test hooks.
  const std::string previous = ::testing::TempDir() + "/perimeter-previous";
  std::filesystem::remove_all(previous);
  std::filesystem::copy(chart, previous, std::filesystem::copy_options::recursive);
  std::filesystem::remove(previous + "/templates/crds-current.yaml");
  std::filesystem::remove(previous + "/values.schema.json");
  std::filesystem::remove_all(previous + "/templates/tests");
  {
    std::string chart_yaml = read_file(previous + "/Chart.yaml");
    const size_t at = chart_yaml.find("\nversion: ");
    ASSERT_NE(at, std::string::npos);
    chart_yaml.replace(at, chart_yaml.find('\n', at + 1) - at, "\nversion: 0.0.9");
    std::ofstream(previous + "/Chart.yaml") << chart_yaml;
  }
  {
    const std::string path = previous + "/crds/perimeter.dev_agentenvironments.yaml";
    std::istringstream in(read_file(path));
    std::string out, line;
    size_t dropping_deeper_than = std::string::npos;
    while (std::getline(in, line)) {
      const size_t indent = line.find_first_not_of(' ');
      if (dropping_deeper_than != std::string::npos) {
        if (indent == std::string::npos || indent > dropping_deeper_than) continue;
        dropping_deeper_than = std::string::npos;
      }
      if (indent != std::string::npos && line.compare(indent, 13, "allowedHosts:") == 0) {
        dropping_deeper_than = indent;
        continue;
      }
      out += line + "\n";
    }
    ASSERT_NE(read_file(path).find("allowedHosts:"), std::string::npos);
    ASSERT_EQ(out.find(" allowedHosts:\n"), std::string::npos);
    std::ofstream(path) << out;
  }
  const std::string egress_fields =
      " -o jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.egress"
      ".properties}";

  // The cluster as the previous chart left it: its CRD (earlier tests installed the current one).
  ASSERT_EQ(run(kubectl_ + " delete crd " + crd + " --ignore-not-found --wait").exit_code, 0);
  for (const std::string& name : {ns, sessions})
    ASSERT_EQ(run(kubectl_ + " create namespace " + name).exit_code, 0);
  ASSERT_EQ(
      run(kubectl_ + " label namespace " + ns + " pod-security.kubernetes.io/enforce=restricted")
          .exit_code,
      0);
  const auto install = run(helm_ + " install perimeter-upgrade " + previous + " --namespace " + ns +
                           " --set sessionNamespaces={" + sessions + "} --wait --timeout 180s");
  ASSERT_EQ(install.exit_code, 0) << install.output;
  const auto old_crd = run(kubectl_ + " get crd " + crd + egress_fields);
  ASSERT_EQ(old_crd.exit_code, 0) << old_crd.output;
  ASSERT_EQ(old_crd.output.find("\"allowedHosts\":"), std::string::npos) << old_crd.output;

  // An environment, and a session's runner pod it owns.
  const std::string environment =
      R"({"apiVersion":"perimeter.dev/v1alpha1","kind":"AgentEnvironment",
    "metadata":{"name":"payments"},"spec":{"environmentId":"env_upgrade",
    "environmentKeySecretRef":{"name":"payments-env-key","key":"environment-key"},
    "runner":{"image":"registry.example/perimeter-runner:0.1.0"}}})";
  ASSERT_EQ(run("echo '" + environment + "' | " + kubectl_ + " -n " + sessions + " create -f -")
                .exit_code,
            0);
  const auto env_uid = run(kubectl_ + " -n " + sessions +
                           " get agentenvironment payments -o jsonpath={.metadata.uid}");
  ASSERT_EQ(env_uid.exit_code, 0) << env_uid.output;
  const std::string pod = R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"payments-session",
    "ownerReferences":[{"apiVersion":"perimeter.dev/v1alpha1","kind":"AgentEnvironment",
    "name":"payments","uid":")" +
                          env_uid.output +
                          R"("}]},"spec":{"containers":[{"name":"runner",
    "image":"registry.example/perimeter-runner:0.1.0"}]}})";
  ASSERT_EQ(run("echo '" + pod + "' | " + kubectl_ + " -n " + sessions + " create -f -").exit_code,
            0);
  const auto pod_state = [&] {
    return run(kubectl_ + " -n " + sessions +
               " get pod payments-session -o jsonpath={.metadata.uid}/{.status.phase}")
        .output;
  };
  std::string before;
  for (int i = 0; i < 60 && before.find("/Running") == std::string::npos; ++i) {
    before = pod_state();
    if (before.find("/Running") == std::string::npos) run("sleep 1");
  }
  ASSERT_NE(before.find("/Running"), std::string::npos) << before;

  // Upgrading without the CRDs applied is refused, naming the step.
  const std::string upgrade = helm_ + " upgrade perimeter-upgrade " + chart + " --namespace " + ns +
                              " --set sessionNamespaces={" + sessions + "} --wait --timeout 180s";
  const auto refused = run(upgrade);
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  EXPECT_NE(refused.output.find(crd), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("kubectl apply --server-side --force-conflicts -f"),
            std::string::npos)
      << refused.output;

  // The documented step (README.md, "Upgrading"), then the upgrade.
  const auto applied =
      run(kubectl_ + " apply --server-side --force-conflicts -f " + chart + "/crds/");
  ASSERT_EQ(applied.exit_code, 0) << applied.output;
  const auto upgraded = run(upgrade);
  ASSERT_EQ(upgraded.exit_code, 0) << upgraded.output;
  const auto history = run(helm_ + " history perimeter-upgrade --namespace " + ns);
  EXPECT_NE(history.output.find("perimeter-0.0.9"), std::string::npos) << history.output;
  EXPECT_NE(history.output.find("perimeter-0.1.0"), std::string::npos) << history.output;
  const auto ready = run(kubectl_ + " -n " + ns +
                         " get deployment perimeter-upgrade -o jsonpath={.status.updatedReplicas}");
  EXPECT_EQ(ready.output, "2") << ready.output;

  const auto new_crd = run(kubectl_ + " get crd " + crd + egress_fields);
  EXPECT_NE(new_crd.output.find("\"allowedHosts\":"), std::string::npos) << new_crd.output;
  const auto env_after = run(kubectl_ + " -n " + sessions +
                             " get agentenvironment payments -o jsonpath={.metadata.uid}");
  EXPECT_EQ(env_after.output, env_uid.output) << "the AgentEnvironment should survive the upgrade";
  EXPECT_EQ(pod_state(), before) << "the session's pod should be untouched";
  // The new field is stored, not pruned.
  const auto patched =
      run(kubectl_ + " -n " + sessions +
          " patch agentenvironment payments --type=merge -p "
          "'{\"spec\":{\"egress\":{\"allowedHosts\":[{\"host\":\"pypi.org\"}]}}}'");
  EXPECT_EQ(patched.exit_code, 0) << patched.output;
  const auto stored = run(kubectl_ + " -n " + sessions +
                          " get agentenvironment payments -o jsonpath={.spec.egress.allowedHosts}");
  EXPECT_NE(stored.output.find("pypi.org"), std::string::npos) << stored.output;
  // A second upgrade with nothing to apply goes through.
  const auto again = run(upgrade);
  EXPECT_EQ(again.exit_code, 0) << again.output;

  EXPECT_EQ(run(helm_ + " uninstall perimeter-upgrade --namespace " + ns + " --wait").exit_code, 0);
  for (const std::string& name : {ns, sessions})
    EXPECT_EQ(run(kubectl_ + " delete namespace " + name + " --wait=false").exit_code, 0);
}

}  // namespace
}  // namespace perimeter
