#include "mcp/jsonrpc_message.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace perimeter::mcpguard {
namespace {

using nlohmann::json;

RpcPayload parse_ok(std::string_view body) {
  RpcParseResult result = parse_rpc(body);
  EXPECT_TRUE(result.payload.has_value()) << body << ": " << result.error.message;
  return result.payload ? std::move(*result.payload) : RpcPayload{};
}

RpcParseError parse_error(std::string_view body, std::size_t max_depth = 512) {
  RpcParseResult result = parse_rpc(body, max_depth);
  EXPECT_FALSE(result.payload.has_value()) << body;
  return result.error;
}

TEST(JsonRpcMessageTest, ReadsAToolsCallRequest) {
  const RpcPayload payload = parse_ok(
      R"({"jsonrpc":"2.0","id":7,"method":"tools/call",
          "params":{"name":"get_ticket","arguments":{"id":"T-1"}}})");
  EXPECT_FALSE(payload.batch);
  ASSERT_EQ(payload.messages.size(), 1u);
  const RpcMessage& m = payload.messages[0];
  EXPECT_EQ(m.kind, MessageKind::kRequest);
  EXPECT_EQ(m.method, "tools/call");
  EXPECT_EQ(m.id, json(7));
  EXPECT_EQ(m.name, "get_ticket");
  EXPECT_FALSE(m.error_code.has_value());
  EXPECT_EQ(payload.document["params"]["arguments"]["id"], "T-1");
}

TEST(JsonRpcMessageTest, NamesPromptsAndResourcesAndNothingElse) {
  EXPECT_EQ(parse_ok(R"({"jsonrpc":"2.0","id":"a","method":"prompts/get","params":{"name":"p"}})")
                .messages[0]
                .name,
            "p");
  for (const char* method : {"resources/read", "resources/subscribe", "resources/unsubscribe"}) {
    const std::string body = std::string(R"({"jsonrpc":"2.0","id":1,"method":")") + method +
                             R"(","params":{"uri":"file:///etc/hosts","name":"x"}})";
    const RpcPayload payload = parse_ok(body);
    EXPECT_EQ(payload.messages[0].name, "file:///etc/hosts") << method;
    EXPECT_EQ(payload.messages[0].id, json(1));
  }
  const RpcPayload list =
      parse_ok(R"({"jsonrpc":"2.0","id":null,"method":"tools/list","params":{"name":"x"}})");
  EXPECT_EQ(list.messages[0].kind, MessageKind::kRequest);  // an id of null is still an id
  EXPECT_TRUE(list.messages[0].id.is_null());
  EXPECT_EQ(list.messages[0].name, "");
}

TEST(JsonRpcMessageTest, ReadsNotificationsAndResponses) {
  const RpcMessage notification =
      parse_ok(R"({"jsonrpc":"2.0","method":"notifications/initialized"})").messages[0];
  EXPECT_EQ(notification.kind, MessageKind::kNotification);
  EXPECT_EQ(notification.method, "notifications/initialized");
  EXPECT_TRUE(notification.id.is_null());

  const RpcMessage result =
      parse_ok(R"({"jsonrpc":"2.0","id":"abc","result":{"tools":[]}})").messages[0];
  EXPECT_EQ(result.kind, MessageKind::kResponse);
  EXPECT_EQ(result.id, json("abc"));
  EXPECT_EQ(result.method, "");
  EXPECT_FALSE(result.error_code.has_value());

  const RpcMessage error =
      parse_ok(R"({"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"Method not found"}})")
          .messages[0];
  EXPECT_EQ(error.kind, MessageKind::kResponse);
  EXPECT_EQ(error.error_code, -32601);
  // A response to a request that could not be read has a null id.
  EXPECT_EQ(parse_ok(R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}})")
                .messages[0]
                .error_code,
            -32700);
  EXPECT_EQ(parse_ok(R"({"jsonrpc":"2.0","id":3,"error":{"code":32000,"message":"x"}})")
                .messages[0]
                .error_code,
            32000);
  // A code that is not an integer, or does not fit one, is no code.
  EXPECT_FALSE(
      parse_ok(R"({"jsonrpc":"2.0","id":3,"error":{"code":18446744073709551615,"message":"x"}})")
          .messages[0]
          .error_code.has_value());
  EXPECT_FALSE(parse_ok(R"({"jsonrpc":"2.0","id":3,"error":{"code":1.5,"message":"x"}})")
                   .messages[0]
                   .error_code.has_value());
}

