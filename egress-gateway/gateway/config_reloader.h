#pragma once

#include <memory>
#include <string>

#include "core/log.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_metrics.h"
#include "gateway/gateway_server.h"

namespace perimeter::egressgateway {

// Reads the config file and its key file again (on SIGHUP, and every 2 s to follow a ConfigMap's
// or Secret's symlink swap) and hands a new snapshot to the server, all or nothing: a file that
// does not parse, a key too short, or a changed listener is refused and the old config stays.
// (The MCP guard has the same loop for its own config type: mcp-guard/proxy/config_reloader.h.)
class ConfigReloader {
 public:
  ConfigReloader(std::string path, const std::string& current_text,
                 std::shared_ptr<const GatewaySnapshot> current, bool testing_allowed,
                 GatewayServer& server, GatewayMetrics& metrics, Logger logger);

  // `forced` (SIGHUP): reloads even when nothing changed. Otherwise only a config or key that
  // differs from the last one seen is looked at, so a refused file is counted once.
  void check(bool forced);

 private:
  std::string path_;
  std::string last_seen_;  // config text and key bytes
  std::shared_ptr<const GatewaySnapshot> current_;
  bool testing_allowed_;
  GatewayServer& server_;
  GatewayMetrics& metrics_;
  Logger logger_;
};

}  // namespace perimeter::egressgateway
