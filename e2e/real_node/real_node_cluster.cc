#include "real_node_cluster.h"

#include <cstdlib>
#include <stdexcept>

#include "process/process.h"

namespace perimeter::e2e {

std::string mcp_everything_image_archive() {
  const char* source = std::getenv("PERIMETER_SOURCE_DIR");
  if (source == nullptr || *source == '\0') {
    throw std::runtime_error("PERIMETER_SOURCE_DIR is not set (run through ctest, or set it)");
  }
  const process::ShellResult check = process::run_shell(
      "'" + std::string(source) + "/hack/setup/mcp-everything-image.sh' --check");
  if (check.exit_code != 0) {
    throw std::runtime_error(
        "the server-everything image is not built: run `make setup` (it runs "
        "hack/setup/mcp-everything-image.sh). " +
        check.output);
  }
  return check.last_line();
}

testing::LocalClusterOptions real_node_cluster_options() {
  testing::LocalClusterOptions options;
  options.controller_manager = true;  // default ServiceAccounts, garbage collection, namespaces
  options.scheduler = true;
  options.real_node = true;
  options.images = {testing::runner_image_archive(), testing::guard_image_archive(),
                    mcp_everything_image_archive()};
  return options;
}

}  // namespace perimeter::e2e