TEST(JsonRpcMessageTest, ReadsABatch) {
  const RpcPayload payload = parse_ok(
      R"([{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
          {"jsonrpc":"2.0","method":"notifications/progress"},
          {"jsonrpc":"2.0","id":2,"result":{}}])");
  EXPECT_TRUE(payload.batch);
  ASSERT_EQ(payload.messages.size(), 3u);
  EXPECT_EQ(payload.messages[0].name, "a");
  EXPECT_EQ(payload.messages[1].kind, MessageKind::kNotification);
  EXPECT_EQ(payload.messages[2].kind, MessageKind::kResponse);
  EXPECT_EQ(payload.messages[2].id, json(2));
}

TEST(JsonRpcMessageTest, RefusesADuplicatedNameInsideParams) {
  const RpcParseError error = parse_error(
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call",
          "params":{"name":"get_ticket","name":"delete_user"}})");
  EXPECT_EQ(error.code, -32600);
  EXPECT_NE(error.message.find("duplicated key \"name\""), std::string::npos) << error.message;
  // The same key spelt with an escape is the same key.
  EXPECT_EQ(parse_error(R"({"jsonrpc":"2.0","id":1,"method":"tools/call",
                            "params":{"name":"a","n\u0061me":"delete_user"}})")
                .code,
            -32600);
  // At the top and deep down.
  EXPECT_EQ(parse_error(R"({"jsonrpc":"2.0","id":1,"id":2,"method":"ping"})").code, -32600);
  EXPECT_EQ(
      parse_error(R"({"jsonrpc":"2.0","method":"m","params":{"a":[{"b":{"c":1,"c":2}}]}})").code,
      -32600);
  EXPECT_EQ(parse_error(R"([{"jsonrpc":"2.0","method":"m"},{"jsonrpc":"2.0","jsonrpc":"2.0",
                            "method":"m"}])")
                .code,
            -32600);
}

TEST(JsonRpcMessageTest, KeysDifferingInCaseAreDifferentKeys) {
  // JSON keys are case-sensitive for the server too: it reads "name", as the guard does.
  const RpcPayload payload = parse_ok(
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call",
          "params":{"name":"get_ticket","Name":"delete_user"}})");
  EXPECT_EQ(payload.messages[0].name, "get_ticket");
  // The same key in different objects is no duplicate.
  parse_ok(R"({"jsonrpc":"2.0","id":1,"method":"m","params":{"a":{"x":1},"b":{"x":1}}})");
}

TEST(JsonRpcMessageTest, RefusesDeepNestingWithoutCrashing) {
  for (const std::size_t depth : {513u, 100000u, 1000000u}) {
    const std::string body = R"({"jsonrpc":"2.0","method":"m","params":)" +
                             std::string(depth, '[') + std::string(depth, ']') + "}";
    const RpcParseError error = parse_error(body);
    EXPECT_EQ(error.code, -32600) << depth;
    EXPECT_NE(error.message.find("nested deeper than 512"), std::string::npos) << error.message;
  }
  const std::string objects = R"({"jsonrpc":"2.0","method":"m","params":)" +
                              [] {
                                std::string s;
                                for (int i = 0; i < 100000; ++i) s += R"({"a":)";
                                return s;
                              }() +
                              "1" + std::string(100000, '}') + "}";
  EXPECT_EQ(parse_error(objects).code, -32600);
  // Unterminated deep nesting is refused for its depth before the parser finds the end missing.
  EXPECT_EQ(parse_error(std::string(100000, '[')).code, -32600);
  // The limit counts the message object itself: depth 3 is the object, params and one array.
  const std::string three = R"({"jsonrpc":"2.0","method":"m","params":{"a":[1]}})";
  EXPECT_TRUE(parse_rpc(three, 3).payload.has_value());
  EXPECT_EQ(parse_error(three, 2).code, -32600);
}

