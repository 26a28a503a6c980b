#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sim/api_reply.h"
#include "sim/tunnels.h"

namespace perimeter::sim {

// The HTTP face of the TunnelService: header and credential rules, query and body parsing, for
// `POST /v1/oauth/token`, `/v1/tunnels...` and the tunnels' admin calls. The ApiRouter decides
// faults first, exactly as for the work-queue calls, then hands these requests here.

// The metric/route label of a token-exchange or Tunnels API request ("tunnels.create", ...), or
// "" when the request is not one.
std::string tunnels_route_name(const std::string& method, const std::vector<std::string>& parts);

// The reply to a request `tunnels_route_name` named `route`.
ApiReply route_tunnels_api(TunnelService& service, const ApiRequest& request,
                           const std::vector<std::string>& parts, const std::string& route);

// The admin calls under /admin/organizations, /admin/federation_rules,
// /admin/federation_issuers, /admin/access_tokens and /admin/tunnels: {route label, reply}, or
// nullopt when the path is none of them.
std::optional<std::pair<std::string, ApiReply>> route_tunnels_admin(
    TunnelService& service, const ApiRequest& request, const std::vector<std::string>& parts);

}  // namespace perimeter::sim
