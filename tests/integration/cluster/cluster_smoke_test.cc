// The harness is real: a CRD round-trips, Deployments run on KWOK nodes, pods finish per the
// completion annotation, the garbage collector collects, PodSecurity enforces "restricted".
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "cluster/local_cluster.h"
#include "kube_api.h"

namespace perimeter::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr int kNodes = 2;

LocalClusterOptions full_stack() {
  LocalClusterOptions options;
  options.controller_manager = true;
  options.scheduler = true;
  options.kwok_nodes = kNodes;
  return options;
}

class ClusterSmokeTest : public ::testing::Test {
 protected:
  ClusterSmokeTest() : cluster_(shared_cluster(full_stack())), api_(cluster_) {}

  json pod_spec(const std::string& name, const json& annotations = json::object()) {
    return {
        {"apiVersion", "v1"},
        {"kind", "Pod"},
        {"metadata", {{"name", name}, {"annotations", annotations}}},
        {"spec",
         {{"securityContext",
           {{"runAsNonRoot", true}, {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
          {"containers",
           {{{"name", "main"},
             {"image", "registry.invalid/perimeter/runner:test"},
             {"securityContext",
              {{"allowPrivilegeEscalation", false}, {"capabilities", {{"drop", {"ALL"}}}}}}}}}}}};
  }

  std::string pod_phase(const std::string& ns, const std::string& name) {
    json pod = api_.get_json("/api/v1/namespaces/" + ns + "/pods/" + name);
    if (pod.is_null()) return "";
    return pod["status"].value("phase", "");
  }

  LocalCluster& cluster_;
  KubeApi api_;
};

TEST_F(ClusterSmokeTest, ServesReadyzWithTheAdminClientCertificate) {
  auto response = api_.get("/readyz");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "ok");
  json who = json::parse(
      api_.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                {{"apiVersion", "authentication.k8s.io/v1"}, {"kind", "SelfSubjectReview"}})
          .body);
  EXPECT_EQ(who["status"]["userInfo"]["username"], "perimeter-admin");
  EXPECT_THAT(who["status"]["userInfo"]["groups"].dump(), HasSubstr("system:masters"));
}

TEST_F(ClusterSmokeTest, AnonymousRequestsAreNotAdmins) {
  localcluster::HttpClientConfig config;
  config.base_url = cluster_.apiserver_url();
  config.ca_file = cluster_.ca_file();
  localcluster::HttpClient anonymous(config);
  auto response = anonymous.get("/api/v1/namespaces/kube-system/secrets");
  EXPECT_EQ(response.status, 403) << response.body;
  EXPECT_THAT(response.body, HasSubstr("system:anonymous"));
}

TEST_F(ClusterSmokeTest, CrdAndCustomObjectRoundTrip) {
  json crd = {{"apiVersion", "apiextensions.k8s.io/v1"},
              {"kind", "CustomResourceDefinition"},
              {"metadata", {{"name", "widgets.smoke.perimeter.dev"}}},
              {"spec",
               {{"group", "smoke.perimeter.dev"},
                {"scope", "Namespaced"},
                {"names",
                 {{"plural", "widgets"},
                  {"singular", "widget"},
                  {"kind", "Widget"},
                  {"listKind", "WidgetList"}}},
                {"versions",
                 {{{"name", "v1"},
                   {"served", true},
                   {"storage", true},
                   {"subresources", {{"status", json::object()}}},
                   {"schema",
                    {{"openAPIV3Schema",
                      {{"type", "object"},
                       {"properties",
                        {{"spec",
                          {{"type", "object"},
                           {"properties",
                            {{"size", {{"type", "integer"}, {"minimum", 1}}},
                             {"colour", {{"type", "string"}}}}}}},
                         {"status",
                          {{"type", "object"},
                           {"properties", {{"observed", {{"type", "integer"}}}}}}}}}}}}}}}}}}};
  auto created = api_.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd);
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_TRUE(eventually([&] {
    json current = api_.get_json(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.perimeter.dev");
    if (current.is_null()) return false;
    for (const auto& condition : current["status"].value("conditions", json::array())) {
      if (condition["type"] == "Established" && condition["status"] == "True") return true;
    }
    return false;
  })) << "the CRD never became Established";

  const std::string widgets = "/apis/smoke.perimeter.dev/v1/namespaces/default/widgets";
  json widget = {{"apiVersion", "smoke.perimeter.dev/v1"},
                 {"kind", "Widget"},
                 {"metadata", {{"name", "blue-one"}, {"labels", {{"shade", "blue"}}}}},
                 {"spec", {{"size", 3}, {"colour", "blue"}}}};
  // Discovery of a fresh CRD can lag its Established condition by a moment.
  localcluster::HttpResponse posted;
  ASSERT_TRUE(eventually([&] {
    posted = api_.post(widgets, widget);
    return posted.status != 404;
  }));
  ASSERT_EQ(posted.status, 201) << posted.body;

  json read = api_.get_json(widgets + "/blue-one");
  ASSERT_FALSE(read.is_null());
  EXPECT_EQ(read["spec"], widget["spec"]);
  EXPECT_EQ(read["metadata"]["labels"]["shade"], "blue");
  EXPECT_EQ(read["metadata"].value("generation", 0), 1);

  // Status goes through its subresource; the spec is untouched by it.
  read["status"] = {{"observed", 1}};
  auto status_update = api_.put(widgets + "/blue-one/status", read);
  ASSERT_EQ(status_update.status, 200) << status_update.body;
  json after = api_.get_json(widgets + "/blue-one");
  EXPECT_EQ(after["status"]["observed"], 1);
  EXPECT_EQ(after["spec"], widget["spec"]);

  // The schema is enforced: a size below the minimum is refused with the server's reason.
  json invalid = widget;
  invalid["metadata"]["name"] = "too-small";
  invalid["spec"]["size"] = 0;
  auto refused = api_.post(widgets, invalid);
  EXPECT_EQ(refused.status, 422);
  EXPECT_THAT(refused.body, HasSubstr("spec.size"));

  json list = api_.get_json(widgets + "?labelSelector=shade%3Dblue");
  ASSERT_FALSE(list.is_null());
  ASSERT_EQ(list["items"].size(), 1u);
  EXPECT_EQ(list["items"][0]["metadata"]["name"], "blue-one");

  EXPECT_EQ(api_.remove(widgets + "/blue-one").status, 200);
  EXPECT_TRUE(eventually([&] { return api_.get(widgets + "/blue-one").status == 404; }));
}

TEST_F(ClusterSmokeTest, FakeNodesAreReady) {
  json nodes = api_.get_json("/api/v1/nodes");
  ASSERT_FALSE(nodes.is_null());
  ASSERT_EQ(nodes["items"].size(), static_cast<size_t>(kNodes));
  for (const auto& node : nodes["items"]) {
    bool ready = false;
    for (const auto& condition : node["status"]["conditions"]) {
      if (condition["type"] == "Ready") ready = condition["status"] == "True";
    }
    EXPECT_TRUE(ready) << node["metadata"]["name"];
  }
}

TEST_F(ClusterSmokeTest, DeploymentPodsAreScheduledAndRunOnKwokNodes) {
  const std::string ns = "smoke-deployment";
  api_.create_namespace(ns);
  json deployment = {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", {{"name", "web"}}},
      {"spec",
       {{"replicas", 3},
        {"selector", {{"matchLabels", {{"app", "web"}}}}},
        {"template",
         {{"metadata", {{"labels", {{"app", "web"}}}}},
          {"spec", {{"containers", {{{"name", "web"}, {"image", "registry.invalid/web:1"}}}}}}}}}}};
  auto created = api_.post("/apis/apps/v1/namespaces/" + ns + "/deployments", deployment);
  ASSERT_EQ(created.status, 201) << created.body;

  json pods;
  ASSERT_TRUE(eventually([&] {
    pods = api_.get_json("/api/v1/namespaces/" + ns + "/pods?labelSelector=app%3Dweb");
    if (pods.is_null() || pods["items"].size() != 3) return false;
    for (const auto& pod : pods["items"]) {
      if (pod["status"].value("phase", "") != "Running") return false;
    }
    return true;
  })) << "pods: "
      << pods.dump();
  for (const auto& pod : pods["items"]) {
    EXPECT_THAT(pod["spec"].value("nodeName", ""), HasSubstr("kwok-node-"));
    EXPECT_FALSE(pod["status"].value("podIP", "").empty());
  }
  EXPECT_TRUE(eventually([&] {
    json current = api_.get_json("/apis/apps/v1/namespaces/" + ns + "/deployments/web");
    return !current.is_null() && current["status"].value("availableReplicas", 0) == 3;
  })) << "the Deployment never reported 3 available replicas";
}

TEST_F(ClusterSmokeTest, PodSucceedsWhenItsCompletionAnnotationSaysSo) {
  const std::string ns = "smoke-completion";
  api_.create_namespace(ns);
  const std::string pods = "/api/v1/namespaces/" + ns + "/pods";
  auto created =
      api_.post(pods, pod_spec("finishes", {{"perimeter.dev/kwok-complete-after", "2s"}}));
  ASSERT_EQ(created.status, 201) << created.body;
  auto forever = api_.post(pods, pod_spec("runs-on"));
  ASSERT_EQ(forever.status, 201) << forever.body;

  ASSERT_TRUE(eventually([&] { return pod_phase(ns, "finishes") == "Succeeded"; }))
      << "phase stayed " << pod_phase(ns, "finishes");
  json pod = api_.get_json(pods + "/finishes");
  const json& state = pod["status"]["containerStatuses"][0]["state"];
  ASSERT_TRUE(state.contains("terminated")) << pod["status"].dump();
  EXPECT_EQ(state["terminated"]["exitCode"], 0);
  EXPECT_EQ(state["terminated"]["reason"], "Completed");
  // The pod without the annotation went Running and is still Running.
  EXPECT_EQ(pod_phase(ns, "runs-on"), "Running");
}

TEST_F(ClusterSmokeTest, PodFailsWithTheAnnotatedExitCode) {
  const std::string ns = "smoke-exit-code";
  api_.create_namespace(ns);
  const std::string pods = "/api/v1/namespaces/" + ns + "/pods";
  auto created = api_.post(pods, pod_spec("crashes", {{"perimeter.dev/kwok-complete-after", "1s"},
                                                      {"perimeter.dev/kwok-exit-code", "3"}}));
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_TRUE(eventually([&] { return pod_phase(ns, "crashes") == "Failed"; }));
  json pod = api_.get_json(pods + "/crashes");
  EXPECT_EQ(pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
}

TEST_F(ClusterSmokeTest, MalformedCompletionAnnotationFailsThePodVisibly) {
  const std::string ns = "smoke-bad-annotation";
  api_.create_namespace(ns);
  const std::string pods = "/api/v1/namespaces/" + ns + "/pods";
  auto created =
      api_.post(pods, pod_spec("typo", {{"perimeter.dev/kwok-complete-after", "five seconds"}}));
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_TRUE(eventually([&] { return pod_phase(ns, "typo") == "Failed"; }));
  json pod = api_.get_json(pods + "/typo");
  EXPECT_EQ(pod["status"]["reason"], "InvalidCompletionAnnotation");
  EXPECT_THAT(pod["status"].value("message", ""), HasSubstr("five seconds"));
}

TEST_F(ClusterSmokeTest, DeletedPodsAreRemovedWithoutAKubelet) {
  const std::string ns = "smoke-pod-delete";
  api_.create_namespace(ns);
  const std::string pods = "/api/v1/namespaces/" + ns + "/pods";
  json pod = pod_spec("short-lived");
  pod["metadata"]["finalizers"] = {"perimeter.dev/test-finalizer"};
  ASSERT_EQ(api_.post(pods, pod).status, 201);
  ASSERT_TRUE(eventually([&] { return pod_phase(ns, "short-lived") == "Running"; }));
  // A graceful delete only marks the pod; KWOK, standing in for the kubelet, finishes it.
  ASSERT_EQ(api_.remove(pods + "/short-lived").status, 200);
  EXPECT_TRUE(eventually([&] { return api_.get(pods + "/short-lived").status == 404; }))
      << "the pod was never removed";
}

TEST_F(ClusterSmokeTest, DeletingAnOwnerGarbageCollectsItsChildren) {
  const std::string ns = "smoke-gc";
  api_.create_namespace(ns);
  const std::string configmaps = "/api/v1/namespaces/" + ns + "/configmaps";
  auto owner = api_.post(
      configmaps, {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "owner"}}}});
  ASSERT_EQ(owner.status, 201) << owner.body;
  const std::string owner_uid = json::parse(owner.body)["metadata"]["uid"];
  for (const std::string name : {"child-a", "child-b"}) {
    auto child = api_.post(configmaps, {{"apiVersion", "v1"},
                                        {"kind", "ConfigMap"},
                                        {"metadata",
                                         {{"name", name},
                                          {"ownerReferences",
                                           {{{"apiVersion", "v1"},
                                             {"kind", "ConfigMap"},
                                             {"name", "owner"},
                                             {"uid", owner_uid}}}}}}});
    ASSERT_EQ(child.status, 201) << child.body;
  }
  auto unowned = api_.post(
      configmaps,
      {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "bystander"}}}});
  ASSERT_EQ(unowned.status, 201);

  ASSERT_EQ(api_.remove(configmaps + "/owner").status, 200);
  EXPECT_TRUE(eventually([&] {
    return api_.get(configmaps + "/child-a").status == 404 &&
           api_.get(configmaps + "/child-b").status == 404;
  })) << "the garbage collector did not delete the children";
  EXPECT_EQ(api_.get(configmaps + "/bystander").status, 200);
}

TEST_F(ClusterSmokeTest, PodSecurityRestrictedRejectsAPrivilegedPod) {
  const std::string ns = "smoke-restricted";
  api_.create_namespace(ns, {{"pod-security.kubernetes.io/enforce", "restricted"}});
  const std::string pods = "/api/v1/namespaces/" + ns + "/pods";
  json privileged = pod_spec("privileged");
  privileged["spec"]["containers"][0]["securityContext"] = {{"privileged", true}};
  auto refused = api_.post(pods, privileged);
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("violates PodSecurity \\\"restricted:latest\\\""));
  EXPECT_THAT(refused.body, HasSubstr("privileged"));

  auto compliant = api_.post(pods, pod_spec("compliant"));
  EXPECT_EQ(compliant.status, 201) << compliant.body;

  // The same privileged pod is admitted where no level is enforced.
  const std::string open_ns = "smoke-unrestricted";
  api_.create_namespace(open_ns);
  EXPECT_EQ(api_.post("/api/v1/namespaces/" + open_ns + "/pods", privileged).status, 201);
}

}  // namespace
}  // namespace perimeter::testing
