#include "proxy/upstream_connector.h"

#include <gtest/gtest.h>

namespace perimeter::mcpguard {
namespace {

std::vector<Cidr> cidrs(std::initializer_list<const char*> texts) {
  std::vector<Cidr> parsed;
  for (const char* text : texts) parsed.push_back(*Cidr::parse(text));
  return parsed;
}

TEST(UpstreamConnector, OnlyAddressesInsideAllowedCidrsMayBeDialled) {
  const auto allowed = cidrs({"10.0.0.0/8", "fd00::/8"});
  EXPECT_TRUE(address_allowed(asio::ip::make_address("10.1.2.3"), allowed));
  EXPECT_TRUE(address_allowed(asio::ip::make_address("fd00::5"), allowed));
  EXPECT_FALSE(address_allowed(asio::ip::make_address("169.254.169.254"), allowed));
  EXPECT_FALSE(address_allowed(asio::ip::make_address("127.0.0.1"), allowed));
  EXPECT_FALSE(address_allowed(asio::ip::make_address("::1"), allowed));
  // The mapped form of a denied v4 address is denied; of an allowed one, allowed.
  EXPECT_FALSE(address_allowed(asio::ip::make_address("::ffff:169.254.169.254"), allowed));
  EXPECT_TRUE(address_allowed(asio::ip::make_address("::ffff:10.0.0.1"), allowed));
}

TEST(UpstreamConnector, FiltersResolvedEndpoints) {
  asio::io_context io;
  tcp::resolver resolver(io);
  const auto resolved = resolver.resolve("127.0.0.1", "80");
  EXPECT_TRUE(allowed_endpoints(resolved, cidrs({"10.0.0.0/8"})).empty());
  EXPECT_EQ(allowed_endpoints(resolved, cidrs({"127.0.0.0/8"})).size(), 1u);
}

}  // namespace
}  // namespace perimeter::mcpguard
