#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace perimeter {

// An IPv4 or IPv6 prefix ("10.0.0.0/8", "fd00::/8"; a bare address is a /32 or /128).
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are matched as the IPv4 address they carry, so a
// v4 rule cannot be stepped around through the mapped form. An IPv6 prefix wider than
// ::ffff:0:0/96 ("::/0") does not contain IPv4 addresses: allowing "all IPv6" is not allowing
// 169.254.169.254.
class Cidr {
 public:
  // nullopt for anything that is not an address with an optional in-range prefix length, or that
  // has host bits set past the prefix ("10.0.0.1/8").
  static std::optional<Cidr> parse(std::string_view text);

  // `address` as 16 bytes (IPv4 as ::ffff:a.b.c.d) and whether it is IPv4.
  bool contains(const std::array<std::uint8_t, 16>& address) const;
  // Parses `address` (a bare IPv4 or IPv6 address); false when it does not parse.
  bool contains(std::string_view address) const;

  std::string to_string() const;

 private:
  std::array<std::uint8_t, 16> network_{};  // IPv4 stored mapped (::ffff:a.b.c.d)
  int prefix_bits_ = 0;                     // of the 128; an IPv4 /8 is 96 + 8
};

// Parses a bare IPv4 or IPv6 address to 16 bytes (IPv4 mapped); nullopt otherwise.
std::optional<std::array<std::uint8_t, 16>> parse_ip_address(std::string_view text);

}  // namespace perimeter
