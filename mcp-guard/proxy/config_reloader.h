#pragma once

#include <string>

#include "core/log.h"
#include "proxy/guard_config.h"
#include "proxy/guard_metrics.h"
#include "proxy/guard_server.h"

namespace perimeter::mcpguard {

// Reads the config file again (on SIGHUP, and every 2 s to follow a ConfigMap's symlink swap)
// and applies what may change while the process runs: policy, audit, limits, rate limits. A file
// that does not parse, or that changes the listeners, is refused and the old config stays.
class ConfigReloader {
 public:
  ConfigReloader(std::string path, GuardConfig current, std::string current_text,
                 GuardServer& server, GuardMetrics& metrics, Logger logger);

  // `forced` (SIGHUP): reloads even when the content did not change. Otherwise only a content
  // different from the last one seen is looked at, so a refused file is counted once.
  void check(bool forced);

 private:
  std::string path_;
  GuardConfig current_;
  std::string last_seen_text_;
  GuardServer& server_;
  GuardMetrics& metrics_;
  Logger logger_;
};

// The whole file, or nullopt when it cannot be read.
std::optional<std::string> read_config_file(const std::string& path);

}  // namespace perimeter::mcpguard
