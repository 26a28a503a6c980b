#pragma once

#include "proxy/field_allocator.h"

namespace perimeter::mcpguard {

// Removes the hop-by-hop headers (RFC 9110 7.6.1): those named in Connection, and Connection,
// Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Upgrade,
// Transfer-Encoding and Proxy-Authentication-Info, every copy, in any case.
void strip_hop_by_hop(GuardFields& fields);

}  // namespace perimeter::mcpguard
