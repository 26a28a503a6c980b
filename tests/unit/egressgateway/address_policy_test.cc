#include "gateway/address_policy.h"

#include <gtest/gtest.h>

#include "core/cidr.h"

namespace perimeter::egressgateway {
namespace {

std::optional<std::string> reason(const std::string& address, bool allow_loopback = false) {
  const auto parsed = parse_ip_address(address);
  if (!parsed) throw std::runtime_error("bad address in test: " + address);
  return forbidden_address_reason(*parsed, allow_loopback);
}

TEST(AddressPolicy, ForbiddenAddresses) {
  for (const std::string address : {"127.0.0.1",
                                    "127.255.0.1",
                                    "::1",
                                    "169.254.169.254",
                                    "169.254.0.1",
                                    "fe80::1",
                                    "febf::1",
                                    "0.0.0.0",
                                    "::",
                                    "224.0.0.1",
                                    "239.255.255.250",
                                    "ff02::1",
                                    "255.255.255.255",
                                    "fd00:ec2::254",
                                    "::ffff:127.0.0.1",
                                    "::ffff:169.254.169.254",
                                    "::ffff:a9fe:a9fe",
                                    "::169.254.169.254",
                                    "64:ff9b::169.254.169.254",
                                    "64:ff9b::7f00:1"}) {
    EXPECT_TRUE(reason(address)) << address << " should be forbidden";
  }
}

TEST(AddressPolicy, PublicAndPrivateAddressesAreLeftToTheNetworkPolicy) {
  for (const std::string address :
       {"160.79.104.10", "10.0.0.5", "192.168.1.1", "172.16.0.1", "2607:6bc0::10", "fd00::1",
        "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "169.255.0.1", "fec0::1"}) {
    EXPECT_FALSE(reason(address)) << address << " should be allowed";
  }
}

TEST(AddressPolicy, TheTestingFlagLiftsLoopbackOnly) {
  EXPECT_FALSE(reason("127.0.0.2", true));
  EXPECT_FALSE(reason("::1", true));
  EXPECT_FALSE(reason("::ffff:127.0.0.1", true));
  EXPECT_TRUE(reason("169.254.169.254", true));
  EXPECT_TRUE(reason("0.0.0.0", true));
  EXPECT_TRUE(reason("fe80::1", true));
}

}  // namespace
}  // namespace perimeter::egressgateway
