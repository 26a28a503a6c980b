#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace perimeter::egressgateway {

// Why the gateway must never dial `address` (16 bytes, IPv4 as ::ffff:a.b.c.d), or nullopt:
// loopback, link-local (169.254.0.0/16 with the cloud metadata address, fe80::/10),
// unspecified, multicast, broadcast, and the IPv4-mapped/compatible forms of these.
// `allow_loopback`: the loopback test suite's stand-ins (testing_allow_loopback_upstreams).
std::optional<std::string> forbidden_address_reason(const std::array<std::uint8_t, 16>& address,
                                                    bool allow_loopback);

}  // namespace perimeter::egressgateway
