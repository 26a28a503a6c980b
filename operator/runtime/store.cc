#include "runtime/store.h"

namespace perimeter::runtime {

using nlohmann::json;

namespace {

const json& metadata_of(const json& object) {
  static const json empty = json::object();
  if (object.is_object() && object.contains("metadata") && object["metadata"].is_object())
    return object["metadata"];
  return empty;
}

std::vector<std::string> namespace_values(const json& object) {
  const auto& meta = metadata_of(object);
  if (meta.contains("namespace") && meta["namespace"].is_string()) return {meta["namespace"]};
  return {};
}

std::vector<std::string> label_values(const json& object) {
  std::vector<std::string> out;
  const auto& meta = metadata_of(object);
  if (meta.contains("labels") && meta["labels"].is_object()) {
    for (const auto& [key, value] : meta["labels"].items()) {
      if (value.is_string()) out.push_back(key + "=" + value.get<std::string>());
    }
  }
  return out;
}

std::vector<std::string> owner_uid_values(const json& object) {
  std::vector<std::string> out;
  const auto& meta = metadata_of(object);
  if (meta.contains("ownerReferences") && meta["ownerReferences"].is_array()) {
    for (const auto& owner : meta["ownerReferences"]) {
      if (owner.contains("uid") && owner["uid"].is_string()) out.push_back(owner["uid"]);
    }
  }
  return out;
}

}  // namespace

Store::Store() {
  index_funcs_[kNamespaceIndex] = namespace_values;
  index_funcs_[kLabelIndex] = label_values;
  index_funcs_[kOwnerUidIndex] = owner_uid_values;
}

std::string Store::key_of(const json& object) {
  const auto& meta = metadata_of(object);
  std::string name = meta.contains("name") && meta["name"].is_string() ? meta["name"] : "";
  if (meta.contains("namespace") && meta["namespace"].is_string() &&
      !meta["namespace"].get<std::string>().empty())
    return meta["namespace"].get<std::string>() + "/" + name;
  return name;
}

void Store::add_index(const std::string& name, IndexFunc func) {
  std::unique_lock lock(mutex_);
  index_funcs_[name] = std::move(func);
  for (const auto& [key, object] : objects_) {
    for (const auto& value : index_funcs_[name](*object)) indexes_[name][value].insert(key);
  }
}

void Store::index_locked(const std::string& key, const json& object) {
  for (const auto& [name, func] : index_funcs_) {
    for (const auto& value : func(object)) indexes_[name][value].insert(key);
  }
}

void Store::unindex_locked(const std::string& key, const json& object) {
  for (const auto& [name, func] : index_funcs_) {
    auto& index = indexes_[name];
    for (const auto& value : func(object)) {
      auto it = index.find(value);
      if (it == index.end()) continue;
      it->second.erase(key);
      if (it->second.empty()) index.erase(it);
    }
  }
}

ObjectPtr Store::get(const std::string& key) const {
  std::shared_lock lock(mutex_);
  auto it = objects_.find(key);
  return it == objects_.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> Store::list() const {
  std::shared_lock lock(mutex_);
  std::vector<ObjectPtr> out;
  out.reserve(objects_.size());
  for (const auto& [key, object] : objects_) out.push_back(object);
  return out;
}

std::vector<ObjectPtr> Store::by_index(const std::string& index, const std::string& value) const {
  std::shared_lock lock(mutex_);
  std::vector<ObjectPtr> out;
  auto by_name = indexes_.find(index);
  if (by_name == indexes_.end()) return out;
  auto keys = by_name->second.find(value);
  if (keys == by_name->second.end()) return out;
  for (const auto& key : keys->second) out.push_back(objects_.at(key));
  return out;
}

size_t Store::count_by_index(const std::string& index, const std::string& value) const {
  std::shared_lock lock(mutex_);
  auto by_name = indexes_.find(index);
  if (by_name == indexes_.end()) return 0;
  auto keys = by_name->second.find(value);
  return keys == by_name->second.end() ? 0 : keys->second.size();
}

std::vector<std::string> Store::keys() const {
  std::shared_lock lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [key, object] : objects_) out.push_back(key);
  return out;
}

size_t Store::size() const {
  std::shared_lock lock(mutex_);
  return objects_.size();
}

ObjectPtr Store::upsert(ObjectPtr object) {
  const std::string key = key_of(*object);
  std::unique_lock lock(mutex_);
  ObjectPtr old;
  auto it = objects_.find(key);
  if (it != objects_.end()) {
    old = it->second;
    unindex_locked(key, *old);
    it->second = object;
  } else {
    objects_.emplace(key, object);
  }
  index_locked(key, *object);
  return old;
}

ObjectPtr Store::remove(const std::string& key) {
  std::unique_lock lock(mutex_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return nullptr;
  ObjectPtr old = it->second;
  unindex_locked(key, *old);
  objects_.erase(it);
  return old;
}

std::vector<Store::Change> Store::replace(std::vector<ObjectPtr> objects,
                                          const std::string& scope_namespace) {
  const auto in_scope = [&](const json& object) {
    return scope_namespace.empty() || metadata_of(object).value("namespace", "") == scope_namespace;
  };
  std::map<std::string, ObjectPtr> fresh;
  for (auto& object : objects) {
    const std::string key = key_of(*object);
    fresh[key] = std::move(object);
  }
  std::unique_lock lock(mutex_);
  std::vector<Change> changes;
  for (const auto& [key, old] : objects_) {
    if (!in_scope(*old)) {
      fresh.emplace(key, old);  // another informer's namespace: kept as it is
      continue;
    }
    auto it = fresh.find(key);
    if (it == fresh.end()) {
      changes.push_back({old, nullptr});
    } else if (metadata_of(*old).value("resourceVersion", "") !=
               metadata_of(*it->second).value("resourceVersion", "")) {
      changes.push_back({old, it->second});
    }
  }
  for (const auto& [key, object] : fresh) {
    if (objects_.count(key) == 0) changes.push_back({nullptr, object});
  }
  std::map<std::string, std::map<std::string, std::set<std::string>>> fresh_indexes;
  for (const auto& [key, object] : fresh) {
    for (const auto& [name, func] : index_funcs_) {
      for (const auto& value : func(*object)) fresh_indexes[name][value].insert(key);
    }
  }
  objects_.swap(fresh);
  indexes_.swap(fresh_indexes);
  return changes;
}

}  // namespace perimeter::runtime
