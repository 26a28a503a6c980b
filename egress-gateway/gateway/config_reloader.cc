#include "gateway/config_reloader.h"

namespace perimeter::egressgateway {
namespace {

// What a change is detected on: the config's text and the key file it names.
std::string fingerprint(const std::string& text, const GatewaySnapshot* snapshot) {
  std::string key_file;
  if (const auto parsed = parse_gateway_config(text, true); parsed.config) {
    key_file = parsed.config->credentials_key_file;
  } else if (snapshot != nullptr) {
    key_file = snapshot->config.credentials_key_file;
  }
  return text + '\0' + read_whole_file(key_file).value_or("");
}

}  // namespace

ConfigReloader::ConfigReloader(std::string path, const std::string& current_text,
                               std::shared_ptr<const GatewaySnapshot> current, bool testing_allowed,
                               GatewayServer& server, GatewayMetrics& metrics, Logger logger)
    : path_(std::move(path)),
      last_seen_(fingerprint(current_text, current.get())),
      current_(std::move(current)),
      testing_allowed_(testing_allowed),
      server_(server),
      metrics_(metrics),
      logger_(std::move(logger)) {}

void ConfigReloader::check(bool forced) {
  const auto text = read_whole_file(path_);
  if (!text) {
    // A ConfigMap swap can leave the path missing for a moment; the next check sees the new one.
    if (forced) {
      metrics_.config_reload(false);
      logger_.error("config reload refused", {{"config", path_}, {"error", "cannot read"}});
    }
    return;
  }
  const auto seen = fingerprint(*text, current_.get());
  if (!forced && seen == last_seen_) return;
  last_seen_ = seen;
  auto loaded = load_gateway_snapshot(*text, testing_allowed_);
  std::string refusal = loaded.error;
  if (loaded.snapshot &&
      (loaded.snapshot->config.listen != current_->config.listen ||
       loaded.snapshot->config.metrics_listen != current_->config.metrics_listen)) {
    refusal = "listen and metrics_listen change only with a restart";
  }
  if (!refusal.empty()) {
    metrics_.config_reload(false);
    logger_.error("config reload refused", {{"config", path_}, {"error", refusal}});
    return;
  }
  current_ = loaded.snapshot;
  server_.apply(std::move(loaded.snapshot));
  metrics_.config_reload(true);
  logger_.info("config reloaded",
               {{"config", path_}, {"environments", current_->config.environments.size()}});
}

}  // namespace perimeter::egressgateway