TEST(JsonRpcMessageTest, RefusesBatchesItCannotRead) {
  EXPECT_EQ(parse_error("[]").code, -32600);
  const RpcParseError mixed =
      parse_error(R"([{"jsonrpc":"2.0","id":1,"method":"tools/list"},"tools/call"])");
  EXPECT_EQ(mixed.code, -32600);
  EXPECT_NE(mixed.message.find("batch member 1"), std::string::npos) << mixed.message;
  EXPECT_EQ(parse_error(R"([{"jsonrpc":"2.0","id":1,"method":"tools/list"},
                            [{"jsonrpc":"2.0","id":2,"method":"tools/list"}]])")
                .code,
            -32600);
  EXPECT_EQ(parse_error(R"([{"jsonrpc":"2.0","id":1,"method":"tools/list"},null])").code, -32600);
}

TEST(JsonRpcMessageTest, RefusesWhatIsNotJson) {
  for (const char* body : {"", " ", "{", R"({"jsonrpc":"2.0","method":"m"} x)", "{'a':1}",
                           R"({"jsonrpc":"2.0","method":"m",})", "\xff\xfe", R"({"a":"\xc3"})",
                           R"({"jsonrpc":"2.0","method":"m"}{"jsonrpc":"2.0","method":"m"})"}) {
    const RpcParseError error = parse_error(body);
    EXPECT_EQ(error.code, -32700) << body;
    EXPECT_TRUE(error.message.starts_with("not JSON")) << error.message;
    // The message can travel in a JSON-RPC error even when the body was not UTF-8.
    EXPECT_NO_THROW(rpc_error_response(nullptr, error.code, error.message).dump());
  }
}

TEST(JsonRpcMessageTest, RefusesStringsThatAreNotUnicode) {
  for (const std::string& body : {std::string(R"({"jsonrpc":"2.0","method":")") + "\xc3" + "\"}",
                                  std::string(R"({"jsonrpc":"2.0","method":")") + "\xed\xa0\x80\"}",
                                  std::string(R"({"jsonrpc":"2.0","method":"\ud800"})"),
                                  std::string(R"({"jsonrpc":"2.0","method":"a)") + '\0' + "\"}"}) {
    const RpcParseError error = parse_error(body);
    EXPECT_EQ(error.code, -32700);
    EXPECT_NO_THROW(rpc_error_response(nullptr, error.code, error.message).dump());
  }
}

TEST(JsonRpcMessageTest, TheDocumentIsTheBodyToRewrite) {
  RpcPayload payload = parse_ok(R"({"jsonrpc":"2.0","id":1,"result":{"tools":[
      {"name":"get_ticket","description":"caf\u00e9 \ud83d\ude00"},{"name":"x"}]}})");
  payload.document["result"]["tools"].erase(1);
  EXPECT_EQ(payload.document.dump(),
            "{\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"description\":"
            "\"caf\u00e9 \U0001F600\",\"name\":\"get_ticket\"}]}}");
}

TEST(JsonRpcMessageTest, RefusesJsonThatIsNotJsonRpc) {
  const char* bodies[] = {
      R"("tools/call")",
      "42",
      "null",
      R"({"id":1,"method":"ping"})",                     // no jsonrpc
      R"({"jsonrpc":"1.0","id":1,"method":"ping"})",     // wrong version
      R"({"jsonrpc":2.0,"id":1,"method":"ping"})",       // version not a string
      R"({"jsonrpc":"2.0","id":1,"method":7})",          // method not a string
      R"({"jsonrpc":"2.0","id":1,"method":null})",       // method not a string
      R"({"jsonrpc":"2.0","id":{"a":1},"method":"m"})",  // id an object
      R"({"jsonrpc":"2.0","id":[1],"result":{}})",       // id an array
      R"({"jsonrpc":"2.0","id":true,"method":"m"})",     // id a boolean
      R"({"jsonrpc":"2.0","id":1})",                     // neither request nor response
      R"({"jsonrpc":"2.0","result":{}})",                // response without id
      R"({"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/list","result":{}})",
      // A name that is not a string: a JavaScript server's handlers[["delete_user"]] is
      // handlers["delete_user"].
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_user"]}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}})",
      R"({"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":{"a":1}}})",
      R"({"jsonrpc":"2.0","method":"tools/call","params":{"name":true}})",
      R"({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":["db://x"]}})",
  };
  for (const char* body : bodies) EXPECT_EQ(parse_error(body).code, -32600) << body;
}

