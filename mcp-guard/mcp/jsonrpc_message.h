#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::mcpguard {

// What the guard needs to know of one JSON-RPC message crossing the hop.
enum class MessageKind { kRequest, kNotification, kResponse };

struct RpcMessage {
  MessageKind kind = MessageKind::kRequest;
  std::string method;  // requests and notifications; empty for responses
  nlohmann::json id;   // requests and responses (string or number); null for notifications
  // The object the request acts on: params.name for tools/call and prompts/get, params.uri for
  // resources/read, resources/subscribe and resources/unsubscribe. Empty otherwise.
  std::string name;
  // Responses: the error's code when the response is an error.
  std::optional<std::int64_t> error_code;
};

// A parsed HTTP body or SSE `data`: one message or a batch, and the document itself so a
// caller can rewrite it (tools/list filtering) and serialize it again.
struct RpcPayload {
  bool batch = false;
  std::vector<RpcMessage> messages;
  nlohmann::json document;  // with RpcDocument::kSkip: not to be used (null, most often)
};

// Whether parse_rpc builds the document. A caller that only needs the messages' fields (no
// audit at level full, no tools/list reply to filter) skips it: the body is then read once
// without building a DOM, and only what is refused (or unusual) is read again with the DOM
// parser, so the two answer alike.
enum class RpcDocument { kKeep, kSkip };

// Why a body is not JSON-RPC the guard can read; `code` is the JSON-RPC error to answer with
// (-32700 not JSON, -32600 not a valid request).
struct RpcParseError {
  int code = -32700;
  std::string message;
};

// Parses strictly: a duplicated object key anywhere is an error (parsers disagree on which copy
// wins, so a body the guard reads as one tool could be another tool to the server), as are nesting
// deeper than `max_depth`, an empty batch, a member of a batch that is not an object, a message
// without `"jsonrpc": "2.0"`, a request whose method is not a string, an id that is neither string,
// number nor null, and a message that is neither a request nor a response. Also refused: a
// message with both a `method` and a `result`/`error` (read as a request here and as a response
// elsewhere), and a `params.name`/`params.uri` that is present but not a string (an absent one
// leaves `name` empty for the server to refuse). Never throws. With RpcDocument::kKeep it costs
// about what nlohmann::json::parse of the same body costs (one pass, strings moved from the
// lexer); with kSkip an accepted body costs one pass and no DOM, a refused one two passes.
struct RpcParseResult {
  std::optional<RpcPayload> payload;
  RpcParseError error;  // meaningful when !payload
};
RpcParseResult parse_rpc(std::string_view body, std::size_t max_depth = 512,
                         RpcDocument document = RpcDocument::kKeep);

// The 2026-07-28 routing headers against the body they came with. `mcp_method`/`mcp_name` are the
// header values (nullopt when the header is absent). Returns an error message when a present
// header disagrees with the body (a batch cannot be described by them: any routing header on a
// batch disagrees), nullopt when they agree or are absent.
std::optional<std::string> routing_header_mismatch(const RpcPayload& payload,
                                                   const std::optional<std::string>& mcp_method,
                                                   const std::optional<std::string>& mcp_name);

// A JSON-RPC error response for `id` (null when the request could not be read).
nlohmann::json rpc_error_response(const nlohmann::json& id, int code, std::string_view message);

}  // namespace perimeter::mcpguard
