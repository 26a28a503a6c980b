#include "proxy/config_reloader.h"

#include <fstream>
#include <sstream>

namespace perimeter::mcpguard {

std::optional<std::string> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

ConfigReloader::ConfigReloader(std::string path, GuardConfig current, std::string current_text,
                               GuardServer& server, GuardMetrics& metrics, Logger logger)
    : path_(std::move(path)),
      current_(std::move(current)),
      last_seen_text_(std::move(current_text)),
      server_(server),
      metrics_(metrics),
      logger_(std::move(logger)) {}

void ConfigReloader::check(bool forced) {
  const auto text = read_config_file(path_);
  if (!text) {
    // A ConfigMap swap can leave the path missing for a moment; the next check sees the new one.
    if (forced) {
      metrics_.config_reload(false);
      logger_.error("config reload refused", {{"config", path_}, {"error", "cannot read"}});
    }
    return;
  }
  if (!forced && *text == last_seen_text_) return;
  last_seen_text_ = *text;
  auto parsed = parse_guard_config(*text);
  if (!parsed.config) {
    metrics_.config_reload(false);
    logger_.error("config reload refused", {{"config", path_}, {"error", parsed.error}});
    return;
  }
  if (const auto refusal = reload_refusal(current_, *parsed.config)) {
    metrics_.config_reload(false);
    logger_.error("config reload refused", {{"config", path_}, {"error", *refusal}});
    return;
  }
  try {
    server_.apply(*parsed.config);
  } catch (const std::exception& error) {
    metrics_.config_reload(false);
    logger_.error("config reload refused", {{"config", path_}, {"error", error.what()}});
    return;
  }
  current_ = std::move(*parsed.config);
  metrics_.config_reload(true);
  logger_.info("config reloaded", {{"config", path_}});
}

}  // namespace perimeter::mcpguard