TEST(JsonRpcMessageTest, AMissingNameIsLeftToTheServer) {
  // The server answers its own invalid-params error; the guard's policy sees an empty name.
  for (const char* body : {
           R"({"jsonrpc":"2.0","id":1,"method":"tools/call"})",
           R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_user"]})",
           R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"delete_user"}})",
           R"({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}})",
       }) {
    const RpcPayload payload = parse_ok(body);
    ASSERT_EQ(payload.messages.size(), 1u);
    EXPECT_EQ(payload.messages[0].name, "") << body;
    // A routing header naming something still disagrees with it.
    EXPECT_TRUE(
        routing_header_mismatch(payload, payload.messages[0].method, "delete_user").has_value());
  }
  // Notifications are named too: a server may run a tools/call that arrives without an id.
  EXPECT_EQ(parse_ok(R"({"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_user"}})")
                .messages[0]
                .name,
            "delete_user");
}

TEST(JsonRpcMessageTest, RoutingHeadersMustAgreeWithTheBody) {
  const RpcPayload call =
      parse_ok(R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_ticket"}})");
  EXPECT_EQ(routing_header_mismatch(call, std::nullopt, std::nullopt), std::nullopt);
  EXPECT_EQ(routing_header_mismatch(call, "tools/call", "get_ticket"), std::nullopt);
  EXPECT_EQ(routing_header_mismatch(call, "tools/call", std::nullopt), std::nullopt);
  EXPECT_EQ(routing_header_mismatch(call, std::nullopt, "get_ticket"), std::nullopt);

  const auto name = routing_header_mismatch(call, "tools/call", "delete_user");
  ASSERT_TRUE(name.has_value());
  EXPECT_EQ(*name,
            R"(Mcp-Name header "delete_user" disagrees with the body's params.name "get_ticket")");
  const auto method = routing_header_mismatch(call, "tools/list", "get_ticket");
  ASSERT_TRUE(method.has_value());
  EXPECT_EQ(*method,
            R"(Mcp-Method header "tools/list" disagrees with the body's method "tools/call")");
  // Exact comparison: tool names are case-sensitive.
  EXPECT_TRUE(routing_header_mismatch(call, "tools/call", "Get_Ticket").has_value());
  EXPECT_TRUE(routing_header_mismatch(call, "Tools/Call", std::nullopt).has_value());

  const RpcPayload read = parse_ok(
      R"({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"db://orders"}})");
  EXPECT_EQ(routing_header_mismatch(read, "resources/read", "db://orders"), std::nullopt);
  const auto uri = routing_header_mismatch(read, "resources/read", "db://users");
  ASSERT_TRUE(uri.has_value());
  EXPECT_NE(uri->find("params.uri \"db://orders\""), std::string::npos) << *uri;

  const RpcPayload list = parse_ok(R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})");
  const auto nameless = routing_header_mismatch(list, "tools/list", "get_ticket");
  ASSERT_TRUE(nameless.has_value());
  EXPECT_NE(nameless->find("names nothing"), std::string::npos) << *nameless;
  EXPECT_TRUE(routing_header_mismatch(list, std::nullopt, "").has_value());

  const RpcPayload batch = parse_ok(R"([{"jsonrpc":"2.0","id":1,"method":"tools/list"}])");
  EXPECT_TRUE(routing_header_mismatch(batch, "tools/list", std::nullopt).has_value());
  EXPECT_EQ(routing_header_mismatch(batch, std::nullopt, std::nullopt), std::nullopt);

  const RpcPayload response = parse_ok(R"({"jsonrpc":"2.0","id":1,"result":{}})");
  EXPECT_TRUE(routing_header_mismatch(response, "tools/list", std::nullopt).has_value());

  // A header that is not UTF-8 still gives a message that can be sent as JSON.
  const auto binary = routing_header_mismatch(call, "tools/call", std::string("\xff\x00x", 3));
  ASSERT_TRUE(binary.has_value());
  EXPECT_NO_THROW(rpc_error_response(1, -32020, *binary).dump());
}

