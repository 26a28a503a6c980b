#include "gateway/address_policy.h"

#include <algorithm>
#include <vector>

#include "core/cidr.h"

namespace perimeter::egressgateway {
namespace {

struct Forbidden {
  Cidr range;
  const char* what;
  bool loopback;
};

const std::vector<Forbidden>& forbidden_ranges() {
  static const std::vector<Forbidden> ranges = [] {
    const std::pair<const char*, const char*> table[] = {
        {"0.0.0.0/8", "unspecified"},
        {"169.254.0.0/16", "link-local (cloud metadata)"},
        {"224.0.0.0/4", "multicast"},
        {"240.0.0.0/4", "reserved"},
        {"::/128", "unspecified"},
        {"fe80::/10", "link-local"},
        {"ff00::/8", "multicast"},
        {"fd00:ec2::254/128", "cloud metadata"},
        // IPv4-compatible (::a.b.c.d, deprecated) would reach an IPv4 address on some stacks.
        {"::/96", "IPv4-compatible"},
    };
    std::vector<Forbidden> out;
    for (const auto& [text, what] : table) out.push_back({*Cidr::parse(text), what, false});
    out.push_back({*Cidr::parse("127.0.0.0/8"), "loopback", true});
    out.push_back({*Cidr::parse("::1/128"), "loopback", true});
    return out;
  }();
  return ranges;
}

}  // namespace

std::optional<std::string> forbidden_address_reason(const std::array<std::uint8_t, 16>& address,
                                                    bool allow_loopback) {
  // Loopback first: ::1 also lies in ::/96.
  for (const auto& range : forbidden_ranges()) {
    if (range.loopback && range.range.contains(address)) {
      if (allow_loopback) return std::nullopt;
      return std::string(range.what);
    }
  }
  for (const auto& range : forbidden_ranges()) {
    if (!range.loopback && range.range.contains(address)) return std::string(range.what);
  }
  // NAT64 (64:ff9b::/96) carries an IPv4 address that a NAT64 gateway would reach: judge that one.
  static const Cidr nat64 = *Cidr::parse("64:ff9b::/96");
  if (nat64.contains(address)) {
    std::array<std::uint8_t, 16> embedded{};
    embedded[10] = 0xff;
    embedded[11] = 0xff;
    std::copy(address.begin() + 12, address.end(), embedded.begin() + 12);
    if (auto reason = forbidden_address_reason(embedded, false)) return "NAT64 of " + *reason;
  }
  return std::nullopt;
}

}  // namespace perimeter::egressgateway
