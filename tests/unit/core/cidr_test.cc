#include "core/cidr.h"

#include <gtest/gtest.h>

#include <vector>

namespace perimeter {
namespace {

bool any_contains(const std::vector<std::string>& rules, std::string_view address) {
  for (const auto& rule : rules) {
    const auto cidr = Cidr::parse(rule);
    EXPECT_TRUE(cidr.has_value()) << rule;
    if (cidr && cidr->contains(address)) return true;
  }
  return false;
}

TEST(CidrTest, ParsesIpv4AndIpv6Prefixes) {
  for (const auto& [text, canonical] : std::vector<std::pair<const char*, const char*>>{
           {"10.0.0.0/8", "10.0.0.0/8"},
           {"172.16.0.0/12", "172.16.0.0/12"},
           {"0.0.0.0/0", "0.0.0.0/0"},
           {"192.168.1.7", "192.168.1.7/32"},
           {"192.168.1.7/32", "192.168.1.7/32"},
           {"fd00::/8", "fd00::/8"},
           {"FD00::/8", "fd00::/8"},
           {"::/0", "::/0"},
           {"::1", "::1/128"},
           {"2001:db8::/32", "2001:db8::/32"},
           {"::ffff:10.0.0.0/104", "10.0.0.0/8"},  // a mapped prefix is the IPv4 prefix
       }) {
    const auto cidr = Cidr::parse(text);
    ASSERT_TRUE(cidr.has_value()) << text;
    EXPECT_EQ(cidr->to_string(), canonical) << text;
  }
}

TEST(CidrTest, RefusesAnythingElse) {
  for (const char* text : {"",
                           "/",
                           "10.0.0.0/",
                           "/8",
                           "10.0.0.1/8",
                           "10.0.0.0/33",
                           "10.0.0.0/-1",
                           "10.0.0.0/+8",
                           "10.0.0.0/08",
                           "10.0.0.0/8/8",
                           "10.0.0.0/ 8",
                           " 10.0.0.0/8",
                           "10.0.0.0/8 ",
                           "10.0.0.0 /8",
                           "10.0.0.0/8\n",
                           "10.0.0",
                           "10.1",
                           "010.0.0.0/8",
                           "10.0.0.256",
                           "0x0a.0.0.0/8",
                           "10.0.0.0/0008",
                           "fd00::/129",
                           "fd00::1/8",
                           "fe80::1%eth0",
                           "::ffff:10.0.0.1/104",
                           "localhost",
                           "10.0.0.0/8x",
                           "1:2:3:4:5:6:7:8:9",
                           "abc"}) {
    EXPECT_FALSE(Cidr::parse(text).has_value()) << '"' << text << '"';
  }
  EXPECT_FALSE(Cidr::parse(std::string("10.0.0.0\0/8", 11)).has_value());
  EXPECT_FALSE(Cidr::parse(std::string(1000, '1')).has_value());
}

TEST(CidrTest, ContainsAddressesInItsPrefix) {
  const auto ten = Cidr::parse("10.0.0.0/8");
  ASSERT_TRUE(ten);
  EXPECT_TRUE(ten->contains("10.0.0.0"));
  EXPECT_TRUE(ten->contains("10.255.255.255"));
  EXPECT_FALSE(ten->contains("11.0.0.0"));
  EXPECT_FALSE(ten->contains("9.255.255.255"));
  EXPECT_FALSE(ten->contains("not an address"));
  EXPECT_FALSE(ten->contains("10.0.0.0/8"));  // an address, not a prefix

  const auto twelve = Cidr::parse("172.16.0.0/12");
  EXPECT_TRUE(twelve->contains("172.31.255.255"));
  EXPECT_FALSE(twelve->contains("172.32.0.0"));

  const auto six = Cidr::parse("fd00::/8");
  EXPECT_TRUE(six->contains("fd12:3456::1"));
  EXPECT_FALSE(six->contains("fe00::1"));
  EXPECT_FALSE(six->contains("10.0.0.1"));

  const auto host = Cidr::parse("2001:db8::1");
  EXPECT_TRUE(host->contains("2001:db8:0:0:0:0:0:1"));
  EXPECT_FALSE(host->contains("2001:db8::2"));

  const auto all4 = Cidr::parse("0.0.0.0/0");
  EXPECT_TRUE(all4->contains("169.254.169.254"));
  EXPECT_FALSE(all4->contains("::1"));

  const auto bytes = parse_ip_address("10.1.2.3");
  ASSERT_TRUE(bytes);
  EXPECT_TRUE(ten->contains(*bytes));
}

TEST(CidrTest, MappedIpv4IsMatchedAsTheIpv4AddressItCarries) {
  const std::vector<std::string> allowed = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"};
  // The metadata address is outside the list in every spelling.
  for (const char* metadata : {"169.254.169.254", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe",
                               "0:0:0:0:0:ffff:169.254.169.254", "::FFFF:A9FE:A9FE"}) {
    EXPECT_FALSE(any_contains(allowed, metadata)) << metadata;
  }
  // An allowed address is allowed in its mapped form too.
  EXPECT_TRUE(any_contains(allowed, "::ffff:10.1.2.3"));
  EXPECT_TRUE(any_contains(allowed, "::ffff:c0a8:0101"));  // 192.168.1.1

  // A v4 rule covers the mapped form, so it cannot be stepped around.
  const auto link_local = Cidr::parse("169.254.0.0/16");
  EXPECT_TRUE(link_local->contains("169.254.169.254"));
  EXPECT_TRUE(link_local->contains("::ffff:169.254.169.254"));
  // A mapped rule is the v4 rule.
  EXPECT_TRUE(Cidr::parse("::ffff:169.254.0.0/112")->contains("169.254.169.254"));

  // "All IPv6" is not "all IPv4": ::/0 does not let the metadata address through.
  const auto all6 = Cidr::parse("::/0");
  EXPECT_TRUE(all6->contains("2001:db8::1"));
  EXPECT_FALSE(all6->contains("169.254.169.254"));
  EXPECT_FALSE(all6->contains("::ffff:169.254.169.254"));
  // The IPv4-compatible form (::a.b.c.d) is an IPv6 address, not routed to IPv4 by Linux.
  EXPECT_FALSE(link_local->contains("::169.254.169.254"));
}

TEST(CidrTest, ParsesBareAddresses) {
  const auto v4 = parse_ip_address("1.2.3.4");
  ASSERT_TRUE(v4);
  const std::array<std::uint8_t, 16> mapped = {0, 0, 0,    0,    0, 0, 0, 0,
                                               0, 0, 0xff, 0xff, 1, 2, 3, 4};
  EXPECT_EQ(*v4, mapped);
  EXPECT_EQ(parse_ip_address("::ffff:1.2.3.4"), mapped);
  for (const char* text :
       {"", "1.2.3", "1.2.3.4/32", " 1.2.3.4", "::1 ", "fe80::1%lo", "1.2.3.04"}) {
    EXPECT_FALSE(parse_ip_address(text).has_value()) << '"' << text << '"';
  }
}

}  // namespace
}  // namespace perimeter
