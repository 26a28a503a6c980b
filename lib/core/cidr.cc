#include "core/cidr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace perimeter {
namespace {

// ::ffff:0:0/96, where IPv4 addresses live.
constexpr std::array<std::uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_mapped_ipv4(const std::array<std::uint8_t, 16>& address) {
  return std::memcmp(address.data(), kMappedPrefix.data(), kMappedPrefix.size()) == 0;
}

// True when the first `bits` bits of `a` and `b` are equal.
bool same_prefix(const std::array<std::uint8_t, 16>& a, const std::array<std::uint8_t, 16>& b,
                 int bits) {
  const int whole = bits / 8;
  if (std::memcmp(a.data(), b.data(), static_cast<std::size_t>(whole)) != 0) return false;
  if (const int rest = bits % 8; rest != 0) {
    const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
  }
  return true;
}

// A prefix length: decimal digits, no sign, no leading zero, at most `max`.
std::optional<int> parse_prefix(std::string_view text, int max) {
  if (text.empty() || text.size() > 3 || (text.size() > 1 && text.front() == '0')) {
    return std::nullopt;
  }
  int value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > max) return std::nullopt;
  return value;
}

// parse_ip_address, also saying whether the text was an IPv4 address.
std::optional<std::array<std::uint8_t, 16>> parse_address(std::string_view text, bool* ipv4) {
  // inet_pton wants a C string; the longest IPv6 text ("ffff:...:255.255.255.255") is 45 bytes.
  char buffer[64];
  if (text.empty() || text.size() >= sizeof buffer) return std::nullopt;
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  if (std::memchr(text.data(), '\0', text.size()) != nullptr) return std::nullopt;
  std::array<std::uint8_t, 16> address{};
  *ipv4 = text.find(':') == std::string_view::npos;
  if (*ipv4) {
    // glibc's inet_pton takes only four decimal parts without leading zeros: no octal, no
    // "10.1" shorthands, so the text means the same to every reader.
    std::copy(kMappedPrefix.begin(), kMappedPrefix.end(), address.begin());
    if (inet_pton(AF_INET, buffer, address.data() + 12) != 1) return std::nullopt;
  } else if (inet_pton(AF_INET6, buffer, address.data()) != 1) {
    return std::nullopt;
  }
  return address;
}

}  // namespace

std::optional<std::array<std::uint8_t, 16>> parse_ip_address(std::string_view text) {
  bool ipv4 = false;
  return parse_address(text, &ipv4);
}

std::optional<Cidr> Cidr::parse(std::string_view text) {
  const auto slash = text.find('/');
  bool ipv4 = false;
  const auto address = parse_address(text.substr(0, slash), &ipv4);
  if (!address) return std::nullopt;
  int bits = 128;
  if (slash != std::string_view::npos) {
    const auto prefix = parse_prefix(text.substr(slash + 1), ipv4 ? 32 : 128);
    if (!prefix) return std::nullopt;
    bits = ipv4 ? 96 + *prefix : *prefix;
  }
  // Host bits past the prefix: "10.0.0.1/8" is a typo or a misunderstanding, either way refused.
  for (int bit = bits; bit < 128; ++bit) {
    if ((*address)[bit / 8] & (0x80 >> (bit % 8))) return std::nullopt;
  }
  Cidr cidr;
  cidr.network_ = *address;
  cidr.prefix_bits_ = bits;
  return cidr;
}

bool Cidr::contains(const std::array<std::uint8_t, 16>& address) const {
  // An IPv6 prefix wider than ::ffff:0:0/96 ("::/0", "::/64") is about IPv6: it does not take in
  // IPv4 addresses by way of their mapped form. IPv4 rules (and ::ffff:a.b.c.d/96+) do.
  const bool ipv4_rule = prefix_bits_ >= 96 && is_mapped_ipv4(network_);
  if (is_mapped_ipv4(address) && !ipv4_rule) return false;
  return same_prefix(network_, address, prefix_bits_);
}

bool Cidr::contains(std::string_view address) const {
  const auto parsed = parse_ip_address(address);
  return parsed && contains(*parsed);
}

std::string Cidr::to_string() const {
  char text[INET6_ADDRSTRLEN];
  if (prefix_bits_ >= 96 && is_mapped_ipv4(network_)) {
    inet_ntop(AF_INET, network_.data() + 12, text, sizeof text);
    return std::string(text) + "/" + std::to_string(prefix_bits_ - 96);
  }
  inet_ntop(AF_INET6, network_.data(), text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix_bits_);
}

}  // namespace perimeter
