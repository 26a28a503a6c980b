#include "proxy/hop_by_hop.h"

#include <algorithm>
#include <cctype>
#include <string_view>

namespace perimeter::mcpguard {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

void strip_hop_by_hop(http::fields& fields) {
  const auto connection = fields.find(http::field::connection);
  if (connection != fields.end()) {
    for (const auto token : http::token_list(connection->value())) {
      fields.erase(token);
    }
  }
  // One pass over the fields (a message has a few), not a lookup in them per name.
  for (auto it = fields.begin(); it != fields.end();) {
    switch (it->name()) {
      case http::field::connection:
      case http::field::keep_alive:
      case http::field::proxy_connection:
      case http::field::proxy_authenticate:
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
    const auto name = it->name_string();
    if (iequals(std::string_view(name.data(), name.size()), "Proxy-Authentication-Info")) {
      it = fields.erase(it);
      continue;
    }
    ++it;
  }
}

}  // namespace perimeter::mcpguard
