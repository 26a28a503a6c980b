#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>

namespace perimeter::testing {

// The official SDK's agent toolset behind tests/differential/driver.mjs, one JSON line per call.
// Owns the Node process: the destructor closes its stdin and reaps it.
class NodeDriver {
 public:
  // Finds the install made by hack/setup/runner-differential.sh; throws with a message saying to
  // run `make setup` when it is missing.
  static std::string find_install(const std::string& source_dir);

  NodeDriver(const std::string& source_dir, const std::string& install_dir);
  ~NodeDriver();
  NodeDriver(const NodeDriver&) = delete;
  NodeDriver& operator=(const NodeDriver&) = delete;

  // {"content": [...], "is_error": bool} as the SDK's session runner would post it.
  nlohmann::json call(const std::string& workdir, const std::string& tool,
                      const nlohmann::json& input);
  // As call(), plus "elapsed_ms": the time the SDK's tool took, measured inside Node.
  nlohmann::json timed_call(const std::string& workdir, const std::string& tool,
                            const nlohmann::json& input);
  // Ends the workdir's toolset (its bash session).
  void close_workdir(const std::string& workdir);
  pid_t pid() const { return pid_; }

 private:
  nlohmann::json roundtrip(const nlohmann::json& request);

  pid_t pid_ = -1;
  int to_node_ = -1;
  int from_node_ = -1;
  std::string pending_;
};

}  // namespace perimeter::testing
