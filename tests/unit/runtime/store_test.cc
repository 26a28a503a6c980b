#include "runtime/store.h"

#include <gtest/gtest.h>

namespace perimeter::runtime {
namespace {

using nlohmann::json;

ObjectPtr pod(const std::string& ns, const std::string& name, const std::string& rv,
              json labels = json::object(), const std::string& owner_uid = "") {
  json object = {
      {"metadata",
       {{"namespace", ns}, {"name", name}, {"resourceVersion", rv}, {"labels", labels}}}};
  if (!owner_uid.empty())
    object["metadata"]["ownerReferences"] = json::array({{{"uid", owner_uid}, {"kind", "X"}}});
  return std::make_shared<const json>(std::move(object));
}

std::vector<std::string> names(const std::vector<ObjectPtr>& objects) {
  std::vector<std::string> out;
  for (const auto& object : objects) out.push_back((*object)["metadata"]["name"]);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(StoreTest, KeysAreNamespaceSlashNameOrNameAlone) {
  EXPECT_EQ(Store::key_of(*pod("a", "p", "1")), "a/p");
  EXPECT_EQ(Store::key_of(json{{"metadata", {{"name", "node-1"}}}}), "node-1");
}

TEST(StoreTest, BuiltInIndexesFollowUpdatesAndDeletes) {
  Store store;
  store.upsert(pod("a", "p1", "1", {{"app", "web"}}, "owner-1"));
  store.upsert(pod("a", "p2", "1", {{"app", "db"}}, "owner-1"));
  store.upsert(pod("b", "p3", "1", {{"app", "web"}}));
  EXPECT_EQ(names(store.by_index(Store::kNamespaceIndex, "a")),
            (std::vector<std::string>{"p1", "p2"}));
  EXPECT_EQ(names(store.by_index(Store::kLabelIndex, "app=web")),
            (std::vector<std::string>{"p1", "p3"}));
  EXPECT_EQ(names(store.by_index(Store::kOwnerUidIndex, "owner-1")),
            (std::vector<std::string>{"p1", "p2"}));

  const auto old = store.upsert(pod("a", "p1", "2", {{"app", "db"}}));  // relabelled, orphaned
  ASSERT_NE(old, nullptr);
  EXPECT_EQ((*old)["metadata"]["resourceVersion"], "1");
  EXPECT_EQ(names(store.by_index(Store::kLabelIndex, "app=web")), (std::vector<std::string>{"p3"}));
  EXPECT_EQ(names(store.by_index(Store::kOwnerUidIndex, "owner-1")),
            (std::vector<std::string>{"p2"}));

  store.remove("a/p2");
  EXPECT_TRUE(store.by_index(Store::kOwnerUidIndex, "owner-1").empty());
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(store.get("a/p2"), nullptr);
}

TEST(StoreTest, CustomIndexesCoverObjectsAlreadyThere) {
  Store store;
  store.upsert(pod("a", "p1", "1", {{"perimeter.dev/session", "s1"}}));
  store.add_index("session", [](const json& object) -> std::vector<std::string> {
    const auto& labels = object["metadata"]["labels"];
    if (labels.contains("perimeter.dev/session")) return {labels["perimeter.dev/session"]};
    return {};
  });
  store.upsert(pod("a", "p2", "1", {{"perimeter.dev/session", "s1"}}));
  EXPECT_EQ(names(store.by_index("session", "s1")), (std::vector<std::string>{"p1", "p2"}));
  EXPECT_TRUE(store.by_index("no-such-index", "x").empty());
}

TEST(StoreTest, ReplaceSwapsEverythingAndReportsWhatChanged) {
  Store store;
  store.upsert(pod("a", "kept", "1"));
  store.upsert(pod("a", "changed", "1", {{"v", "old"}}));
  store.upsert(pod("a", "gone", "1"));
  const auto changes = store.replace(
      {pod("a", "kept", "1"), pod("a", "changed", "5", {{"v", "new"}}), pod("a", "new", "6")});
  int added = 0, updated = 0, deleted = 0;
  for (const auto& change : changes) {
    if (!change.old_object) {
      ++added;
      EXPECT_EQ((*change.new_object)["metadata"]["name"], "new");
    } else if (!change.new_object) {
      ++deleted;
      EXPECT_EQ((*change.old_object)["metadata"]["name"], "gone");
    } else {
      ++updated;
      EXPECT_EQ((*change.new_object)["metadata"]["name"], "changed");
    }
  }
  EXPECT_EQ(added, 1);
  EXPECT_EQ(updated, 1);
  EXPECT_EQ(deleted, 1);
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(names(store.by_index(Store::kLabelIndex, "v=new")),
            (std::vector<std::string>{"changed"}));
  EXPECT_TRUE(store.by_index(Store::kLabelIndex, "v=old").empty());
}

TEST(StoreTest, AScopedReplaceTouchesOnlyItsNamespaceSoInformersCanShareAStore) {
  Store store;
  store.upsert(pod("team-a", "a1", "1", {{"v", "a"}}));
  store.upsert(pod("team-a", "a2", "1"));
  store.upsert(pod("team-b", "b1", "1", {{"v", "b"}}));
  // team-a's informer relists: a2 is gone, a3 is new; team-b's objects are not its business.
  const auto changes =
      store.replace({pod("team-a", "a1", "1", {{"v", "a"}}), pod("team-a", "a3", "2")}, "team-a");
  ASSERT_EQ(changes.size(), 2u);
  for (const auto& change : changes) {
    const auto& object = change.old_object ? *change.old_object : *change.new_object;
    EXPECT_EQ(object["metadata"]["namespace"], "team-a");
  }
  EXPECT_EQ(store.size(), 3u);
  EXPECT_NE(store.get("team-b/b1"), nullptr);
  EXPECT_EQ(store.get("team-a/a2"), nullptr);
  EXPECT_EQ(names(store.by_index(Store::kLabelIndex, "v=b")), (std::vector<std::string>{"b1"}));
  EXPECT_EQ(names(store.by_index(Store::kNamespaceIndex, "team-a")),
            (std::vector<std::string>{"a1", "a3"}));
}

}  // namespace
}  // namespace perimeter::runtime
