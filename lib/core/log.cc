#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>

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
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now - secs).count();
  const std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
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
