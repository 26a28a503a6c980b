#include "kube_api.h"

#include <stdexcept>

namespace perimeter::testing {

void KubeApi::create_namespace(const std::string& name, const nlohmann::json& labels) {
  auto response = post("/api/v1/namespaces", {{"apiVersion", "v1"},
                                              {"kind", "Namespace"},
                                              {"metadata", {{"name", name}, {"labels", labels}}}});
  if (response.status != 201) {
    throw std::runtime_error("creating namespace " + name + ": HTTP " +
                             std::to_string(response.status) + ": " + response.body);
  }
  const std::string sa = "/api/v1/namespaces/" + name + "/serviceaccounts/default";
  if (!eventually([&] { return get(sa).status == 200; })) {
    throw std::runtime_error("namespace " + name + " never got its default ServiceAccount");
  }
}

bool eventually(const std::function<bool()>& condition, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::milliseconds(20);
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
}

}  // namespace perimeter::testing
