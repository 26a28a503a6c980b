#pragma once

#include <optional>
#include <string>

namespace perimeter::kube {

// Which REST collection an object lives in. Enough to build every URL the client needs, for
// built-in types and custom resources alike.
struct ResourceType {
  std::string group;  // "" for the core group
  std::string version;
  std::string resource;  // plural, lower case: "pods"
  std::string kind;      // "Pod"; used to check what a watch delivers
  bool namespaced = true;

  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
  // "/api/v1/namespaces/ns/pods[/name[/subresource]]"; ns empty means all namespaces (or a
  // cluster-scoped resource).
  std::string path(const std::string& ns, const std::string& name = "",
                   const std::string& subresource = "") const;
  std::string describe() const;  // "pods.v1" / "leases.v1.coordination.k8s.io" for messages
};

// Well-known resources, so callers do not spell group/version/plural by hand.
namespace resources {
ResourceType pods();
ResourceType secrets();
ResourceType config_maps();
ResourceType services();
ResourceType events();
ResourceType namespaces();
ResourceType nodes();
ResourceType service_accounts();
ResourceType leases();
ResourceType deployments();
ResourceType network_policies();
// Cilium's own policy (cilium.io/v2), used in the operator's Cilium egress mode.
ResourceType cilium_network_policies();
ResourceType pod_disruption_budgets();
ResourceType custom_resource_definitions();
ResourceType persistent_volume_claims();
ResourceType persistent_volumes();
ResourceType storage_classes();
// Looks a plural name up in the table above ("pods", "leases"...); nullopt when unknown.
std::optional<ResourceType> by_plural(const std::string& plural);
}  // namespace resources

// The "namespace/name" key controllers and caches use ("name" for cluster-scoped objects).
struct ObjectKey {
  std::string ns;
  std::string name;
  std::string str() const { return ns.empty() ? name : ns + "/" + name; }
  static ObjectKey parse(const std::string& key);
  bool operator==(const ObjectKey&) const = default;
  auto operator<=>(const ObjectKey&) const = default;
};

// Percent-encodes a query parameter value.
std::string url_encode(const std::string& value);

}  // namespace perimeter::kube
