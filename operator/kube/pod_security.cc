#include "kube/pod_security.h"

namespace perimeter::kube {

nlohmann::json restricted_container_security_context() {
  return {{"allowPrivilegeEscalation", false},
          {"readOnlyRootFilesystem", true},
          {"runAsNonRoot", true},
          {"privileged", false},
          {"capabilities", {{"drop", nlohmann::json::array({"ALL"})}}}};
}

}  // namespace perimeter::kube
