#include <gtest/gtest.h>

#include <boost/asio/ip/address.hpp>

#include "sim/http_server.h"

namespace perimeter::sim {
namespace {

using boost::asio::ip::make_address;

TEST(AdminAccessTest, AnswersThisHostOnly) {
  const auto bridge = make_address("10.200.7.1");
  // This host: loopback, or the bridge address itself (the host's side of the bridge).
  EXPECT_TRUE(admin_allowed_from(make_address("127.0.0.1"), make_address("127.0.0.1")));
  EXPECT_TRUE(admin_allowed_from(make_address("::1"), make_address("::1")));
  EXPECT_TRUE(admin_allowed_from(bridge, bridge));
  // A pod on the bridge.
  EXPECT_FALSE(admin_allowed_from(make_address("10.200.7.5"), bridge));
  EXPECT_FALSE(admin_allowed_from(make_address("10.200.7.1"), make_address("10.200.8.1")));
}

}  // namespace
}  // namespace perimeter::sim
