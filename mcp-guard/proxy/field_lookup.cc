#include "proxy/field_lookup.h"

#include <iterator>

namespace perimeter::mcpguard {

const GuardFields::value_type* find_field(const GuardFields& fields, http::field name) {
  for (const auto& field : fields) {
    if (field.name() == name) return &field;
  }
  return nullptr;
}

std::string_view field_value(const GuardFields& fields, http::field name) {
  const auto* found = find_field(fields, name);
  if (found == nullptr) return {};
  const auto value = found->value();
  return {value.data(), value.size()};
}

bool has_content_length_field(const GuardFields& fields) {
  return find_field(fields, http::field::content_length) != nullptr;
}

bool keeps_alive(const GuardFields& fields, unsigned version) {
  const auto* connection = find_field(fields, http::field::connection);
  if (connection == nullptr) return version >= 11;
  http::token_list tokens{connection->value()};  // exists() is not const
  return version < 11 ? tokens.exists("keep-alive") : !tokens.exists("close");
}

bool is_chunked(const GuardFields& fields) {
  const auto* coding = find_field(fields, http::field::transfer_encoding);
  if (coding == nullptr) return false;
  const http::token_list tokens{coding->value()};
  for (auto it = tokens.begin(); it != tokens.end();) {
    const auto next = std::next(it);
    if (next == tokens.end()) return beast::iequals(*it, "chunked");
    it = next;
  }
  return false;
}

}  // namespace perimeter::mcpguard
