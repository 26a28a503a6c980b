#include "tools/js_value.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace perimeter::tools {

const nlohmann::json* field(const nlohmann::json& input, std::string_view name) {
  if (!input.is_object()) return nullptr;
  auto it = input.find(std::string(name));
  return it == input.end() ? nullptr : &*it;
}

bool js_truthy(const nlohmann::json* value) {
  if (value == nullptr || value->is_null()) return false;
  if (value->is_boolean()) return value->get<bool>();
  if (value->is_number()) {
    const double d = value->get<double>();
    return d != 0 && !std::isnan(d);
  }
  if (value->is_string()) return !value->get_ref<const std::string&>().empty();
  return true;
}

std::string js_number_to_string(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0) return "0";
  // Shortest round-trip digits, then laid out the way ECMAScript's Number::toString does.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const auto e_pos = sci.find('e');
  std::string digits = sci.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::atoi(sci.c_str() + e_pos + 1);
  const int k = static_cast<int>(digits.size());
  const int n = exponent + 1;
  std::string out;
  if (k <= n && n <= 21) {
    out = digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out = digits.substr(0, n) + "." + digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out = "0." + std::string(-n, '0') + digits;
  } else {
    const int e = n - 1;
    std::string exp = (e >= 0 ? "+" : "-") + std::to_string(std::abs(e));
    out = k == 1 ? digits + "e" + exp : digits.substr(0, 1) + "." + digits.substr(1) + "e" + exp;
  }
  return negative ? "-" + out : out;
}

std::string js_to_string(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::string:
      return value.get<std::string>();
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::boolean:
      return value.get<bool>() ? "true" : "false";
    case nlohmann::json::value_t::number_integer:
      return std::to_string(value.get<std::int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return std::to_string(value.get<std::uint64_t>());
    case nlohmann::json::value_t::number_float:
      return js_number_to_string(value.get<double>());
    case nlohmann::json::value_t::array: {
      std::string out;
      bool first = true;
      for (const auto& item : value) {
        if (!first) out += ',';
        first = false;
        if (!item.is_null()) out += js_to_string(item);
      }
      return out;
    }
    default:
      return "[object Object]";
  }
}

double js_to_number(const nlohmann::json& value) {
  if (value.is_number()) return value.get<double>();
  if (value.is_boolean()) return value.get<bool>() ? 1 : 0;
  if (value.is_null()) return 0;
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    const auto first = s.find_first_not_of(" \t\n\r\f\v");
    if (first == std::string::npos) return 0;
    const auto last = s.find_last_not_of(" \t\n\r\f\v");
    const std::string trimmed = s.substr(first, last - first + 1);
    char* end = nullptr;
    const double d = std::strtod(trimmed.c_str(), &end);
    if (end != trimmed.c_str() + trimmed.size()) return std::nan("");
    return d;
  }
  return std::nan("");
}

std::string node_received(const nlohmann::json& value) {
  if (value.is_number()) return "type number (" + js_to_string(value) + ")";
  if (value.is_boolean()) return "type boolean (" + js_to_string(value) + ")";
  if (value.is_array()) return "an instance of Array";
  if (value.is_object()) return "an instance of Object";
  if (value.is_null()) return "null";
  return "type string ('" + value.get<std::string>() + "')";
}

std::string js_json_stringify(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace perimeter::tools
