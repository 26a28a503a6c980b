#include "proxy/field_allocator.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace perimeter::mcpguard {
namespace {

TEST(SmallBlocks, AFreedBlockServesTheNextOfItsSizeClass) {
  void* first = small_blocks::allocate(100);
  small_blocks::deallocate(first, 100);
  // 97..128 bytes share a class: the block just freed comes back, not new memory.
  void* again = small_blocks::allocate(120);
  EXPECT_EQ(again, first);
  // Another class does not take it.
  void* other = small_blocks::allocate(40);
  EXPECT_NE(other, first);
  small_blocks::deallocate(other, 40);
  small_blocks::deallocate(again, 120);
}

TEST(SmallBlocks, ABlockFreedOnAnotherThreadIsReusedThere) {
  void* block = small_blocks::allocate(64);
  void* reused = nullptr;
  std::thread([&] {
    small_blocks::deallocate(block, 64);
    reused = small_blocks::allocate(64);
    small_blocks::deallocate(reused, 64);
  }).join();  // the thread's cache releases the block as the thread ends
  EXPECT_EQ(reused, block);
}

// Fields in the pooled containers read, move and copy as in Beast's default ones, through many
// rounds of the same blocks.
TEST(GuardFields, HoldFieldsAsBeastsDefaultFieldsDo) {
  const std::vector<std::pair<std::string, std::string>> in = {
      {"Host", "127.0.0.1:8080"},
      {"Content-Type", "application/json"},
      {"Mcp-Session-Id", "4f0b2c8e-7a61-4d2e-9c1f-0e5a3b7d9c21"},
      {"Authorization", "Bearer " + std::string(900, 'x')},  // above the kept sizes
      {"Accept", "application/json, text/event-stream"}};
  for (int round = 0; round < 3; ++round) {
    http::request<http::string_body, GuardFields> pooled;
    http::request<http::string_body> plain;
    pooled.method_string("POST");
    pooled.target("/mcp");
    for (const auto& [name, value] : in) {
      pooled.insert(name, value);
      plain.insert(name, value);
    }
    pooled.erase(http::field::content_type);
    plain.erase(http::field::content_type);
    auto moved = std::move(pooled);
    const auto copied = moved;
    for (const auto* fields : {&std::as_const(moved), &copied}) {
      EXPECT_EQ(fields->method_string(), "POST");
      EXPECT_EQ(fields->target(), "/mcp");
      std::vector<std::pair<std::string, std::string>> seen;
      for (const auto& field : *fields) seen.emplace_back(field.name_string(), field.value());
      std::vector<std::pair<std::string, std::string>> expected;
      for (const auto& field : plain) expected.emplace_back(field.name_string(), field.value());
      EXPECT_EQ(seen, expected);
    }
  }
}

}  // namespace
}  // namespace perimeter::mcpguard
