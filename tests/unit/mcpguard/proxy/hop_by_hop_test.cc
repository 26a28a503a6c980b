#include "proxy/hop_by_hop.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace perimeter::mcpguard {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

Fields stripped(const Fields& in) {
  GuardFields fields;
  for (const auto& [name, value] : in) fields.insert(name, value);
  strip_hop_by_hop(fields);
  Fields out;
  for (const auto& field : fields) {
    out.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return out;
}

TEST(HopByHop, RemovesTheFixedOnesInAnyCaseAndEveryCopy) {
  EXPECT_EQ(stripped({{"Content-Type", "application/json"},
                      {"connection", "keep-alive"},
                      {"Keep-Alive", "timeout=5"},
                      {"Proxy-Connection", "x"},
                      {"X-Kept", "1"},
                      {"PROXY-AUTHENTICATE", "Basic"},
                      {"Proxy-Authorization", "Basic abc"},
                      {"TE", "trailers"},
                      {"Trailer", "X"},
                      {"Upgrade", "h2c"},
                      {"Transfer-Encoding", "chunked"},
                      {"transfer-encoding", "gzip"},
                      {"proxy-authentication-info", "a"},
                      {"Proxy-Authentication-Info", "b"},
                      {"Proxy-Authentication-Inf", "kept"},
                      {"Authorization", "Bearer t"},
                      {"Content-Length", "3"}}),
            (Fields{{"Content-Type", "application/json"},
                    {"X-Kept", "1"},
                    {"Proxy-Authentication-Inf", "kept"},
                    {"Authorization", "Bearer t"},
                    {"Content-Length", "3"}}));
}

TEST(HopByHop, RemovesWhatConnectionNames) {
  EXPECT_EQ(stripped({{"Connection", "keep-alive, X-Hop , x-other"},
                      {"X-Hop", "1"},
                      {"X-Other", "2"},
                      {"x-hop", "3"},
                      {"Mcp-Session-Id", "s"}}),
            (Fields{{"Mcp-Session-Id", "s"}}));
  EXPECT_EQ(stripped({{"Mcp-Session-Id", "s"}}), (Fields{{"Mcp-Session-Id", "s"}}));
  EXPECT_EQ(stripped({}), Fields{});
}

}  // namespace
}  // namespace perimeter::mcpguard
