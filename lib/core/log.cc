#include "core/log.h"

#include <chrono>
#include <cstdio>

#include "core/time_format.h"

namespace perimeter {
namespace {

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

std::string rfc3339_now() {
  return format_rfc3339_millis(std::chrono::system_clock::now());
}

}  // namespace

bool parse_log_level(std::string_view text, LogLevel* out) {
  if (text == "debug")
    *out = LogLevel::kDebug;
  else if (text == "info")
    *out = LogLevel::kInfo;
  else if (text == "warn" || text == "warning")
    *out = LogLevel::kWarn;
  else if (text == "error")
    *out = LogLevel::kError;
  else
    return false;
  return true;
}

void StderrSink::write(std::string_view line) {
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

std::shared_ptr<StderrSink> StderrSink::instance() {
  static auto sink = std::make_shared<StderrSink>();
  return sink;
}

Logger::Logger(std::string component, std::shared_ptr<LogSink> sink, LogLevel min_level)
    : component_(std::move(component)), sink_(std::move(sink)), min_level_(min_level) {}

void Logger::log(LogLevel level, std::string_view msg, const nlohmann::json& fields) const {
  if (!enabled(level)) return;
  nlohmann::ordered_json line;
  line["ts"] = rfc3339_now();
  line["level"] = level_name(level);
  line["component"] = component_;
  line["msg"] = msg;
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) line[key] = value;
  } else if (!fields.is_null()) {
    line["detail"] = fields;
  }
  // Replace invalid UTF-8 rather than throwing: a log call must never take the process down.
  sink_->write(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Logger Logger::child(std::string_view sub_component) const {
  return Logger(component_ + "." + std::string(sub_component), sink_, min_level_);
}

}  // namespace perimeter
