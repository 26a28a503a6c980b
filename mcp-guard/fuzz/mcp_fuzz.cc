// libFuzzer target over what the guard reads of MCP (docs/mcp-guard.md): every byte that crosses
// the hop reaches these functions, so they must never crash, hang or read out of bounds, and the
// SSE splitter must hand back exactly the bytes it was given, however they were chunked.
//
// Input layout: byte 0 picks how many of the following bytes are chunk sizes (0..7); those
// bytes (each 1..256) are used in turn to cut the rest, the payload, into SSE feeds and HTTP
// reads. The payload is also read as a JSON-RPC body, as an HTTP request and reply the way the
// guard's parsers are set up (Beast, with its limits), and as CIDR text.

#include <algorithm>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/cidr.h"
#include "mcp/jsonrpc_message.h"
#include "mcp/sse_event_splitter.h"
#include "mcp/tool_policy.h"

namespace {

using namespace perimeter;
using namespace perimeter::mcpguard;

void check(bool condition) {
  if (!condition) std::abort();
}

const ToolPolicy& policy() {
  static const ToolPolicy p = [] {
    ToolPolicy policy;
    policy.allow = {"get_*", "list_?", "search_[a-m]*", "*"};
    policy.deny = {"delete_*", "admin_*", "[dD]rop*", "a\\*"};
    return policy;
  }();
  return p;
}

bool same_message(const RpcMessage& a, const RpcMessage& b) {
  return a.kind == b.kind && a.method == b.method && a.id == b.id && a.name == b.name &&
         a.error_code == b.error_code;
}

// The guard reads most bodies without building their document (RpcDocument::kSkip); a body that
// pass and the strict DOM parse disagree on could be read as one tool here and another upstream,
// or get past a refusal. Both must accept and refuse the same bodies, with the same messages.
void check_parse_modes_agree(std::string_view body, std::size_t depth, const RpcParseResult& kept) {
  const RpcParseResult skipped = parse_rpc(body, depth, RpcDocument::kSkip);
  check(skipped.payload.has_value() == kept.payload.has_value());
  if (!kept.payload) {
    check(skipped.error.code == kept.error.code && skipped.error.message == kept.error.message);
    return;
  }
  check(skipped.payload->batch == kept.payload->batch);
  check(skipped.payload->messages.size() == kept.payload->messages.size());
  for (std::size_t i = 0; i < kept.payload->messages.size(); ++i) {
    check(same_message(skipped.payload->messages[i], kept.payload->messages[i]));
  }
}

void fuzz_jsonrpc(std::string_view body) {
  for (const std::size_t depth : {std::size_t{512}, std::size_t{4}}) {
    RpcParseResult result = parse_rpc(body, depth);
    check_parse_modes_agree(body, depth, result);
    if (!result.payload) {
      check(result.error.code == -32700 || result.error.code == -32600);
      check(!result.error.message.empty());
      // An error about any body can be sent back as JSON.
      (void)rpc_error_response(nullptr, result.error.code, result.error.message).dump();
      continue;
    }
    RpcPayload& payload = *result.payload;
    check(!payload.messages.empty());
    check(payload.batch == payload.document.is_array());
    const RpcMessage& first = payload.messages.front();
    check(!routing_header_mismatch(payload, std::nullopt, std::nullopt));
    const auto agree = routing_header_mismatch(
        payload, first.method, first.name.empty() ? std::nullopt : std::optional(first.name));
    if (!payload.batch && first.kind != MessageKind::kResponse) check(!agree);
    (void)routing_header_mismatch(payload, first.method + "x", std::string(body.substr(0, 16)));
    if (const auto m = routing_header_mismatch(payload, std::nullopt, first.name + "\xff")) {
      (void)rpc_error_response(first.id, -32020, *m).dump();
    }
    for (const RpcMessage& message : payload.messages) {
      if (!message.name.empty()) (void)decide_tool(policy(), message.name);
    }
    if (payload.batch) {
      for (auto& member : payload.document) (void)remove_denied_tools(member, policy());
    } else {
      (void)remove_denied_tools(payload.document, policy());
      // Filtering is idempotent: what is left passes.
      check(remove_denied_tools(payload.document, policy()) == 0);
    }
    (void)payload.document.dump();  // the parsed text was UTF-8, so the rewrite dumps
  }
}

void fuzz_sse(std::string_view stream, const std::vector<std::size_t>& chunks) {
  SseEventSplitter chunked(4096);
  std::vector<RawSseEvent> events;
  std::size_t at = 0;
  bool ok = true;
  for (std::size_t i = 0; at < stream.size() && ok; ++i) {
    const std::size_t size = chunks.empty() ? stream.size() : chunks[i % chunks.size()];
    ok = chunked.feed(stream.substr(at, size), &events);
    at += size;
  }
  SseEventSplitter whole(4096);
  std::vector<RawSseEvent> at_once;
  const bool whole_ok = whole.feed(stream, &at_once);
  if (ok) {
    // Byte for byte: the events and what is pending are the input, whatever the chunks.
    std::string joined;
    for (const auto& e : events) {
      check(e.raw.size() <= 4096);
      joined += e.raw;
    }
    check(joined + chunked.pending() == stream);
    check(whole_ok);
    check(at_once.size() == events.size());
    for (std::size_t i = 0; i < events.size(); ++i) {
      check(at_once[i].data == events[i].data && at_once[i].id == events[i].id &&
            at_once[i].event == events[i].event && at_once[i].has_data == events[i].has_data);
    }
  }
  for (const auto& e : events) {
    if (!e.has_data) continue;
    // A rewritten event reads back as the same event.
    SseEventSplitter again(1 << 20);
    std::vector<RawSseEvent> back;
    check(again.feed(serialize_sse_event(e, e.data), &back));
    check(back.size() == 1 && back[0].data == e.data && back[0].event == e.event &&
          back[0].id == e.id && again.pending().empty());
    fuzz_jsonrpc(e.data);
  }
}

namespace http = boost::beast::http;

// The guard's limits on what it reads from either side (mcp-guard/proxy/client_session.cc).
constexpr std::uint32_t kHeaderLimitBytes = 64 * 1024;
constexpr std::uint64_t kBodyLimitBytes = 8 * 1024;

std::optional<std::string> header(const http::fields& fields, std::string_view name) {
  const auto found = fields.find(boost::beast::string_view(name.data(), name.size()));
  if (found == fields.end()) return std::nullopt;
  return std::string(found->value());
}

// Feeds `bytes` to `parser` in the given chunks, as reads off a socket would; returns whether the
// message completed without error.
template <typename Parser>
bool parse_http(Parser& parser, std::string_view bytes, const std::vector<std::size_t>& chunks) {
  std::string pending;
  std::size_t at = 0;
  for (std::size_t i = 0; at < bytes.size(); ++i) {
    const std::size_t size = chunks.empty() ? bytes.size() : chunks[i % chunks.size()];
    pending.append(bytes.substr(at, size));
    at += size;
    boost::beast::error_code error;
    const std::size_t used = parser.put(boost::asio::buffer(pending), error);
    if (error == http::error::need_more) {
      pending.erase(0, used);
      continue;
    }
    if (error) return false;
    pending.erase(0, used);
    if (parser.is_done()) return true;
  }
  return parser.is_done();
}

// A request as the guard reads it: headers and a body under its limits, then the routing
// headers checked against the JSON-RPC body.
void fuzz_http_request(std::string_view bytes, const std::vector<std::size_t>& chunks) {
  http::request_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimitBytes);
  parser.body_limit(kBodyLimitBytes);
  if (!parse_http(parser, bytes, chunks)) return;
  const auto& request = parser.get();
  check(request.body().size() <= kBodyLimitBytes);
  RpcParseResult result = parse_rpc(request.body());
  if (!result.payload) return;
  (void)routing_header_mismatch(*result.payload, header(request, "Mcp-Method"),
                                header(request, "Mcp-Name"));
}