TEST(JsonRpcMessageTest, BuildsErrorResponses) {
  EXPECT_EQ(rpc_error_response(json(7), -32001, "tool \"x\" is denied").dump(),
            R"({"error":{"code":-32001,"message":"tool \"x\" is denied"},"id":7,"jsonrpc":"2.0"})");
  EXPECT_EQ(rpc_error_response(nullptr, -32700, "not JSON"),
            json::parse(R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700,
                            "message":"not JSON"}})"));
  EXPECT_EQ(rpc_error_response("req-1", -32600, "x")["id"], "req-1");
  // Long messages are kept whole.
  const std::string long_message(1000, 'm');
  EXPECT_EQ(rpc_error_response(1, -32600, long_message)["error"]["message"], long_message);
}

// parse_rpc without the document must answer exactly as with it: the same refusals (code and
// message) and, for what it accepts, the same messages.
void expect_same_without_document(std::string_view body, std::size_t max_depth = 512) {
  const RpcParseResult dom = parse_rpc(body, max_depth, RpcDocument::kKeep);
  const RpcParseResult scan = parse_rpc(body, max_depth, RpcDocument::kSkip);
  ASSERT_EQ(dom.payload.has_value(), scan.payload.has_value()) << body;
  if (!dom.payload) {
    EXPECT_EQ(dom.error.code, scan.error.code) << body;
    EXPECT_EQ(dom.error.message, scan.error.message) << body;
    return;
  }
  // Without the document a caller must not use it (it is built only when the DOM path decided).
  EXPECT_TRUE(scan.payload->document.is_null() || scan.payload->document == dom.payload->document)
      << body;
  EXPECT_EQ(dom.payload->batch, scan.payload->batch) << body;
  ASSERT_EQ(dom.payload->messages.size(), scan.payload->messages.size()) << body;
  for (std::size_t i = 0; i < dom.payload->messages.size(); ++i) {
    const RpcMessage& a = dom.payload->messages[i];
    const RpcMessage& b = scan.payload->messages[i];
    EXPECT_EQ(a.kind, b.kind) << body;
    EXPECT_EQ(a.method, b.method) << body;
    EXPECT_EQ(a.id, b.id) << body;
    EXPECT_EQ(a.id.type(), b.id.type()) << body;
    EXPECT_EQ(a.name, b.name) << body;
    EXPECT_EQ(a.error_code, b.error_code) << body;
  }
}

// Every prefix and every one-byte deletion of `body`, at two depth limits.
void expect_same_without_document_mutated(const std::string& body) {
  for (const std::size_t depth : {std::size_t{512}, std::size_t{2}, std::size_t{4}}) {
    expect_same_without_document(body, depth);
    for (std::size_t cut = 0; cut < body.size(); ++cut) {
      expect_same_without_document(body.substr(0, cut), depth);
      expect_same_without_document(body.substr(0, cut) + body.substr(cut + 1), depth);
    }
  }
}

