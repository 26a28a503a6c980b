#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace perimeter {

// RFC 3339 in UTC with whole seconds ("2026-11-23T06:00:00Z"): the form Kubernetes uses for
// metav1.Time fields (creationTimestamp, lastTransitionTime) and that Perimeter's annotations use.
std::string format_rfc3339(std::chrono::system_clock::time_point time);
// The same with milliseconds ("2026-11-23T06:00:00.123Z"): log and audit lines, where lines of one
// session often share a second.
std::string format_rfc3339_millis(std::chrono::system_clock::time_point time);
// The same with microseconds ("2026-11-23T06:00:00.123456Z"): the hosted API's timestamps.
std::string format_rfc3339_micros(std::chrono::system_clock::time_point time);

// Parses the date-time part of an RFC 3339 UTC timestamp ("...Z"; fractional seconds ignored);
// nullopt when it is not one.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& text);
// The same, keeping up to microseconds of the fractional part (format_rfc3339_micros' inverse),
// for times that order events less than a second apart.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339_micros(const std::string& text);

}  // namespace perimeter