// A reply's head as the guard reads it before choosing JSON, SSE or pass-through; a buffer_body
// parser hands the body out in pieces, which go through the SSE splitter.
void fuzz_http_reply(std::string_view bytes) {
  http::response_parser<http::buffer_body> parser;
  parser.header_limit(kHeaderLimitBytes);
  parser.body_limit(kBodyLimitBytes);
  std::string scratch(512, '\0');
  SseEventSplitter splitter(4096);
  std::vector<RawSseEvent> events;
  std::string pending(bytes);
  for (int rounds = 0; rounds < 4096 && !parser.is_done(); ++rounds) {
    parser.get().body().data = scratch.data();
    parser.get().body().size = scratch.size();
    boost::beast::error_code error;
    const std::size_t used = parser.put(boost::asio::buffer(pending), error);
    pending.erase(0, used);
    if (error && error != http::error::need_buffer) return;
    const std::size_t produced = scratch.size() - parser.get().body().size;
    if (produced > 0 && !splitter.feed(std::string_view(scratch.data(), produced), &events)) return;
    if (used == 0 && produced == 0) return;
  }
}

void fuzz_cidr(std::string_view text) {
  const auto cidr = Cidr::parse(text);
  const auto address = parse_ip_address(text);
  if (address) check(Cidr::parse(text).has_value() && cidr->contains(*address));
  if (!cidr) return;
  const std::string canonical = cidr->to_string();
  const auto again = Cidr::parse(canonical);
  check(again && again->to_string() == canonical);
  (void)cidr->contains(text);
  (void)cidr->contains(std::string_view("::ffff:169.254.169.254"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t count = std::min<std::size_t>(data[0] % 8, size - 1);
  std::vector<std::size_t> chunks;
  for (std::size_t i = 0; i < count; ++i) chunks.push_back(std::size_t{data[1 + i]} + 1);
  const std::string_view payload(reinterpret_cast<const char*>(data) + 1 + count, size - 1 - count);
  fuzz_jsonrpc(payload);
  fuzz_sse(payload, chunks);
  fuzz_http_request(payload, chunks);
  fuzz_http_reply(payload);
  if (payload.size() <= 128) fuzz_cidr(payload);
  return 0;
}
