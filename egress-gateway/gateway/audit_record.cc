#include "gateway/audit_record.h"

#include <nlohmann/json.hpp>

#include "core/time_format.h"

namespace perimeter::egressgateway {

std::string audit_line(const AuditRecord& record) {
  auto text_or_null = [](const std::string& text) {
    return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
  };
  const nlohmann::json line = {
      {"time", format_rfc3339_millis(record.time)},
      {"environment", text_or_null(record.environment)},
      {"session", text_or_null(record.session)},
      {"client", record.client},
      {"host", text_or_null(record.host)},
      {"port", record.port == 0 ? nlohmann::json(nullptr) : nlohmann::json(record.port)},
      {"upstream", text_or_null(record.upstream)},
      {"decision", record.allowed ? "allowed" : "denied"},
      {"reason", record.reason},
      {"bytes_up", record.bytes_up},
      {"bytes_down", record.bytes_down},
      {"duration_ms", record.duration_ms},
  };
  // Replace invalid UTF-8 (a host name is validated, but a session id need not be) instead of
  // throwing.
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace perimeter::egressgateway
