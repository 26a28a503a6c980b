#include "kube/resource.h"

#include <array>
#include <cctype>

namespace perimeter::kube {

std::string ResourceType::path(const std::string& ns, const std::string& name,
                               const std::string& subresource) const {
  std::string out = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (namespaced && !ns.empty()) out += "/namespaces/" + ns;
  out += "/" + resource;
  if (!name.empty()) out += "/" + name;
  if (!subresource.empty()) out += "/" + subresource;
  return out;
}

std::string ResourceType::describe() const {
  return resource + "." + version + (group.empty() ? "" : "." + group);
}

namespace resources {
ResourceType pods() {
  return {"", "v1", "pods", "Pod", true};
}
ResourceType secrets() {
  return {"", "v1", "secrets", "Secret", true};
}
ResourceType config_maps() {
  return {"", "v1", "configmaps", "ConfigMap", true};
}
ResourceType services() {
  return {"", "v1", "services", "Service", true};
}
ResourceType events() {
  return {"", "v1", "events", "Event", true};
}
ResourceType namespaces() {
  return {"", "v1", "namespaces", "Namespace", false};
}
ResourceType nodes() {
  return {"", "v1", "nodes", "Node", false};
}
ResourceType service_accounts() {
  return {"", "v1", "serviceaccounts", "ServiceAccount", true};
}
ResourceType leases() {
  return {"coordination.k8s.io", "v1", "leases", "Lease", true};
}
ResourceType deployments() {
  return {"apps", "v1", "deployments", "Deployment", true};
}
ResourceType network_policies() {
  return {"networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true};
}
ResourceType cilium_network_policies() {
  return {"cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", true};
}
ResourceType pod_disruption_budgets() {
  return {"policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true};
}
ResourceType custom_resource_definitions() {
  return {"apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
          false};
}
ResourceType persistent_volume_claims() {
  return {"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true};
}
ResourceType persistent_volumes() {
  return {"", "v1", "persistentvolumes", "PersistentVolume", false};
}
ResourceType storage_classes() {
  return {"storage.k8s.io", "v1", "storageclasses", "StorageClass", false};
}
std::optional<ResourceType> by_plural(const std::string& plural) {
  const std::array all = {pods(),
                          secrets(),
                          config_maps(),
                          services(),
                          events(),
                          namespaces(),
                          nodes(),
                          service_accounts(),
                          leases(),
                          deployments(),
                          network_policies(),
                          pod_disruption_budgets(),
                          custom_resource_definitions(),
                          persistent_volume_claims(),
                          persistent_volumes(),
                          storage_classes()};
  for (const auto& type : all) {
    if (type.resource == plural) return type;
  }
  return std::nullopt;
}
}  // namespace resources

ObjectKey ObjectKey::parse(const std::string& key) {
  const auto slash = key.find('/');
  if (slash == std::string::npos) return {"", key};
  return {key.substr(0, slash), key.substr(slash + 1)};
}

std::string url_encode(const std::string& value) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    }
  }
  return out;
}

}  // namespace perimeter::kube
