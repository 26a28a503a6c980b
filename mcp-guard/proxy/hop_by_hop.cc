#include "proxy/hop_by_hop.h"

#include "proxy/field_lookup.h"

namespace perimeter::mcpguard {

void strip_hop_by_hop(GuardFields& fields) {
  if (const auto* connection = find_field(fields, http::field::connection)) {
    for (const auto token : http::token_list(connection->value())) {
      fields.erase(token);
    }
  }
  // One pass over the fields (a message has a few), not a lookup in them per name. Beast knows
  // each of these names (in any case) as a field, so the enum is compared, never the text.
  for (auto it = fields.begin(); it != fields.end();) {
    switch (it->name()) {
      case http::field::connection:
      case http::field::keep_alive:
      case http::field::proxy_connection:
      case http::field::proxy_authenticate:
      case http::field::proxy_authentication_info:
      case http::field::proxy_authorization:
      case http::field::te:
      case http::field::trailer:
      case http::field::upgrade:
      case http::field::transfer_encoding:
        it = fields.erase(it);
        continue;
      default:
        break;
    }
    ++it;
  }
}

}  // namespace perimeter::mcpguard
