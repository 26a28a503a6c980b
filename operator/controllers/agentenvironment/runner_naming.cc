#include "controllers/agentenvironment/runner_naming.h"

#include <cctype>
#include <cstdio>

namespace perimeter::agentenvironment {
namespace {

bool is_alnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}

std::string hex_of(std::uint64_t value, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return std::string(buf + 16 - digits, static_cast<std::size_t>(digits));
}

}  // namespace

std::uint64_t stable_hash(std::string_view text) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;  // FNV-1a 64-bit offset basis
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;  // FNV 64-bit prime
  }
  return hash;
}

std::string short_hash(std::string_view text, int digits) {
  return hex_of(stable_hash(text), digits);
}

std::string object_name_for(std::string_view prefix, std::string_view id) {
  constexpr int kHashDigits = 10;
  constexpr std::size_t kMaxLength = 63;
  const std::size_t readable_budget = kMaxLength - prefix.size() - 1 - kHashDigits;

  std::string readable;
  for (char c : id) {
    if (readable.size() == readable_budget) break;
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (is_alnum(lower)) {
      readable.push_back(lower);
    } else if (!readable.empty() && readable.back() != '-') {
      readable.push_back('-');
    }
  }
  while (!readable.empty() && readable.back() == '-') readable.pop_back();

  std::string name(prefix);
  if (!readable.empty()) name += readable + "-";
  name += hex_of(stable_hash(id), kHashDigits);
  return name;
}

std::string runner_object_name(std::string_view work_id) {
  return object_name_for("run-", work_id);
}

std::string label_value_for(std::string_view value) {
  bool valid =
      !value.empty() && value.size() <= 63 && is_alnum(value.front()) && is_alnum(value.back());
  for (char c : value) {
    if (!valid) break;
    valid = is_alnum(c) || c == '-' || c == '_' || c == '.';
  }
  if (valid) return std::string(value);
  return "h-" + hex_of(stable_hash(value), 16);
}

}  // namespace perimeter::agentenvironment
