#include "tunnelsapi/tunnels_api.h"

#include <set>

#include "agentapi/api_error.h"

namespace perimeter::tunnelsapi {
namespace {

// Calls `fetch(cursor)` from the first page until next_page is null; a cursor seen before would
// loop forever, so it is the server's error.
template <typename Item, typename Fetch>
std::vector<Item> walk_pages(Fetch fetch, std::string_view what) {
  std::vector<Item> all;
  std::set<std::string> seen;
  std::string cursor;
  for (;;) {
    auto page = fetch(cursor);
    all.insert(all.end(), page.data.begin(), page.data.end());
    if (!page.next_page) return all;
    if (!seen.insert(*page.next_page).second) {
      throw agentapi::ProtocolError(std::string(what) + ": the server repeated a page cursor");
    }
    cursor = *page.next_page;
  }
}

}  // namespace

std::vector<Tunnel> list_all_tunnels(TunnelsApi& api, bool include_archived, int page_size) {
  return walk_pages<Tunnel>(
      [&](const std::string& cursor) {
        return api.list_tunnels(include_archived, page_size, cursor);
      },
      "tunnels.list");
}

std::vector<TunnelCertificate> list_all_certificates(TunnelsApi& api, const std::string& tunnel_id,
                                                     bool include_archived, int page_size) {
  return walk_pages<TunnelCertificate>(
      [&](const std::string& cursor) {
        return api.list_certificates(tunnel_id, include_archived, page_size, cursor);
      },
      "tunnels.certificates.list");
}

}  // namespace perimeter::tunnelsapi
