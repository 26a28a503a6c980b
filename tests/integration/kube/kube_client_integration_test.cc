// The Kubernetes client against a real kube-apiserver + etcd (tests/support/cluster).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "cluster/local_cluster.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"

namespace perimeter::kube {
namespace {

using nlohmann::json;

class KubeClientIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto& cluster = perimeter::testing::shared_cluster();
    config_ = Config::from_kubeconfig_file(cluster.kubeconfig_path());
    config_.qps = 0;  // the test measures nothing; let it run at full speed
    transport_ = std::make_unique<HttpTransport>(config_);
    namespaces_ = std::make_unique<ResourceClient>(*transport_, resources::namespaces(), metrics_);
    config_maps_ =
        std::make_unique<ResourceClient>(*transport_, resources::config_maps(), metrics_);
    ns_ = "kube-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    namespaces_->create(
        "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns_}}}});
  }

  static json config_map(const std::string& name, json data = json::object(),
                         json labels = json::object()) {
    return {{"apiVersion", "v1"},
            {"kind", "ConfigMap"},
            {"metadata", {{"name", name}, {"labels", labels}}},
            {"data", data}};
  }

  static inline int counter_ = 0;
  prometheus::Registry registry_;
  ClientMetrics metrics_{registry_};
  Config config_;
  std::unique_ptr<HttpTransport> transport_;
  std::unique_ptr<ResourceClient> namespaces_;
  std::unique_ptr<ResourceClient> config_maps_;
  std::string ns_;
};

TEST_F(KubeClientIntegrationTest, CreateGetUpdateDeleteWithTypedErrors) {
  const auto created = config_maps_->create(ns_, config_map("settings", {{"mode", "a"}}));
  EXPECT_EQ(created["metadata"]["namespace"], ns_);
  EXPECT_FALSE(created["metadata"]["uid"].get<std::string>().empty());

  try {
    config_maps_->create(ns_, config_map("settings"));
    FAIL() << "a second create succeeded";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kAlreadyExists);
    EXPECT_EQ(e.code(), 409);
    EXPECT_TRUE(e.body_is_status());
    EXPECT_NE(e.status_message().find("settings"), std::string::npos);
    EXPECT_EQ(e.details()["name"], "settings");
  }

  auto fetched = config_maps_->get(ns_, "settings");
  fetched["data"]["mode"] = "b";
  const auto updated = config_maps_->update(ns_, fetched);
  EXPECT_EQ(updated["data"]["mode"], "b");

  // The same stale copy again: optimistic concurrency says Conflict.
  fetched["data"]["mode"] = "c";
  try {
    config_maps_->update(ns_, fetched);
    FAIL() << "a stale update succeeded";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConflict);
    EXPECT_TRUE(is_conflict(e));
  }

  try {
    config_maps_->create(ns_, config_map("Not_A_Valid_Name"));
    FAIL() << "an invalid name was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    EXPECT_EQ(e.code(), 422);
    EXPECT_TRUE(e.details().contains("causes"));
  }

  // A delete precondition on the wrong uid is refused; on the right one it deletes.
  DeleteOptions wrong_uid;
  wrong_uid.precondition_uid = "00000000-0000-0000-0000-000000000000";
  try {
    config_maps_->remove(ns_, "settings", wrong_uid);
    FAIL() << "delete ignored its precondition";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConflict);
  }
  DeleteOptions right_uid;
  right_uid.precondition_uid = created["metadata"]["uid"].get<std::string>();
  right_uid.propagation_policy = "Background";
  config_maps_->remove(ns_, "settings", right_uid);
  try {
    config_maps_->get(ns_, "settings");
    FAIL() << "deleted object still there";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_EQ(e.reason(), "NotFound");
  }
}

TEST_F(KubeClientIntegrationTest, MergePatchAndJsonPatch) {
  config_maps_->create(ns_, config_map("p", {{"a", "1"}, {"b", "2"}}));
  auto merged = config_maps_->merge_patch(ns_, "p", {{"data", {{"a", "10"}, {"b", nullptr}}}});
  EXPECT_EQ(merged["data"], (json{{"a", "10"}}));
  auto patched = config_maps_->json_patch(
      ns_, "p",
      json::array({{{"op", "add"}, {"path", "/data/c"}, {"value", "3"}},
                   {{"op", "test"}, {"path", "/data/a"}, {"value", "10"}}}));
  EXPECT_EQ(patched["data"]["c"], "3");
  // A failing "test" operation is the server's 422, with its message kept.
  try {
    config_maps_->json_patch(
        ns_, "p", json::array({{{"op", "test"}, {"path", "/data/a"}, {"value", "nope"}}}));
    FAIL() << "a failing test op passed";
  } catch (const ApiError& e) {
    EXPECT_TRUE(e.kind() == ErrorKind::kInvalid || e.kind() == ErrorKind::kUnknown) << e.what();
    EXPECT_FALSE(e.status_message().empty());
  }
}