TEST(JsonRpcMessageTest, ReadsWithoutTheDocumentAsWithIt) {
  const std::vector<std::string> bodies = {
      R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}})",
      R"({"jsonrpc":"2.0","id":"a","method":"prompts/get","params":{"name":"p"}})",
      R"({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///x","name":7}})",
      R"({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x","uri":["a"]}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_user"]}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"a":1}}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo"]})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call"})",
      R"({"jsonrpc":"2.0","method":"notifications/initialized"})",
      R"({"jsonrpc":"2.0","id":null,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":1.5,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":-3,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":true,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":{"a":1},"method":"ping"})",
      R"({"jsonrpc":"2.0","id":[1],"method":"ping"})",
      R"({"jsonrpc":"2.0","id":1,"method":7})",
      R"({"jsonrpc":"2.0","id":1,"method":{"x":1}})",
      R"({"jsonrpc":"2.0","id":1,"method":"ping","result":{}})",
      R"({"jsonrpc":"2.0","id":1,"method":"ping","error":null})",
      R"({"jsonrpc":2.0,"id":1,"method":"ping"})",
      R"({"jsonrpc":"2.1","id":1,"method":"ping"})",
      R"({"jsonrpc":["2.0"],"id":1,"method":"ping"})",
      R"({"id":1,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}})",
      R"({"jsonrpc":"2.0","id":1,"result":null})",
      R"({"jsonrpc":"2.0","result":{}})",
      R"({"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1}})",
      R"({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}})",
      R"({"jsonrpc":"2.0","id":1,"error":{"code":9223372036854775808}})",
      R"({"jsonrpc":"2.0","id":1,"error":{"code":9223372036854775807}})",
      R"({"jsonrpc":"2.0","id":1,"error":{"code":1.5}})",
      R"({"jsonrpc":"2.0","id":1,"error":{"code":"1"}})",
      R"({"jsonrpc":"2.0","id":1,"error":{"code":{"code":1}}})",
      R"({"jsonrpc":"2.0","id":1,"error":"bad"})",
      R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700}})",
      R"({"jsonrpc":"2.0"})",
      R"({})",
      R"([])",
      R"([1])",
      R"(["x"])",
      R"([[]])",
      R"([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}])",
      R"([{"jsonrpc":"2.0","id":1,"method":"ping"},7])",
      R"([{"jsonrpc":"2.0","id":1,"method":"ping"},"x"])",
      R"([{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":3}}])",
      R"("just a string")",
      R"(42)",
      R"(null)",
      R"({"jsonrpc":"2.0","id":1,"method":"ping"} trailing)",
      // Duplicated keys, at any depth and in any spelling the lexer unescapes alike.
      R"({"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}})",
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}})",
      R"({"jsonrpc":"2.0","id":1,"m\u0065thod":"tools/call","method":"ping"})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"b":{"c":1,"c":2}}}})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"b":1},{"b":1,"b":2}]}})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"k":1},"b":{"k":1}}})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"k":1},"k":1}})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"":1,"":2}})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"\ud83d\ude00":1,"😀":2}})",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\ud800"}})",
      "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"a\":\"\xff\"}}",
      R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[[[[[[1]]]]]]}})",
  };
  for (const auto& body : bodies) expect_same_without_document_mutated(body);

  // Many keys in one object (the pass hands those to the DOM parser), with and without a
  // duplicate among them.
  std::string wide = R"({"jsonrpc":"2.0","id":1,"method":"x","params":{)";
  for (int i = 0; i < 100; ++i) wide += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  expect_same_without_document(wide + R"("k5":0}})");
  expect_same_without_document(wide + R"("end":0}})");
  // Deep nesting, at and past the limit.
  for (const std::size_t depth :
       {std::size_t{10}, std::size_t{511}, std::size_t{512}, std::size_t{513}, std::size_t{5000}}) {
    const std::string nested = R"({"jsonrpc":"2.0","id":1,"method":"x","params":)" +
                               std::string(depth, '[') + std::string(depth, ']') + "}";
    expect_same_without_document(nested);
    expect_same_without_document(nested, 8);
  }
}

