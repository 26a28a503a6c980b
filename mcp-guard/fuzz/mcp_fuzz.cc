// libFuzzer target over what the guard reads of MCP (docs/mcp-guard.md): every byte that crosses
// the hop reaches these functions, so they must never crash, hang or read out of bounds, and the
// SSE splitter must hand back exactly the bytes it was given, however they were chunked.
//
// Input layout: byte 0 picks how many of the following bytes are chunk sizes (0..7); those
// bytes (each 1..256) are used in turn to cut the rest, the payload, into SSE feeds. The payload is
// also read as a JSON-RPC body and as CIDR text.

#include <algorithm>
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

void fuzz_jsonrpc(std::string_view body) {
  for (const std::size_t depth : {std::size_t{512}, std::size_t{4}}) {
    RpcParseResult result = parse_rpc(body, depth);
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
  if (payload.size() <= 128) fuzz_cidr(payload);
  return 0;
}
