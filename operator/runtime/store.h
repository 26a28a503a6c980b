#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

namespace perimeter::runtime {

// Cached objects are immutable and shared: a reader keeps its snapshot even after the informer
// replaces the object.
using ObjectPtr = std::shared_ptr<const nlohmann::json>;

// A thread-safe cache of objects keyed "namespace/name", with secondary indexes. Written only by
// its informer; read by any thread. Built-in indexes: "namespace", "label" ("key=value"),
// "owner_uid" (every ownerReferences[].uid).
class Store {
 public:
  using IndexFunc = std::function<std::vector<std::string>(const nlohmann::json&)>;
  static constexpr const char* kNamespaceIndex = "namespace";
  static constexpr const char* kLabelIndex = "label";
  static constexpr const char* kOwnerUidIndex = "owner_uid";

  Store();

  // Adds a custom index; call before the informer starts. Existing objects are indexed too.
  void add_index(const std::string& name, IndexFunc func);

  ObjectPtr get(const std::string& key) const;
  std::vector<ObjectPtr> list() const;
  std::vector<ObjectPtr> by_index(const std::string& index, const std::string& value) const;
  // How many objects `by_index` would return, without copying them.
  size_t count_by_index(const std::string& index, const std::string& value) const;
  std::vector<std::string> keys() const;
  size_t size() const;

  // The key of an object: "namespace/name", or "name" when it has no namespace.
  static std::string key_of(const nlohmann::json& object);

  // Writer side. upsert/remove return the previous object (null when none).
  ObjectPtr upsert(ObjectPtr object);
  ObjectPtr remove(const std::string& key);
  struct Change {
    ObjectPtr old_object;  // null: added
    ObjectPtr new_object;  // null: deleted
  };
  // Swaps the whole content in one step (after a relist) and returns what changed, so handlers
  // see deletes that happened while the watch was down. With `scope_namespace` set, only the
  // objects of that namespace are replaced: several namespaced informers can share one store.
  std::vector<Change> replace(std::vector<ObjectPtr> objects,
                              const std::string& scope_namespace = "");

 private:
  void index_locked(const std::string& key, const nlohmann::json& object);
  void unindex_locked(const std::string& key, const nlohmann::json& object);

  mutable std::shared_mutex mutex_;
  std::map<std::string, ObjectPtr> objects_;
  std::map<std::string, IndexFunc> index_funcs_;
  // index name -> indexed value -> keys
  std::map<std::string, std::map<std::string, std::set<std::string>>> indexes_;
};

}  // namespace perimeter::runtime