// The pass without the document reads the JSON itself (not with nlohmann's lexer): what the lexer
// and parser refuse, it must not accept, and the values it reads must convert alike.
TEST(JsonRpcMessageTest, ReadsTheEdgesOfJsonAsNlohmannDoes) {
  const std::vector<std::string> values = {
      // Numbers: integer bounds, overflow into a double, doubles that overflow, bad forms.
      "0",
      "-0",
      "7",
      "-7",
      "00",
      "-",
      "01",
      "1.",
      ".5",
      "1.5",
      "-1.5",
      "1e5",
      "1E5",
      "1e+5",
      "1e-5",
      "1e",
      "1e+",
      "1.0e400",
      "1e400",
      "-1e400",
      "1.7976931348623157e308",
      "1.7976931348623159e308",
      "2e-400",
      "999999999999999999",
      "1000000000000000000",
      "-999999999999999999",
      "9223372036854775807",
      "9223372036854775808",
      "-9223372036854775808",
      "-9223372036854775809",
      "18446744073709551615",
      "18446744073709551616",
      "123456789012345678901234567890",
      std::string(400, '9'),
      "-" + std::string(400, '9'),
      "+1",
      "0x10",
      "1.5.5",
      "--1",
      "1e5e5",
      "Infinity",
      "NaN",
      // Literals.
      "true",
      "false",
      "null",
      "tru",
      "nul",
      "truex",
      "True",
      "nulll",
      // Strings: escapes, surrogates, control characters, UTF-8 at each edge of the lexer's table.
      R"("")",
      R"("\"\\\/\b\f\n\r\t")",
      R"("\u0041\u00e9\uFFFF\u0000")",
      R"("\x")",
      R"("\u12")",
      R"("\u12G4")",
      R"("\ud83d\ude00")",
      R"("\ud83d")",
      R"("\ud83dx")",
      R"("\ud83d\u0041")",
      R"("\ude00")",
      R"("\ud83d\ud83d")",
      R"("\ud83d\")",
      "\"a\tb\"",
      "\"a\x01\"",
      "\"a\x7f\"",
      "\"\xc2\x80\"",
      "\"\xc1\xbf\"",
      "\"\xdf\xbf\"",
      "\"\xe0\xa0\x80\"",
      "\"\xe0\x9f\xbf\"",
      "\"\xed\x9f\xbf\"",
      "\"\xed\xa0\x80\"",
      "\"\xee\x80\x80\"",
      "\"\xef\xbf\xbf\"",
      "\"\xf0\x90\x80\x80\"",
      "\"\xf0\x8f\xbf\xbf\"",
      "\"\xf4\x8f\xbf\xbf\"",
      "\"\xf4\x90\x80\x80\"",
      "\"\xf5\x80\x80\x80\"",
      "\"\x80\"",
      "\"\xc2\"",
      "\"\xe1\x80\"",
      "\"abc",
      // Containers and separators.
      "[]",
      "{}",
      "[1,]",
      "[,1]",
      "[1 2]",
      "{\"a\":1,}",
      "{\"a\" 1}",
      "{\"a\":}",
      "{1:2}",
      "{\"a\":1 \"b\":2}",
      "[[],[{}]]",
      " [ 1 , { \"a\" : [ ] } ] ",
      "[\f1]",
      "[1]]",
      "{\"a\":1}}",
  };
  for (const auto& value : values) {
    expect_same_without_document(R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"a":)" + value +
                                 "}}");
    expect_same_without_document(R"({"jsonrpc":"2.0","id":)" + value + R"(,"method":"ping"})");
    expect_same_without_document(R"({"jsonrpc":"2.0","id":1,"error":{"code":)" + value + "}}");
    expect_same_without_document(R"({"jsonrpc":"2.0","id":1,"method":)" + value + "}");
    expect_same_without_document(
        R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":)" + value + "}}");
  }
  // A byte-order mark, whole or cut, and whitespace around the body.
  const std::string message = R"({"jsonrpc":"2.0","id":1,"method":"ping"})";
  for (const std::string& prefix : {std::string("\xef\xbb\xbf"), std::string("\xef\xbb"),
                                    std::string(" \t\r\n"), std::string("\f")}) {
    expect_same_without_document(prefix + message);
    expect_same_without_document(message + prefix);
  }
  // Keys with escapes (the pass leaves them to the DOM parser) and strings it must read.
  expect_same_without_document(R"({"jsonrpc":"2.0","id":"\u0061","method":"p\u0069ng"})");
  expect_same_without_document(
      R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e\"cho"}})");
  expect_same_without_document(R"({"json\u0072pc":"2.0","id":1,"method":"ping"})");
}

TEST(JsonRpcMessageTest, ReadsTheFuzzCorpusWithoutTheDocumentAsWithIt) {
  const char* source = std::getenv("PERIMETER_SOURCE_DIR");
  ASSERT_NE(source, nullptr) << "PERIMETER_SOURCE_DIR is not set (run via ctest)";
  const std::filesystem::path corpus = std::filesystem::path(source) / "mcp-guard/fuzz/corpus";
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    const std::string input = text.str();
    // The fuzz input's payload starts after its chunk-size bytes; every start is tried.
    for (std::size_t start = 0; start < std::min<std::size_t>(input.size(), 9); ++start) {
      expect_same_without_document_mutated(input.substr(start));
    }
    ++files;
  }
  EXPECT_GT(files, 10u);
}

}  // namespace
}  // namespace perimeter::mcpguard
