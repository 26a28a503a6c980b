#include "core/time_format.h"

#include <cstdio>
#include <ctime>
#include <iomanip>
#include <sstream>

namespace perimeter {

std::string format_rfc3339(std::chrono::system_clock::time_point time) {
  const std::time_t t = std::chrono::system_clock::to_time_t(time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string format_rfc3339_millis(std::chrono::system_clock::time_point time) {
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  // Floor division: a time before the epoch keeps its fraction in [0, 1000).
  const auto whole = millis >= 0 ? millis / 1000 : (millis - 999) / 1000;
  const auto seconds = static_cast<std::time_t>(whole);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(millis - whole * 1000));
  return buffer;
}

std::string format_rfc3339_micros(std::chrono::system_clock::time_point time) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  const auto seconds = static_cast<std::time_t>(micros / 1000000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(micros % 1000000));
  return buffer;
}

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& text) {
  // By hand rather than through a stream and std::get_time: the operator reads the timestamps of
  // every cached runner pod on every pass, and a stream per timestamp was a measurable share.
  // "YYYY-MM-DDTHH:MM:SS"; what follows (fraction, zone) is not read: Kubernetes writes UTC.
  if (text.size() < 19 || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':')
    return std::nullopt;
  int parsed[6];
  const size_t starts[6] = {0, 5, 8, 11, 14, 17}, lengths[6] = {4, 2, 2, 2, 2, 2};
  for (int field = 0; field < 6; ++field) {
    int value = 0;
    for (size_t i = starts[field]; i < starts[field] + lengths[field]; ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      value = value * 10 + (text[i] - '0');
    }
    parsed[field] = value;
  }
  const std::chrono::year_month_day date{std::chrono::year(parsed[0]),
                                         std::chrono::month(static_cast<unsigned>(parsed[1])),
                                         std::chrono::day(static_cast<unsigned>(parsed[2]))};
  if (!date.ok() || parsed[3] > 23 || parsed[4] > 59 || parsed[5] > 60) return std::nullopt;
  return std::chrono::sys_days(date) + std::chrono::hours(parsed[3]) +
         std::chrono::minutes(parsed[4]) + std::chrono::seconds(parsed[5]);
}

std::optional<std::chrono::system_clock::time_point> parse_rfc3339_micros(const std::string& text) {
  auto whole = parse_rfc3339(text);
  if (!whole) return std::nullopt;
  const auto dot = text.find('.', 19);
  if (dot != 19) return whole;
  std::int64_t micros = 0;
  int digits = 0;
  for (size_t i = dot + 1; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (digits == 6) continue;  // finer than a microsecond: dropped
    micros = micros * 10 + (text[i] - '0');
    ++digits;
  }
  for (; digits < 6; ++digits) micros *= 10;
  return *whole + std::chrono::microseconds(micros);
}

}  // namespace perimeter
