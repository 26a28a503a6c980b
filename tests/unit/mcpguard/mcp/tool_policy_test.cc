#include "mcp/tool_policy.h"

#include <gtest/gtest.h>

namespace perimeter::mcpguard {
namespace {

using nlohmann::json;

ToolPolicy policy(std::vector<std::string> allow, std::vector<std::string> deny) {
  ToolPolicy p;
  p.allow = std::move(allow);
  p.deny = std::move(deny);
  return p;
}

TEST(ToolPolicyTest, DenyWinsOverAllow) {
  const ToolPolicy p = policy({"*"}, {"delete_*", "admin_*"});
  EXPECT_TRUE(decide_tool(p, "get_ticket").allowed);
  EXPECT_EQ(decide_tool(p, "get_ticket").reason, "");
  const ToolDecision denied = decide_tool(p, "delete_user");
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.reason, R"(deny "delete_*")");
  EXPECT_EQ(decide_tool(p, "admin_reset").reason, R"(deny "admin_*")");
}

TEST(ToolPolicyTest, ANonEmptyAllowListMustMatch) {
  const ToolPolicy p = policy({"get_*", "list_?", "search_[ab]"}, {});
  EXPECT_TRUE(decide_tool(p, "get_ticket").allowed);
  EXPECT_TRUE(decide_tool(p, "list_x").allowed);
  EXPECT_TRUE(decide_tool(p, "search_b").allowed);
  EXPECT_FALSE(decide_tool(p, "list_xy").allowed);
  EXPECT_FALSE(decide_tool(p, "search_c").allowed);
  const ToolDecision refused = decide_tool(p, "update_ticket");
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.reason, "not in allow list");
}

TEST(ToolPolicyTest, MatchingIsExactAndCaseSensitiveLikeToolNames) {
  // MCP tool names are case-sensitive: "Delete_User" is another tool than "delete_user", and a
  // deny of "delete_*" does not cover it. Deny every spelling with a bracket expression.
  const ToolPolicy p = policy({}, {"delete_*"});
  EXPECT_FALSE(decide_tool(p, "delete_user").allowed);
  EXPECT_TRUE(decide_tool(p, "Delete_User").allowed);
  EXPECT_TRUE(decide_tool(p, "DELETE_USER").allowed);
  EXPECT_TRUE(decide_tool(p, "x_delete_user").allowed);  // anchored at both ends
  EXPECT_FALSE(decide_tool(policy({}, {"[dD][eE][lL][eE][tT][eE]_*"}), "DeLeTe_user").allowed);
}

TEST(ToolPolicyTest, SlashesAndDotsAreOrdinaryCharacters) {
  const ToolPolicy p = policy({}, {"fs*", "*.secret"});
  EXPECT_FALSE(decide_tool(p, "fs/delete").allowed);
  EXPECT_FALSE(decide_tool(p, ".secret").allowed);
  EXPECT_FALSE(decide_tool(p, "a/b.secret").allowed);
  // A backslash escapes: "\*" is a literal star.
  const ToolPolicy literal = policy({}, {"a\\*"});
  EXPECT_FALSE(decide_tool(literal, "a*").allowed);
  EXPECT_TRUE(decide_tool(literal, "ab").allowed);
}

TEST(ToolPolicyTest, ANameWithANulIsRefusedWhenThereIsAPolicy) {
  const std::string hidden("get_ticket\0delete_user", 22);
  EXPECT_FALSE(decide_tool(policy({"get_*"}, {}), hidden).allowed);
  EXPECT_FALSE(decide_tool(policy({}, {"delete_*"}), hidden).allowed);
  EXPECT_TRUE(decide_tool(policy({}, {}), hidden).allowed);
}

TEST(ToolPolicyTest, AllowsEverything) {
  EXPECT_TRUE(policy({}, {}).allows_everything());
  EXPECT_TRUE(policy({"get_*", "*"}, {}).allows_everything());
  EXPECT_FALSE(policy({"get_*"}, {}).allows_everything());
  EXPECT_FALSE(policy({"*"}, {"x"}).allows_everything());
  EXPECT_FALSE(policy({}, {"x"}).allows_everything());
}

TEST(ToolPolicyTest, RemovesDeniedToolsFromAToolsListResult) {
  json response = json::parse(R"({"jsonrpc":"2.0","id":2,"result":{"tools":[
      {"name":"get_ticket","inputSchema":{}},
      {"name":"delete_user","inputSchema":{}},
      {"name":"Delete_Everything","inputSchema":{}},
      {"name":"admin_reset"},
      {"title":"no name"},
      {"name":42},
      "just a string"
    ],"nextCursor":"c2"}})");
  EXPECT_EQ(remove_denied_tools(response, policy({"*"}, {"delete_*", "admin_*"})), 5u);
  // Case-sensitive: "Delete_Everything" is not matched by "delete_*" and stays.
  EXPECT_EQ(response["result"]["tools"], json::parse(R"([{"name":"get_ticket","inputSchema":{}},
                            {"name":"Delete_Everything","inputSchema":{}}])"));
  EXPECT_EQ(response["result"]["nextCursor"], "c2");
  // A case-insensitive glob catches it.
  EXPECT_EQ(remove_denied_tools(response, policy({}, {"[dD]elete_*"})), 1u);
  EXPECT_EQ(response["result"]["tools"].size(), 1u);
}

TEST(ToolPolicyTest, AnAllowEverythingPolicyStillRemovesNamelessTools) {
  json response = json::parse(R"({"jsonrpc":"2.0","id":2,"result":{"tools":[
      {"name":"a"},{"name":null},{}]}})");
  EXPECT_EQ(remove_denied_tools(response, ToolPolicy{}), 2u);
  EXPECT_EQ(response["result"]["tools"], json::parse(R"([{"name":"a"}])"));
}

TEST(ToolPolicyTest, LeavesEverythingButAToolsArrayAlone) {
  const ToolPolicy deny_all = policy({}, {"*"});
  for (const char* text : {
           R"({"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"delete_user"}}})",
           R"({"jsonrpc":"2.0","id":1,"result":{"content":[{"name":"delete_user"}]}})",
           R"({"jsonrpc":"2.0","id":1,"result":[{"tools":[{"name":"x"}]}]})",
           R"({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","tools":[{"name":"x"}]}})",
           R"({"jsonrpc":"2.0","id":1,"method":"m","params":{"tools":[{"name":"x"}]}})",
           R"([{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}]}}])",
           R"("x")",
           "null",
       }) {
    json document = json::parse(text);
    const json before = document;
    EXPECT_EQ(remove_denied_tools(document, deny_all), 0u) << text;
    EXPECT_EQ(document, before) << text;
  }
  json empty = json::parse(R"({"jsonrpc":"2.0","id":1,"result":{"tools":[]}})");
  EXPECT_EQ(remove_denied_tools(empty, deny_all), 0u);
}

}  // namespace
}  // namespace perimeter::mcpguard