TEST_F(KubeClientIntegrationTest, ServerSideApplyReportsConflictsBetweenManagersUnlessForced) {
  ApplyOptions operator_manager{"perimeter-operator", false};
  ApplyOptions human{"kubectl-edit", false};
  config_maps_->apply(ns_, config_map("owned", {{"replicas", "1"}}), operator_manager);
  // Re-applying the same intent is a no-op, not a conflict.
  config_maps_->apply(ns_, config_map("owned", {{"replicas", "1"}}), operator_manager);
  try {
    config_maps_->apply(ns_, config_map("owned", {{"replicas", "5"}}), human);
    FAIL() << "a conflicting apply succeeded";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConflict);
    ASSERT_TRUE(e.details().contains("causes")) << e.raw_body();
    EXPECT_NE(e.details()["causes"].dump().find("perimeter-operator"), std::string::npos);
  }
  human.force = true;
  const auto forced = config_maps_->apply(ns_, config_map("owned", {{"replicas", "5"}}), human);
  EXPECT_EQ(forced["data"]["replicas"], "5");
  bool human_owns = false;
  for (const auto& entry : forced["metadata"]["managedFields"]) {
    if (entry["manager"] == "kubectl-edit" &&
        entry["fieldsV1"].dump().find("replicas") != std::string::npos)
      human_owns = true;
  }
  EXPECT_TRUE(human_owns);
}

TEST_F(KubeClientIntegrationTest, StatusSubresourceUpdatesOnlyStatus) {
  ResourceClient service_accounts(*transport_, resources::service_accounts(), metrics_);
  ResourceClient pods(*transport_, resources::pods(), metrics_);
  // No controller manager here: the ServiceAccount admission plugin needs the SA to exist.
  service_accounts.create(
      ns_, {{"apiVersion", "v1"}, {"kind", "ServiceAccount"}, {"metadata", {{"name", "default"}}}});
  const json pod = {{"apiVersion", "v1"},
                    {"kind", "Pod"},
                    {"metadata", {{"name", "runner"}}},
                    {"spec",
                     {{"automountServiceAccountToken", false},
                      {"containers", json::array({{{"name", "c"}, {"image", "runner:dev"}}})}}}};
  pods.create(ns_, pod);
  const json condition = {{"type", "perimeter.dev/Claimed"},
                          {"status", "True"},
                          {"reason", "WorkItemAcked"},
                          {"lastTransitionTime", "2026-01-01T00:00:00Z"}};
  const auto patched = pods.merge_patch_status(
      ns_, "runner", {{"status", {{"conditions", json::array({condition})}}}});
  EXPECT_EQ(patched["status"]["conditions"][0]["reason"], "WorkItemAcked");
  // Through /status, spec changes are ignored.
  auto current = pods.get_status(ns_, "runner");
  current["spec"]["activeDeadlineSeconds"] = 30;
  current["status"]["conditions"][0]["reason"] = "Rewritten";
  const auto updated = pods.update_status(ns_, current);
  EXPECT_EQ(updated["status"]["conditions"][0]["reason"], "Rewritten");
  EXPECT_FALSE(updated["spec"].contains("activeDeadlineSeconds"));
  // Server-side apply of status with its own field manager.
  json apply_condition = condition;
  apply_condition["reason"] = "Applied";
  const auto applied =
      pods.apply_status(ns_,
                        {{"apiVersion", "v1"},
                         {"kind", "Pod"},
                         {"metadata", {{"name", "runner"}}},
                         {"status", {{"conditions", json::array({apply_condition})}}}},
                        ApplyOptions{"perimeter-status", true});
  EXPECT_EQ(applied["status"]["conditions"][0]["reason"], "Applied");
}

