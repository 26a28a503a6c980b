#pragma once

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace perimeter {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn", "error"; anything else is an error for the caller to report.
bool parse_log_level(std::string_view text, LogLevel* out);

// Where finished log lines go. One write call per line; implementations must be thread-safe.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void write(std::string_view line) = 0;
};

// Writes lines to stderr under a lock so lines from different threads never interleave.
class StderrSink final : public LogSink {
 public:
  void write(std::string_view line) override;
  static std::shared_ptr<StderrSink> instance();

 private:
  std::mutex mutex_;
};

// Structured logging as JSON lines: {"ts","level","component","msg",...fields}.
// Never pass a credential as a field: lines are meant to be shipped to log stores as they are.
class Logger {
 public:
  explicit Logger(std::string component, std::shared_ptr<LogSink> sink = StderrSink::instance(),
                  LogLevel min_level = LogLevel::kInfo);

  void log(LogLevel level, std::string_view msg, const nlohmann::json& fields = nullptr) const;
  void debug(std::string_view msg, const nlohmann::json& fields = nullptr) const {
    log(LogLevel::kDebug, msg, fields);
  }
  void info(std::string_view msg, const nlohmann::json& fields = nullptr) const {
    log(LogLevel::kInfo, msg, fields);
  }
  void warn(std::string_view msg, const nlohmann::json& fields = nullptr) const {
    log(LogLevel::kWarn, msg, fields);
  }
  void error(std::string_view msg, const nlohmann::json& fields = nullptr) const {
    log(LogLevel::kError, msg, fields);
  }

  bool enabled(LogLevel level) const { return level >= min_level_; }
  // A logger for a sub-component sharing this one's sink and level.
  Logger child(std::string_view sub_component) const;
  const std::string& component() const { return component_; }

 private:
  std::string component_;
  std::shared_ptr<LogSink> sink_;
  LogLevel min_level_;
};

}  // namespace perimeter
