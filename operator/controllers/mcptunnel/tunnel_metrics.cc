#include "controllers/mcptunnel/tunnel_metrics.h"

#include <chrono>

#include "core/time_format.h"

namespace perimeter::mcptunnel {
namespace {

using nlohmann::json;

std::optional<double> unix_seconds(const json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return std::nullopt;
  const auto at = parse_rfc3339(it->get<std::string>());
  if (!at) return std::nullopt;
  return std::chrono::duration<double>(at->time_since_epoch()).count();
}

}  // namespace

TunnelStatusFigures tunnel_status_figures(const json& status) {
  TunnelStatusFigures figures;
  if (!status.is_object()) return figures;
  if (const auto it = status.find("connectedReplicas");
      it != status.end() && it->is_number_integer()) {
    figures.connected_replicas = it->get<std::int64_t>();
  }
  for (const auto& condition : status.value("conditions", json::array())) {
    if (!condition.is_object()) continue;
    const std::string type = condition.value("type", "");
    if (!type.empty()) figures.conditions[type] = condition.value("status", "") == "True";
  }
  const json certificate = status.value("certificate", json::object());
  figures.server_not_after = unix_seconds(certificate, "notAfter");
  figures.server_renew_at = unix_seconds(certificate, "renewAt");
  figures.ca_not_after = unix_seconds(certificate, "caNotAfter");
  return figures;
}

PrometheusTunnelMetrics::PrometheusTunnelMetrics(prometheus::Registry& registry)
    : actions_(prometheus::BuildCounter()
                   .Name("perimeter_mcptunnel_actions_total")
                   .Help("What the McpTunnel controller did: tunnels created or adopted, tokens "
                         "rotated, CAs registered or archived, certificates issued")
                   .Register(registry)),
      failures_(prometheus::BuildCounter()
                    .Name("perimeter_mcptunnel_failures_total")
                    .Help("McpTunnel reconcile steps that failed, by step")
                    .Register(registry)),
      connected_replicas_(prometheus::BuildGauge()
                              .Name("perimeter_mcptunnel_connected_replicas")
                              .Help("Gateway replicas of the McpTunnel that hold an edge "
                                    "connection (status.connectedReplicas)")
                              .Register(registry)),
      condition_(prometheus::BuildGauge()
                     .Name("perimeter_mcptunnel_condition")
                     .Help("1 when the McpTunnel's condition is True, 0 when it is False or "
                           "Unknown")
                     .Register(registry)),
      certificate_not_after_(
          prometheus::BuildGauge()
              .Name("perimeter_mcptunnel_certificate_not_after_timestamp_seconds")
              .Help("Unix time the McpTunnel's server certificate or CA expires")
              .Register(registry)),
      certificate_renew_at_(prometheus::BuildGauge()
                                .Name("perimeter_mcptunnel_certificate_renew_at_timestamp_seconds")
                                .Help("Unix time from which the operator renews the McpTunnel's "
                                      "server certificate")
                                .Register(registry)) {}

void PrometheusTunnelMetrics::on_action(const std::string& tunnel, const std::string& kind) {
  actions_.Add({{"mcptunnel", tunnel}, {"action", kind}}).Increment();
}

void PrometheusTunnelMetrics::on_failure(const std::string& tunnel, const std::string& step) {
  failures_.Add({{"mcptunnel", tunnel}, {"step", step}}).Increment();
}

void PrometheusTunnelMetrics::set_or_remove(prometheus::Family<prometheus::Gauge>& family,
                                            const prometheus::Labels& labels,
                                            const std::optional<double>& value) {
  if (value) {
    family.Add(labels).Set(*value);
  } else if (family.Has(labels)) {
    family.Remove(&family.Add(labels));
  }
}

void PrometheusTunnelMetrics::on_status(const std::string& tunnel,
                                        const TunnelStatusFigures& figures) {
  std::lock_guard lock(mutex_);
  set_or_remove(connected_replicas_, {{"mcptunnel", tunnel}},
                figures.connected_replicas
                    ? std::optional<double>(static_cast<double>(*figures.connected_replicas))
                    : std::nullopt);
  auto& known = conditions_[tunnel];
  for (const auto& type : known) {
    if (!figures.conditions.contains(type)) {
      set_or_remove(condition_, {{"mcptunnel", tunnel}, {"condition", type}}, std::nullopt);
    }
  }
  known.clear();
  for (const auto& [type, is_true] : figures.conditions) {
    condition_.Add({{"mcptunnel", tunnel}, {"condition", type}}).Set(is_true ? 1 : 0);
    known.insert(type);
  }
  set_or_remove(certificate_not_after_, {{"mcptunnel", tunnel}, {"certificate", "server"}},
                figures.server_not_after);
  set_or_remove(certificate_not_after_, {{"mcptunnel", tunnel}, {"certificate", "ca"}},
                figures.ca_not_after);
  set_or_remove(certificate_renew_at_, {{"mcptunnel", tunnel}, {"certificate", "server"}},
                figures.server_renew_at);
}

void PrometheusTunnelMetrics::on_deleted(const std::string& tunnel) {
  // The counters stay: a tunnel_archived counted while the McpTunnel went would otherwise vanish
  // before a scrape saw it, and a counter that no longer moves fires no alert.
  on_status(tunnel, TunnelStatusFigures{});
  std::lock_guard lock(mutex_);
  conditions_.erase(tunnel);
}

}  // namespace perimeter::mcptunnel