TEST_F(KubeClientIntegrationTest, LabelAndFieldSelectorsAndPaging) {
  for (int i = 0; i < 25; ++i) {
    config_maps_->create(ns_, config_map("cm-" + std::to_string(i), json::object(),
                                         {{"parity", i % 2 == 0 ? "even" : "odd"}, {"app", "it"}}));
  }
  ListOptions even;
  even.label_selector = "app=it,parity=even";
  EXPECT_EQ(config_maps_->list_all(ns_, even)["items"].size(), 13u);
  ListOptions not_even;
  not_even.label_selector = "app=it,parity!=even";
  EXPECT_EQ(config_maps_->list_all(ns_, not_even)["items"].size(), 12u);
  ListOptions by_name;
  by_name.field_selector = "metadata.name=cm-7";
  const auto one = config_maps_->list(ns_, by_name);
  ASSERT_EQ(one["items"].size(), 1u);
  EXPECT_EQ(one["items"][0]["metadata"]["name"], "cm-7");

  ListOptions paged;
  paged.label_selector = "app=it";
  paged.limit = 10;
  const auto first = config_maps_->list(ns_, paged);
  EXPECT_EQ(first["items"].size(), 10u);
  ASSERT_FALSE(first["metadata"].value("continue", "").empty());
  int pages = 1;
  std::set<std::string> names;
  for (const auto& item : first["items"]) names.insert(item["metadata"]["name"]);
  std::string next = first["metadata"]["continue"];
  while (!next.empty()) {
    paged.continue_token = next;
    const auto page = config_maps_->list(ns_, paged);
    for (const auto& item : page["items"]) names.insert(item["metadata"]["name"]);
    next = page["metadata"].value("continue", "");
    ++pages;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(names.size(), 25u);
  paged.continue_token.clear();
  EXPECT_EQ(config_maps_->list_all(ns_, paged)["items"].size(), 25u);
}

TEST_F(KubeClientIntegrationTest, WatchSeesChangesFromTheListsVersion) {
  const auto list = config_maps_->list(ns_);
  WatchOptions options;
  options.resource_version = list["metadata"]["resourceVersion"];
  options.timeout_seconds = 30;
  auto watch = config_maps_->watch(ns_, options);
  config_maps_->create(ns_, config_map("w", {{"v", "1"}}));
  config_maps_->merge_patch(ns_, "w", {{"data", {{"v", "2"}}}});
  config_maps_->remove(ns_, "w");
  std::vector<std::string> seen;
  while (seen.size() < 3) {
    auto event = watch->next();
    ASSERT_TRUE(event) << "watch ended early";
    if (event->type == WatchEventType::kBookmark) continue;
    seen.push_back(std::string(to_string(event->type)) + " " +
                   event->object["data"].value("v", ""));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED 1", "MODIFIED 2", "DELETED 2"}));
  watch->cancel();
}

TEST_F(KubeClientIntegrationTest, UnauthenticatedRequestsAreToldApartFromForbiddenOnes) {
  Config anonymous = config_;
  anonymous.client_cert_pem.clear();
  anonymous.client_key_pem.clear();
  HttpTransport anonymous_transport(anonymous);
  ResourceClient secrets(anonymous_transport, resources::secrets(), metrics_);
  try {
    secrets.list(ns_);
    FAIL() << "an anonymous client listed secrets";
  } catch (const ApiError& e) {
    // Anonymous auth on: 403 for system:anonymous; off: 401. Either way the Status is kept.
    EXPECT_TRUE(e.kind() == ErrorKind::kForbidden || e.kind() == ErrorKind::kUnauthorized)
        << e.what();
    EXPECT_TRUE(e.body_is_status()) << e.raw_body();
  }
}

TEST_F(KubeClientIntegrationTest, AnUntrustedServerCertificateIsATransportError) {
  Config wrong_ca = config_;
  wrong_ca.ca_pem.clear();  // the system trust store does not know the test CA
  HttpTransport transport(wrong_ca);
  ResourceClient client(transport, resources::config_maps(), metrics_);
  EXPECT_THROW(client.list(ns_), TransportError);
}

TEST_F(KubeClientIntegrationTest, ConnectionRefusedIsATransportError) {
  Config nowhere = config_;
  nowhere.server = "https://127.0.0.1:1";
  nowhere.request_timeout = std::chrono::seconds(5);
  HttpTransport transport(nowhere);
  ResourceClient client(transport, resources::config_maps(), metrics_);
  EXPECT_THROW(client.list(ns_), TransportError);
}

TEST_F(KubeClientIntegrationTest, ConcurrentRequestsShareTheConnectionPool) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        try {
          config_maps_->create(ns_, config_map("c-" + std::to_string(t) + "-" + std::to_string(i)));
        } catch (const std::exception&) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(config_maps_->list_all(ns_)["items"].size(), 100u);
}

}  // namespace
}  // namespace perimeter::kube
