#include "proxy/client_session.h"

#include <malloc.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <iterator>
#include <limits>

#include "mcp/tool_policy.h"
#include "proxy/field_lookup.h"
#include "proxy/hop_by_hop.h"

namespace perimeter::mcpguard {
namespace {

using namespace std::string_view_literals;

// One upstream read of a streamed reply; also the most a session holds of it at once. Taken when
// a stream starts (not zero-filled: only the bytes read are touched) and given back when it ends
// (SpareChunks).
constexpr std::size_t kChunkBytes = 16 * 1024;
constexpr std::size_t kJsonReadBytes = 64 * 1024;
constexpr std::uint32_t kHeaderLimitBytes = 64 * 1024;
constexpr std::size_t kMaxJsonDepth = 512;  // parse_rpc's default
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::string_view kBadRequest =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    "Connection: close\r\n\r\nBad Request\n";

constexpr int kRpcInvalidRequest = -32600;
constexpr int kRpcHeaderMismatch = -32020;
constexpr int kRpcDenied = -32001;
constexpr int kRpcRateLimited = -32002;
constexpr int kRpcUpstream = -32003;

// ASCII only, as HTTP's tokens are (std::tolower is a call per byte).
char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Peers mostly spell a name as the guard does: equal bytes are passed without folding them.
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i] && ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// Bytes the request parser refused (a header line without a colon, a bad request line, headers
// over the limit, a bad chunk), as opposed to a client that went away or timed out.
bool is_malformed_http(const beast::error_code& error) {
  if (!error || error.category() != http::make_error_code(http::error::bad_field).category()) {
    return false;
  }
  return error != http::error::end_of_stream && error != http::error::partial_message &&
         error != http::error::need_more && error != http::error::need_buffer &&
         error != http::error::body_limit;
}

// A head's text is sized first and then copied piece by piece into place: an append per piece
// (four a field) checked capacity and size each time, a few hundred instructions a head.
char* put(char* at, beast::string_view piece) {
  std::memcpy(at, piece.data(), piece.size());
  return at + piece.size();
}

// The bytes of the fields' lines and of the empty line that ends the head.
std::size_t fields_bytes(const GuardFields& fields) {
  std::size_t bytes = 2;
  for (const auto& field : fields) bytes += field.name_string().size() + field.value().size() + 4;
  return bytes;
}

// The fields' lines and the empty line after them, from `at`, which has fields_bytes() of room.
void put_fields(const GuardFields& fields, char* at) {
  for (const auto& field : fields) {
    at = put(at, field.name_string());
    *at++ = ':';
    *at++ = ' ';
    at = put(at, field.value());
    *at++ = '\r';
    *at++ = '\n';
  }
  *at++ = '\r';
  *at = '\n';
}

// A reply's head as the guard sends it: always HTTP/1.1 (a chunked reply needs it), in place of
// `*out`'s text.
void serialize_head(const http::response_header<GuardFields>& head, std::string* out) {
  beast::string_view reason = head.reason();
  if (reason.empty()) reason = http::obsolete_reason(head.result());
  char status[8];
  const beast::string_view code(
      status, static_cast<std::size_t>(
                  std::to_chars(status, status + sizeof status, head.result_int()).ptr - status));
  constexpr beast::string_view kVersion = "HTTP/1.1 ";
  const std::size_t line = kVersion.size() + code.size() + 1 + reason.size() + 2;
  std::string& text = *out;
  text.clear();
  text.resize(line + fields_bytes(head));
  char* at = put(text.data(), kVersion);
  at = put(at, code);
  *at++ = ' ';
  at = put(at, reason);
  *at++ = '\r';
  *at++ = '\n';
  put_fields(head, at);
}

// A request's head as Beast's serializer writes it (the guard always sends HTTP/1.1), in one
// buffer: one iovec instead of one per field, and no serializer built per request.
void serialize_request_head(const http::request_header<GuardFields>& head, std::string* text) {
  const auto method = head.method_string();
  const auto target = head.target();
  constexpr beast::string_view kVersion = " HTTP/1.1\r\n";
  const std::size_t line = method.size() + 1 + target.size() + kVersion.size();
  text->clear();
  text->resize(line + fields_bytes(head));
  char* at = put(text->data(), method);
  *at++ = ' ';
  at = put(at, target);
  at = put(at, kVersion);
  put_fields(head, at);
}

// Read chunks of streams that ended, kept by each I/O thread for its next stream: glibc caches
// no block this large per thread, so each stream's allocation and free of one cost more than the
// rest of the stream's buffers together. A few spares a thread bound what is kept.
class SpareChunks {
 public:
  static std::unique_ptr<char[]> take() {
    auto& spares = of_this_thread();
    if (spares.empty()) return std::make_unique_for_overwrite<char[]>(kChunkBytes);
    auto chunk = std::move(spares.back());
    spares.pop_back();
    return chunk;
  }
  static void give_back(std::unique_ptr<char[]> chunk) {
    constexpr std::size_t kMostSpares = 16;  // 256 KiB a thread at most
    auto& spares = of_this_thread();
    if (chunk && spares.size() < kMostSpares) spares.push_back(std::move(chunk));
  }

 private:
  static std::vector<std::unique_ptr<char[]>>& of_this_thread() {
    thread_local std::vector<std::unique_ptr<char[]>> spares;
    return spares;
  }
};

// Emptied, and its memory released unless it is small enough to keep for the next exchange.
void keep_small_buffer(std::string& buffer) {
  constexpr std::size_t kKeptBytes = 1024;
  if (buffer.capacity() > kKeptBytes) {
    buffer = {};
  } else {
    buffer.clear();
  }
}

bool istarts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

// The MCP headers a request's audit lines and checks read, found in one pass over the fields (a
// lookup by a name Beast does not know is a tree search comparing names case-insensitively at
// each step). Beast knows none of them, so a field it knows (Host, Content-Type, ...) is passed
// over by its enum, without comparing names. The first of a repeated header counts, as with a
// lookup.
struct McpHeaders {
  std::optional<std::string> session;
  std::optional<std::string> protocol_version;
  std::optional<std::string> method;
  std::optional<std::string> name;
};

McpHeaders mcp_headers(const GuardFields& fields) {
  McpHeaders found;
  for (const auto& field : fields) {
    if (field.name() != http::field::unknown) continue;
    const auto name_text = field.name_string();
    const std::string_view name(name_text.data(), name_text.size());
    std::optional<std::string>* slot = nullptr;
    if (iequals(name, "Mcp-Session-Id")) {
      slot = &found.session;
    } else if (iequals(name, "MCP-Protocol-Version")) {
      slot = &found.protocol_version;
    } else if (iequals(name, "Mcp-Method")) {
      slot = &found.method;
    } else if (iequals(name, "Mcp-Name")) {
      slot = &found.name;
    }
    if (slot != nullptr && !*slot) *slot = std::string(field.value());
  }
  return found;
}

std::optional<std::string> header(const GuardFields& fields, std::string_view name) {
  const auto found = fields.find(beast::string_view(name.data(), name.size()));
  if (found == fields.end()) return std::nullopt;
  return std::string(found->value());
}

// Host becomes the upstream's authority and the client's Host goes to X-Forwarded-Host, as
// set("X-Forwarded-Host", host) then set(field::host, authority) would leave them: every earlier
// copy of either gone, the new ones last. Beast's set() finds the copies to erase by searching
// its tree by the name's text (and, for a name it does not know, its table of names first),
// several hundred instructions each; here the few fields are walked once per name.
void point_host_at_upstream(GuardFields& fields, std::string_view authority) {
  constexpr beast::string_view kForwardedHost = "X-Forwarded-Host";
  if (const auto* host = find_field(fields, http::field::host)) {
    for (auto it = fields.begin(); it != fields.end();) {
      const auto name = it->name_string();
      if (it->name() == http::field::unknown &&
          iequals(std::string_view(name.data(), name.size()),
                  std::string_view(kForwardedHost.data(), kForwardedHost.size()))) {
        it = fields.erase(it);
      } else {
        ++it;
      }
    }
    fields.insert(http::field::unknown, kForwardedHost, host->value());
  }
  for (auto it = fields.begin(); it != fields.end();) {
    if (it->name() == http::field::host) {
      it = fields.erase(it);
    } else {
      ++it;
    }
  }
  fields.insert(http::field::host, "Host", beast::string_view(authority.data(), authority.size()));
}

// A record's name as a view (no copy), empty when it has none.
std::string_view name_or_empty(const std::optional<std::string>& name) {
  return name ? std::string_view(*name) : std::string_view();
}

// Whether `fields` say exactly this Content-Length, with no Transfer-Encoding: prepare_payload()
// would leave the message as it is, yet it erases and inserts the field again (an allocation and
// two tree operations per message), and most messages carry the right length already.
bool has_content_length(const GuardFields& fields, std::size_t length) {
  // One pass over the few fields, comparing their enum: cheaper than two tree searches by name.
  const GuardFields::value_type* content_length = nullptr;
  for (const auto& field : fields) {
    if (field.name() == http::field::transfer_encoding) return false;
    if (field.name() != http::field::content_length) continue;
    if (content_length != nullptr) return false;  // more than one
    content_length = &field;
  }
  if (content_length == nullptr) return false;
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, length).ptr;
  const auto value = content_length->value();
  return std::string_view(value.data(), value.size()) ==
         std::string_view(digits, static_cast<std::size_t>(end - digits));
}

// keep_alive(true) on an HTTP/1.1 message without a Connection field changes nothing but costs
// a parse of the (absent) field and a lookup to erase it.
template <typename Message>
void keep_alive(Message& message, bool keep_alive) {
  if (keep_alive && message.version() == 11 &&
      find_field(message, http::field::connection) == nullptr) {
    return;
  }
  message.keep_alive(keep_alive);
}

bool looks_like_json(std::string_view text) {
  for (const char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{' || c == '[';
  }
  return false;
}

nlohmann::json& message_document(RpcPayload& payload, std::size_t index) {
  return payload.batch ? payload.document.at(index) : payload.document;
}

// What a full-level line holds of a request: the tool's arguments, or the params of others.
nlohmann::json audited_arguments(const nlohmann::json& message, std::string_view method) {
  const auto params = message.find("params");
  if (params == message.end()) return nullptr;
  if (method == "tools/call" && params->is_object()) {
    const auto arguments = params->find("arguments");
    return arguments == params->end() ? nlohmann::json(nullptr) : *arguments;
  }
  return *params;
}

nlohmann::json audited_result(const nlohmann::json& message) {
  if (const auto result = message.find("result"); result != message.end()) return *result;
  if (const auto error = message.find("error"); error != message.end()) return *error;
  return nullptr;
}

}  // namespace

// ---- SessionRegistry ----

void SessionRegistry::add(const std::shared_ptr<ClientSession>& session) {
  std::lock_guard lock(mutex_);
  sessions_.emplace(session.get(), session);
  peak_ = std::max(peak_, sessions_.size());
}

void SessionRegistry::remove(const ClientSession* session) {
  bool trim = false;
  {
    std::lock_guard lock(mutex_);
    sessions_.erase(session);
    if (sessions_.empty()) emptied_.notify_all();
    // After a burst of connections (idle SSE streams above all) has mostly closed, the memory
    // they used goes back to the system: glibc keeps freed heap pages otherwise.
    if (peak_ >= kTrimAfterPeak && sessions_.size() * 2 < peak_) {
      peak_ = sessions_.size();
      trim = true;
      trim_when_empty_ = true;
    } else if (sessions_.empty() && trim_when_empty_) {
      trim = true;  // the rest of the burst
      trim_when_empty_ = false;
    }
  }
  if (trim) malloc_trim(0);
}

void SessionRegistry::shut_down_all() {
  std::vector<std::shared_ptr<ClientSession>> live;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, weak] : sessions_) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  for (const auto& session : live) session->shut_down();
}

bool SessionRegistry::wait_until_empty(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return emptied_.wait_for(lock, timeout, [this] { return sessions_.empty(); });
}

// ---- ClientSession: the request ----

ClientSession::ClientSession(TcpSocket socket, std::shared_ptr<RouteContext> route,
                             SessionRegistry& registry)
    : route_(std::move(route)),
      registry_(registry),
      client_(std::move(socket)),
      upstream_(client_.get_executor()),
      deadline_timer_(client_.get_executor()),
      connector_(client_.get_executor()) {}

ClientSession::~ClientSession() {
  flush_audit("stream_ended");
  if (stream_open_) route_->metrics().stream_closed(route_->name());
  registry_.remove(this);
}

void ClientSession::start() {
  beast::error_code ignored;
  client_.set_option(tcp::no_delay(true), ignored);
  // Only the client watch reads synchronously, and it must not block (on_client_watch).
  client_.non_blocking(true, ignored);
  asio::dispatch(client_.get_executor(),
                 beast::bind_front_handler(&ClientSession::read_request, shared_from_this()));
}

void ClientSession::shut_down() {
  asio::post(client_.get_executor(), [self = shared_from_this()] {
    self->draining_ = true;
    if (self->waiting_for_request_) self->close();
  });
}

void ClientSession::set_deadline(DeadlineTarget target, std::chrono::steady_clock::duration after) {
  timed_out_ = false;
  deadline_target_ = target;
  deadline_ = std::chrono::steady_clock::now() + after;
  if (deadline_waiting_ && deadline_timer_.expiry() <= deadline_) return;
  wait_for_deadline();
}

void ClientSession::set_stream_idle_deadline(DeadlineTarget target) {
  const auto idle = policy_->limits.stream_idle_timeout;
  if (idle.count() > 0) {
    set_deadline(target, idle);
  } else {
    clear_deadline();  // a quiet SSE stream is normal: nothing cuts it by default
  }
}

void ClientSession::cancel_deadline() {
  clear_deadline();
  deadline_waiting_ = false;
  ++deadline_generation_;
  deadline_timer_.cancel();
}

void ClientSession::wait_for_deadline() {
  deadline_waiting_ = true;
  deadline_timer_.expires_at(deadline_);  // a wait it cancels finds its generation stale
  deadline_timer_.async_wait([self = shared_from_this(), generation = ++deadline_generation_](
                                 beast::error_code) { self->on_deadline(generation); });
}

void ClientSession::on_deadline(std::uint64_t generation) {
  if (generation != deadline_generation_) return;
  deadline_waiting_ = false;
  if (deadline_target_ == DeadlineTarget::kNone) return;
  if (std::chrono::steady_clock::now() < deadline_) {
    wait_for_deadline();  // the deadline moved later since the timer was set
    return;
  }
  const auto target = std::exchange(deadline_target_, DeadlineTarget::kNone);
  timed_out_ = true;
  beast::error_code ignored;
  if (target == DeadlineTarget::kClient) {
    client_.close(ignored);
  } else {
    connector_.cancel();
    upstream_.close(ignored);
  }
}

void ClientSession::read_request() {
  if (draining_ || closed_) {
    close();
    return;
  }
  policy_ = route_->policy();
  request_parser_.emplace();
  request_parser_->header_limit(kHeaderLimitBytes);
  request_parser_->body_limit(policy_->limits.max_request_body_bytes);
  waiting_for_request_ = true;
  set_deadline(DeadlineTarget::kClient, policy_->limits.header_timeout);
  http::async_read_header(client_, client_buffer_, *request_parser_,
                          [self = shared_from_this()](beast::error_code error, std::size_t) {
                            self->on_request_header(error);
                          });
}

void ClientSession::on_request_header(beast::error_code error) {
  waiting_for_request_ = false;
  if (error == http::error::body_limit) {
    // Content-Length alone says it is too large: the body is never read.
    arrived_ = std::chrono::steady_clock::now();
    arrived_wall_ = route_->clock().wall_now();
    refuse_oversize_body();
    return;
  }
  if (is_malformed_http(error)) {
    refuse_malformed(error);
    return;
  }
  if (error) {
    close();  // the client went away or timed out between requests
    return;
  }
  arrived_ = std::chrono::steady_clock::now();
  arrived_wall_ = route_->clock().wall_now();
  // The policy in force when the request arrived, not when the connection began waiting.
  policy_ = route_->policy();
  const auto& head = request_parser_->get();
  if (iequals(field_value(head, http::field::expect), "100-continue") &&
      !request_parser_->is_done()) {
    set_deadline(DeadlineTarget::kClient, policy_->limits.header_timeout);
    asio::async_write(client_, asio::buffer(kContinue.data(), kContinue.size()),
                      [self = shared_from_this()](beast::error_code write_error, std::size_t) {
                        if (write_error) {
                          self->close();
                          return;
                        }
                        self->read_request_body();
                      });
    return;
  }
  read_request_body();
}

void ClientSession::refuse_oversize_body() {
  request_ = request_parser_->release();
  begin_exchange();
  bytes_in_ = 0;  // the body was not read
  refuse(http::status::payload_too_large, "", "body_too_large", kRpcInvalidRequest, std::nullopt,
         true);
}

void ClientSession::read_request_body() {
  if (request_parser_->is_done()) {
    on_request_body({});
    return;
  }
  set_deadline(DeadlineTarget::kClient, policy_->limits.header_timeout);
  http::async_read(client_, client_buffer_, *request_parser_,
                   [self = shared_from_this()](beast::error_code error, std::size_t) {
                     self->on_request_body(error);
                   });
}

void ClientSession::on_request_body(beast::error_code error) {
  if (error == http::error::body_limit) {
    refuse_oversize_body();
    return;
  }
  if (is_malformed_http(error)) {
    refuse_malformed(error);
    return;
  }
  if (error) {
    close();
    return;
  }
  request_ = request_parser_->release();
  request_parser_.reset();
  client_keep_alive_ = keeps_alive(request_, request_.version());
  bytes_in_ = request_.body().size();
  inspect_request();
}

void ClientSession::refuse_malformed(beast::error_code error) {
  // What a server answers to bytes that are not HTTP it can parse (no JSON-RPC was read, so no
  // audit line): 400, and the connection is closed since where the next request starts is lost.
  route_->metrics().malformed_request(route_->name());
  route_->logger().warn("malformed HTTP request",
                        {{"route", route_->name()}, {"error", error.message()}});
  client_keep_alive_ = false;
  linger_on_close_ = true;
  set_deadline(DeadlineTarget::kClient, policy_->limits.header_timeout);
  asio::async_write(client_, asio::buffer(kBadRequest.data(), kBadRequest.size()),
                    [self = shared_from_this()](beast::error_code, std::size_t) { self->close(); });
}

void ClientSession::begin_exchange() {
  pending_.clear();
  payload_.reset();
  upstream_status_.reset();
  bytes_out_ = 0;
  retried_ = false;
}

void ClientSession::inspect_request() {
  begin_exchange();
  if (request_.method() != http::verb::post) {
    forward();  // GET streams and DELETE carry no JSON-RPC
    return;
  }
  const bool full = policy_->audit.level == AuditLevel::kFull;
  // The document is only read again for a full audit line's arguments and results.
  auto parsed =
      parse_rpc(request_.body(), kMaxJsonDepth, full ? RpcDocument::kKeep : RpcDocument::kSkip);
  if (!parsed.payload) {
    refuse(http::status::bad_request,
           rpc_error_response(nullptr, parsed.error.code, parsed.error.message).dump(),
           "invalid_jsonrpc", parsed.error.code);
    return;
  }
  payload_ = std::move(parsed.payload);
  const McpHeaders headers = mcp_headers(request_);
  const auto& session = headers.session;
  const auto& protocol_version = headers.protocol_version;
  std::size_t rpc_requests = 0;
  for (std::size_t i = 0; i < payload_->messages.size(); ++i) {
    const auto& message = payload_->messages[i];
    if (message.kind == MessageKind::kResponse) continue;  // a client answering the server
    ++rpc_requests;
    PendingRpc pending;
    pending.record.time = arrived_wall_;
    pending.record.route = route_->name();
    pending.record.session = session;
    pending.record.protocol_version = protocol_version;
    pending.record.method = message.method;
    pending.record.id = message.id;
    if (!message.name.empty()) pending.record.name = message.name;
    pending.record.bytes_in = bytes_in_;
    if (full) {
      pending.record.arguments = audited_arguments(message_document(*payload_, i), message.method);
    }
    pending.metric_method = metric_method(message.method);
    pending.tools_list = message.method == "tools/list"sv;
    pending_.push_back(std::move(pending));
  }

  if (const auto mismatch = routing_header_mismatch(*payload_, headers.method, headers.name)) {
    refuse(http::status::bad_request,
           rpc_error_response(payload_->batch || pending_.empty() ? nlohmann::json(nullptr)
                                                                  : pending_.front().record.id,
                              kRpcHeaderMismatch, *mismatch)
               .dump(),
           "header_mismatch", kRpcHeaderMismatch);
    return;
  }

  if (policy_->rate_limiter && rpc_requests > 0) {
    std::chrono::milliseconds retry_after{0};
    if (!policy_->rate_limiter->try_acquire(static_cast<double>(rpc_requests), &retry_after)) {
      const std::string message = "rate limit of route \"" + route_->name() + "\" exceeded";
      nlohmann::json body;
      if (payload_->batch) {
        body = nlohmann::json::array();
        for (const auto& pending : pending_) {
          if (!pending.record.id.is_null()) {
            body.push_back(rpc_error_response(pending.record.id, kRpcRateLimited, message));
          }
        }
        if (body.empty()) body = rpc_error_response(nullptr, kRpcRateLimited, message);
      } else {
        body = rpc_error_response(pending_.front().record.id, kRpcRateLimited, message);
      }
      refuse(http::status::too_many_requests, body.dump(), "rate_limit", kRpcRateLimited,
             retry_after);
      return;
    }
  }

  // Tool policy: a batch with any denied call is refused whole, so no part of it runs.
  // Sized at the first denial: most requests have none.
  std::vector<std::string> denials;
  std::string first_denial;
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    auto& pending = pending_[i];
    if (pending.record.method != "tools/call"sv) continue;
    const std::string_view tool = name_or_empty(pending.record.name);
    const auto decision = decide_tool(policy_->route.tools, tool);
    if (decision.allowed) continue;
    if (denials.empty()) denials.resize(pending_.size());
    pending.record.allowed = false;
    pending.record.reason = "policy: " + decision.reason;
    denials[i] = "tool \"" + std::string(tool) + "\" is denied by the policy of route \"" +
                 route_->name() + "\" (" + decision.reason + ")";
    if (first_denial.empty()) first_denial = denials[i];
  }
  if (!first_denial.empty()) {
    nlohmann::json body = payload_->batch ? nlohmann::json::array() : nlohmann::json();
    for (std::size_t i = 0; i < pending_.size(); ++i) {
      auto& pending = pending_[i];
      if (pending.record.allowed) {
        pending.record.allowed = false;
        pending.record.reason = "policy: in a batch with a denied call";
      }
      if (pending.record.id.is_null()) continue;
      auto error =
          rpc_error_response(pending.record.id, kRpcDenied,
                             denials[i].empty() ? "batch refused: " + first_denial : denials[i]);
      if (payload_->batch) {
        body.push_back(std::move(error));
      } else {
        body = std::move(error);
      }
    }
    // Every entry carries its own reason already.
    refuse(http::status::ok, body.dump(), "", kRpcDenied);
    return;
  }

  // A client answering a request its server sent on a stream: that request's line is due now.
  for (std::size_t i = 0; i < payload_->messages.size(); ++i) {
    const auto& message = payload_->messages[i];
    if (message.kind != MessageKind::kResponse) continue;
    route_->server_request_answered(
        session, message.id, message.error_code,
        full ? audited_result(message_document(*payload_, i)) : nlohmann::json(nullptr), bytes_in_);
  }
  for (const auto& pending : pending_) {
    route_->metrics().request(route_->name(), pending.metric_method,
                              pending.record.method == "tools/call"sv
                                  ? route_->tool_label(name_or_empty(pending.record.name))
                                  : std::string_view(),
                              true);
  }
  forward();
}

void ClientSession::refuse(http::status status, std::string body, std::string_view reason,
                           int rpc_code, std::optional<std::chrono::milliseconds> retry_after,
                           bool close_after) {
  if (body.empty()) {
    body = rpc_error_response(nullptr, rpc_code,
                              status == http::status::payload_too_large
                                  ? "request body larger than max_request_body_bytes"
                                  : "request refused")
               .dump();
  }
  if (pending_.empty()) {
    // Nothing readable as JSON-RPC: one line for the HTTP request, named by its Mcp-Method
    // header when it has one.
    PendingRpc pending;
    pending.record.time = arrived_wall_;
    pending.record.route = route_->name();
    pending.record.session = header(request_, "Mcp-Session-Id");
    pending.record.protocol_version = header(request_, "MCP-Protocol-Version");
    pending.record.method = header(request_, "Mcp-Method").value_or("");
    pending.record.name = header(request_, "Mcp-Name");
    pending.record.bytes_in = bytes_in_;
    pending.metric_method = metric_method(pending.record.method);
    pending_.push_back(std::move(pending));
  }
  for (auto& pending : pending_) {
    if (!reason.empty()) {
      pending.record.allowed = false;
      pending.record.reason = std::string(reason);
    }
    pending.record.rpc_error_code = rpc_code;
    route_->metrics().request(route_->name(), pending.metric_method,
                              pending.record.method == "tools/call"sv
                                  ? route_->tool_label(name_or_empty(pending.record.name))
                                  : std::string_view(),
                              false);
    if (pending.record.reason) {
      route_->metrics().denial(route_->name(), pending.record.reason->starts_with("policy")
                                                   ? std::string_view("policy")
                                                   : std::string_view(*pending.record.reason));
    }
  }
  whole_reply_ = {};
  whole_reply_.version(11);
  whole_reply_.result(status);
  whole_reply_.set(http::field::content_type, "application/json");
  if (retry_after) {
    const auto seconds = std::max<std::int64_t>(1, (retry_after->count() + 999) / 1000);
    whole_reply_.set(http::field::retry_after, std::to_string(seconds));
  }
  whole_reply_.body() = std::move(body);
  if (close_after) {
    client_keep_alive_ = false;
    linger_on_close_ = true;
  }
  mode_ = ReplyMode::kEmpty;
  write_whole_reply(close_after);
}

// ---- ClientSession: the upstream ----

void ClientSession::forward() {
  strip_hop_by_hop(request_);
  request_.erase(http::field::expect);
  request_.version(11);
  if (policy_->route.host_header == HostHeaderMode::kUpstream) {
    point_host_at_upstream(request_, policy_->route.upstream.authority);
  }
  keep_alive(request_, true);
  // A POST with a body (the JSON-RPC case) as prepare_payload() would leave it; anything else
  // (no body, a GET, a TRACE it refuses) goes through it.
  const auto method = request_.method();
  if (request_.body().empty() || method == http::verb::trace ||
      !has_content_length(request_, request_.body().size())) {
    request_.prepare_payload();
  }
  connect_or_send();
}

void ClientSession::connect_or_send() {
  if (upstream_.is_open()) {
    upstream_reused_ = true;
    send_upstream();
    return;
  }
  upstream_reused_ = false;
  upstream_buffer_.clear();
  set_deadline(DeadlineTarget::kUpstream, policy_->limits.upstream_connect_timeout);
  connector_.async_connect(upstream_.new_connection(), policy_->route,
                           [self = shared_from_this()](ConnectFailure failure, std::string detail) {
                             self->on_upstream_connected(failure, detail);
                           });
}

void ClientSession::on_upstream_connected(ConnectFailure failure, const std::string& detail) {
  if (closed_) return;
  if (timed_out_) {
    upstream_failed(metric_kind(ConnectFailure::kTimeout),
                    "connecting: no connection within upstream_connect_timeout");
    return;
  }
  if (failure != ConnectFailure::kNone) {
    upstream_failed(metric_kind(failure), detail, failure == ConnectFailure::kNotAllowed);
    return;
  }
  if (policy_->upstream_tls) {
    // Under the connect deadline still: a server that never finishes the handshake times out.
    try {
      upstream_.async_start_tls(
          *policy_->upstream_tls, policy_->route.upstream.host,
          [self = shared_from_this()](beast::error_code error) { self->on_upstream_tls(error); });
    } catch (const std::exception& error) {
      upstream_failed("tls", error.what());
    }
    return;
  }
  send_upstream();
}

void ClientSession::on_upstream_tls(beast::error_code error) {
  if (closed_) return;
  if (timed_out_) {
    upstream_failed(metric_kind(ConnectFailure::kTimeout),
                    "TLS handshake: not done within upstream_connect_timeout");
    return;
  }
  if (error) {
    // Nothing of the request was sent: a server the route does not trust never sees it.
    upstream_failed("tls", "TLS handshake with " + policy_->route.upstream.authority + ": " +
                               upstream_.tls_failure(error));
    return;
  }
  send_upstream();
}

void ClientSession::send_upstream() {
  set_deadline(DeadlineTarget::kUpstream, policy_->limits.upstream_reply_timeout);
  auto on_sent = [self = shared_from_this()](beast::error_code error, std::size_t) {
    self->on_upstream_sent(error);
  };
  if (is_chunked(request_)) {
    // Not after forward() (Transfer-Encoding is hop-by-hop, the body a string): Beast frames it.
    http::async_write(upstream_, request_, std::move(on_sent));
    return;
  }
  // The head and the body as they are, as Beast's serializer would write them.
  serialize_request_head(request_, &request_head_);
  asio::async_write(
      upstream_,
      std::array<asio::const_buffer, 2>{asio::buffer(request_head_), asio::buffer(request_.body())},
      std::move(on_sent));
}

bool ClientSession::retry_on_stale_connection(const beast::error_code& error) {
  // A kept-alive upstream connection the server closed while idle fails the first write or read;
  // that request never reached the server, so it is sent again once on a fresh connection.
  if (!upstream_reused_ || retried_) return false;
  if (error != http::error::end_of_stream && error != asio::error::connection_reset &&
      error != asio::error::broken_pipe && error != asio::error::eof) {
    return false;
  }
  retried_ = true;
  beast::error_code ignored;
  upstream_.close(ignored);
  connect_or_send();  // the request is prepared already
  return true;
}

void ClientSession::on_upstream_sent(beast::error_code error) {
  if (closed_) return;
  if (timed_out_) error = beast::error::timeout;
  if (error) {
    if (retry_on_stale_connection(error)) return;
    upstream_failed(error == beast::error::timeout ? "timeout" : "reset",
                    "sending the request: " + error.message());
    return;
  }
  response_parser_.emplace();
  response_parser_->header_limit(kHeaderLimitBytes);
  response_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
  if (request_.method() == http::verb::head) response_parser_->skip(true);
  http::async_read_header(upstream_, upstream_buffer_, *response_parser_,
                          [self = shared_from_this()](beast::error_code read_error, std::size_t) {
                            self->on_upstream_header(read_error);
                          });
}

void ClientSession::on_upstream_header(beast::error_code error) {
  if (closed_) return;
  if (timed_out_) error = beast::error::timeout;
  if (error) {
    if (retry_on_stale_connection(error)) return;
    const bool timeout = error == beast::error::timeout;
    const bool reset = error == http::error::end_of_stream || error == asio::error::eof ||
                       error == asio::error::connection_reset;
    upstream_failed(timeout ? "timeout"
                    : reset ? "reset"
                            : "bad_reply",
                    "reading the reply's headers: " + error.message());
    return;
  }
  const auto& head = response_parser_->get();
  upstream_status_ = static_cast<int>(head.result_int());
  upstream_keep_alive_ = keeps_alive(head, head.version());
  const std::string_view type = field_value(head, http::field::content_type);
  if (response_parser_->is_done()) {
    mode_ = ReplyMode::kEmpty;
  } else if (istarts_with(type, "text/event-stream")) {
    mode_ = ReplyMode::kSse;
  } else if (istarts_with(type, "application/json") && payload_) {
    mode_ = ReplyMode::kJson;
  } else {
    mode_ = ReplyMode::kPassthrough;
  }
  switch (mode_) {
    case ReplyMode::kEmpty:
      whole_reply_ = {};
      // The parser is done (and is reset when the exchange ends): its head is moved, not copied.
      whole_reply_.base() = std::move(response_parser_->get().base());
      prepare_reply_fields(whole_reply_);
      // Keeps the upstream's Content-Length (a HEAD reply's included) as it was.
      write_whole_reply(false);
      return;
    case ReplyMode::kJson:
      if (has_content_length_field(head) &&
          response_parser_->content_length().value_or(0) > policy_->limits.max_json_reply_bytes) {
        upstream_failed("bad_reply", "JSON reply larger than max_json_reply_bytes");
        return;
      }
      json_body_.clear();
      json_used_ = 0;
      read_json_reply();
      return;
    case ReplyMode::kSse:
    case ReplyMode::kPassthrough:
      write_stream_head();
      return;
  }
}

void ClientSession::upstream_failed(std::string_view kind, const std::string& detail,
                                    bool not_allowed) {
  route_->metrics().upstream_error(route_->name(), kind);
  route_->logger().warn("upstream failed",
                        {{"route", route_->name()}, {"kind", kind}, {"error", detail}});
  beast::error_code ignored;
  upstream_.close(ignored);
  const std::string message =
      not_allowed
          ? "the upstream of route \"" + route_->name() + "\" is not in allowed_cidrs"
          : "the upstream of route \"" + route_->name() + "\" failed (" + std::string(kind) + ")";
  nlohmann::json body;
  if (payload_ && payload_->batch) {
    body = nlohmann::json::array();
    for (const auto& pending : pending_) {
      if (!pending.record.id.is_null()) {
        body.push_back(rpc_error_response(pending.record.id, kRpcUpstream, message));
      }
    }
  } else {
    body =
        rpc_error_response(pending_.empty() ? nlohmann::json(nullptr) : pending_.front().record.id,
                           kRpcUpstream, message);
  }
  if (not_allowed) {
    for (auto& pending : pending_) {
      pending.record.allowed = false;
      pending.record.reason = "upstream_not_allowed";
    }
    route_->metrics().denial(route_->name(), "upstream_not_allowed");
  }
  for (auto& pending : pending_) pending.record.rpc_error_code = kRpcUpstream;
  whole_reply_ = {};
  whole_reply_.version(11);
  whole_reply_.result(http::status::bad_gateway);
  whole_reply_.set(http::field::content_type, "application/json");
  whole_reply_.body() = body.dump();
  mode_ = ReplyMode::kEmpty;
  write_whole_reply(false);
}

// ---- ClientSession: JSON replies, read whole ----

void ClientSession::read_json_reply() {
  // With a Content-Length the body is read in place at its exact size (resize zero-fills, so a
  // fixed 64 KiB step would cost a memset per reply); without one it grows a step at a time.
  const auto length = response_parser_->content_length();
  const std::size_t step =
      length && json_used_ == 0 ? std::max<std::size_t>(1, *length) : kJsonReadBytes;
  json_body_.resize(json_used_ + step);
  json_step_ = step;
  auto& body = response_parser_->get().body();
  body.data = json_body_.data() + json_used_;
  body.size = step;
  set_deadline(DeadlineTarget::kUpstream, policy_->limits.upstream_reply_timeout);
  http::async_read(upstream_, upstream_buffer_, *response_parser_,
                   [self = shared_from_this()](beast::error_code error, std::size_t) {
                     self->on_json_reply(error);
                   });
}

void ClientSession::on_json_reply(beast::error_code error) {
  if (closed_) return;
  if (timed_out_) error = beast::error::timeout;
  if (error == http::error::need_buffer) error = {};
  if (error) {
    upstream_failed(error == beast::error::timeout ? "timeout" : "reset",
                    "reading a JSON reply: " + error.message());
    return;
  }
  json_used_ += json_step_ - response_parser_->get().body().size;
  if (json_used_ > policy_->limits.max_json_reply_bytes) {
    upstream_failed("bad_reply", "JSON reply larger than max_json_reply_bytes");
    return;
  }
  if (!response_parser_->is_done()) {
    read_json_reply();
    return;
  }
  json_body_.resize(json_used_);
  send_json_reply();
}

bool ClientSession::reply_needs_document() const {
  // A full audit line holds results; a tools/list reply may be filtered. Otherwise only the
  // messages' ids and error codes are read.
  if (policy_->audit.level == AuditLevel::kFull) return true;
  return std::any_of(pending_.begin(), pending_.end(), [](const PendingRpc& pending) {
    return pending.tools_list && !pending.written;
  });
}

void ClientSession::send_json_reply() {
  auto parsed = parse_rpc(json_body_, kMaxJsonDepth,
                          reply_needs_document() ? RpcDocument::kKeep : RpcDocument::kSkip);
  if (parsed.payload) {
    bool modified = false;
    const bool full = policy_->audit.level == AuditLevel::kFull;
    for (std::size_t i = 0; i < parsed.payload->messages.size(); ++i) {
      const auto& message = parsed.payload->messages[i];
      if (message.kind != MessageKind::kResponse) continue;
      PendingRpc* pending = find_pending(message.id);
      if (pending == nullptr) continue;
      pending->answered = true;
      pending->record.rpc_error_code = message.error_code;
      if (full) pending->record.result = audited_result(message_document(*parsed.payload, i));
      if (pending->tools_list) {
        auto& document = message_document(*parsed.payload, i);
        route_->remember_listed_tools(document);
        if (!policy_->route.tools.allows_everything() &&
            remove_denied_tools(document, policy_->route.tools) > 0) {
          modified = true;
        }
      }
    }
    if (modified) json_body_ = parsed.payload->document.dump();
  }
  attribute_anonymous_error(parsed.payload ? &*parsed.payload : nullptr);
  whole_reply_ = {};
  // The parser is done with the head (and is reset when the exchange ends): moved, not copied.
  whole_reply_.base() = std::move(response_parser_->get().base());
  prepare_reply_fields(whole_reply_);
  whole_reply_.body() = std::move(json_body_);
  json_body_ = {};
  write_whole_reply(false);
}

// ---- ClientSession: streamed replies (SSE event by event, anything else chunk by chunk) ----

void ClientSession::write_stream_head() {
  auto& head = response_parser_->get();
  // SSE events may be rewritten (tools/list), so their length is not the upstream's.
  stream_chunked_ = mode_ == ReplyMode::kSse || !has_content_length_field(head);
  stream_head_ = {};
  // Moved, not copied: the parser reads the body by its own state, not by the head's fields.
  stream_head_.base() = std::move(head.base());
  prepare_reply_fields(stream_head_);
  if (stream_chunked_) {
    // What erase(content_length) and chunked(true) would leave, without their four searches of
    // the field tree by name: Transfer-Encoding is hop-by-hop, so prepare_reply_fields removed it
    // and chunked(true) would only add it.
    for (auto it = stream_head_.begin(); it != stream_head_.end();) {
      if (it->name() == http::field::content_length) {
        it = stream_head_.erase(it);
      } else {
        ++it;
      }
    }
    stream_head_.insert(http::field::transfer_encoding, "Transfer-Encoding", "chunked");
  }
  if (mode_ == ReplyMode::kSse) {
    splitter_.emplace(policy_->limits.max_sse_event_bytes);
    if (!stream_open_) {
      stream_open_ = true;
      route_->metrics().stream_opened(route_->name());
    }
  }
  if (!chunk_) chunk_ = SpareChunks::take();
  // The head goes out with the first bytes when they came with it (one write instead of two),
  // else before the guard waits for the upstream's next bytes (read_stream).
  serialize_head(stream_head_, &stream_head_text_);
  stream_head_unsent_ = true;
  stream_last_chunk_sent_ = false;
  stream_first_read_ = true;
  read_stream();
}

void ClientSession::arm_client_idle_timeout() {
  set_stream_idle_deadline(DeadlineTarget::kClient);
}

void ClientSession::watch_client() {
  if (client_watch_pending_) return;
  client_watch_pending_ = true;
  // A readiness wait, not a read: a read would first try the socket (and find nothing, most of
  // the time) before waiting.
  client_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code error) {
    self->on_client_watch(error);
  });
}

void ClientSession::on_client_watch(beast::error_code error) {
  client_watch_pending_ = false;
  if (closed_) return;
  std::size_t bytes = 0;
  if (!error) {
    // Readable: the client's next request, or its hang-up (end of file or a reset).
    bytes = client_.read_some(client_buffer_.prepare(4096), error);
    if (error == asio::error::would_block || error == asio::error::try_again) {
      if (read_after_watch_) {
        read_after_watch_ = false;
        read_request();
      } else {
        watch_client();
      }
      return;
    }
  }
  if (!error) {
    // The client sent its next request early: kept for the request parser, and the watch ends.
    client_buffer_.commit(bytes);
    if (read_after_watch_) {
      read_after_watch_ = false;
      read_request();
    }
    return;
  }
  if (read_after_watch_) {
    read_after_watch_ = false;
    read_request();  // the watch was cancelled because the exchange ended
    return;
  }
  abort_exchange("stream_ended");  // the client hung up mid-stream
}

void ClientSession::read_stream() {
  if (stream_head_unsent_ && upstream_buffer_.size() == 0) {
    // Nothing more is buffered: the client gets the head now, not when the next event comes.
    stream_head_unsent_ = false;
    arm_client_idle_timeout();
    asio::async_write(client_, asio::buffer(stream_head_text_),
                      [self = shared_from_this()](beast::error_code error, std::size_t) {
                        if (self->closed_) return;
                        if (error) {
                          self->abort_exchange("stream_ended");
                          return;
                        }
                        self->read_stream();
                      });
    return;
  }
  // The client is watched from the first time the guard may wait for the upstream: a reply that
  // came whole with its head is relayed without the readiness wait (a syscall per exchange).
  if (upstream_buffer_.size() == 0 || !stream_first_read_) watch_client();
  stream_first_read_ = false;
  set_stream_idle_deadline(DeadlineTarget::kUpstream);
  auto& body = response_parser_->get().body();
  body.data = chunk_.get();
  body.size = kChunkBytes;
  http::async_read_some(upstream_, upstream_buffer_, *response_parser_,
                        [self = shared_from_this()](beast::error_code error, std::size_t) {
                          self->on_stream_read(error);
                        });
}

void ClientSession::on_stream_read(beast::error_code error) {
  if (closed_) return;
  if (timed_out_) error = beast::error::timeout;
  if (error == http::error::need_buffer) error = {};
  std::size_t received = kChunkBytes - response_parser_->get().body().size;
  if (!error && received == 0 && upstream_buffer_.size() > 0) {
    // The read stopped after a chunk's header. The rest is buffered already: it is parsed now,
    // as the next read would parse it (failing as that read would), rather than after another
    // turn of the event loop and a readiness wait on the client (an epoll_ctl per reply).
    error = take_buffered_stream_bytes(received);
  }
  if (error) {
    route_->metrics().upstream_error(route_->name(),
                                     error == beast::error::timeout ? "timeout" : "reset");
    route_->logger().warn("upstream stream failed",
                          {{"route", route_->name()}, {"error", error.message()}});
    abort_exchange("stream_ended");
    return;
  }
  if (received > 0 && take_buffered_stream_bytes(received)) {
    route_->metrics().upstream_error(route_->name(), "bad_reply");
    route_->logger().warn("upstream stream failed",
                          {{"route", route_->name()}, {"error", "bad chunked framing"}});
    abort_exchange("stream_ended");
    return;
  }
  if (received == 0) {
    if (response_parser_->is_done()) {
      end_stream();
    } else {
      read_stream();
    }
    return;
  }
  if (mode_ != ReplyMode::kSse) {
    write_stream_bytes(asio::const_buffer(chunk_.get(), received));
    return;
  }
  events_.clear();
  if (!splitter_->feed(std::string_view(chunk_.get(), received), &events_)) {
    route_->metrics().upstream_error(route_->name(), "bad_reply");
    route_->logger().warn("SSE event larger than max_sse_event_bytes: stream cut",
                          {{"route", route_->name()}});
    abort_exchange("stream_ended");
    return;
  }
  stream_out_.clear();
  for (const auto& event : events_) inspect_sse_event(event);
  if (stream_out_.empty()) {
    if (response_parser_->is_done()) {
      end_stream();
    } else {
      read_stream();
    }
    return;
  }
  write_stream_bytes(asio::const_buffer(stream_out_.data(), stream_out_.size()));
}

beast::error_code ClientSession::take_buffered_stream_bytes(std::size_t& received) {
  // What the upstream sent already (the rest of the event, the last chunk) is parsed now, so that
  // it goes out in the same write: a reply that came whole costs one write, not two.
  auto& body = response_parser_->get().body();
  while (!response_parser_->is_done() && upstream_buffer_.size() > 0 && received < kChunkBytes) {
    body.data = chunk_.get() + received;
    body.size = kChunkBytes - received;
    beast::error_code error;
    const std::size_t used = response_parser_->put(upstream_buffer_.data(), error);
    upstream_buffer_.consume(used);
    received = kChunkBytes - body.size;
    if (error == http::error::need_more || error == http::error::need_buffer) break;
    if (error) return error;
    if (used == 0) break;
  }
  return {};
}

void ClientSession::inspect_sse_event(const RawSseEvent& event) {
  if (!event.has_data || !looks_like_json(event.data)) {
    stream_out_ += event.raw;
    return;
  }
  auto parsed = parse_rpc(event.data, kMaxJsonDepth,
                          reply_needs_document() ? RpcDocument::kKeep : RpcDocument::kSkip);
  if (!parsed.payload) {
    stream_out_ += event.raw;  // not JSON-RPC the guard reads: passed on as the server sent it
    return;
  }
  bool modified = false;
  const bool full = policy_->audit.level == AuditLevel::kFull;
  std::vector<PendingRpc*> answered;
  for (std::size_t i = 0; i < parsed.payload->messages.size(); ++i) {
    const auto& message = parsed.payload->messages[i];
    if (message.kind == MessageKind::kResponse) {
      PendingRpc* pending = find_pending(message.id);
      if (pending == nullptr) continue;
      pending->record.rpc_error_code = message.error_code;
      if (full) pending->record.result = audited_result(message_document(*parsed.payload, i));
      if (pending->tools_list) {
        auto& document = message_document(*parsed.payload, i);
        route_->remember_listed_tools(document);
        if (!policy_->route.tools.allows_everything() &&
            remove_denied_tools(document, policy_->route.tools) > 0) {
          modified = true;
        }
      }
      answered.push_back(pending);
    } else if (message.kind == MessageKind::kRequest) {
      // A request of the server's (sampling, elicitation, roots): its own line, once the client's
      // answer (a later POST) is seen.
      PendingRpc server;
      server.record.time = route_->clock().wall_now();
      server.record.route = route_->name();
      server.record.from_server = true;
      server.record.session = header(request_, "Mcp-Session-Id");
      server.record.protocol_version = header(request_, "MCP-Protocol-Version");
      server.record.method = message.method;
      server.record.id = message.id;
      if (!message.name.empty()) server.record.name = message.name;
      server.record.upstream_status = upstream_status_;
      if (full) {
        server.record.arguments =
            audited_arguments(message_document(*parsed.payload, i), message.method);
      }
      server.record.bytes_out = event.raw.size();
      server.metric_method = metric_method(message.method);
      route_->server_request_sent(std::move(server.record), server.metric_method);
    }
  }
  if (modified) {
    stream_out_ += serialize_sse_event(event, parsed.payload->document.dump());
  } else {
    stream_out_ += event.raw;
  }
  for (PendingRpc* pending : answered) {
    pending->record.bytes_out = bytes_out_ + stream_out_.size();
    write_audit(*pending, pending->record.rpc_error_code ? "error" : "result");
  }
}

void ClientSession::write_stream_bytes(asio::const_buffer bytes) {
  arm_client_idle_timeout();
  auto on_written = [self = shared_from_this()](beast::error_code error, std::size_t written) {
    self->on_stream_written(error, written);
  };
  bytes_out_ += bytes.size();
  const asio::const_buffer head =
      stream_head_unsent_ ? asio::buffer(stream_head_text_) : asio::const_buffer();
  stream_head_unsent_ = false;
  if (stream_chunked_ && response_parser_->is_done() &&
      (!splitter_ || splitter_->pending().empty())) {
    // The upstream's reply is complete: the last chunk goes in the same write.
    stream_last_chunk_sent_ = true;
    asio::async_write(client_,
                      beast::buffers_cat(head, http::make_chunk(bytes), http::make_chunk_last()),
                      std::move(on_written));
  } else if (stream_chunked_) {
    asio::async_write(client_, beast::buffers_cat(head, http::make_chunk(bytes)),
                      std::move(on_written));
  } else {
    asio::async_write(client_, std::array<asio::const_buffer, 2>{head, bytes},
                      std::move(on_written));
  }
}

void ClientSession::on_stream_written(beast::error_code error, std::size_t) {
  if (closed_) return;
  if (error) {
    abort_exchange("stream_ended");  // the client went away
    return;
  }
  if (response_parser_->is_done()) {
    end_stream();
  } else {
    read_stream();
  }
}

void ClientSession::end_stream() {
  if (mode_ == ReplyMode::kSse && splitter_ && !splitter_->pending().empty()) {
    // An event the server never ended: passed on as it came, then the stream ends.
    stream_out_ = splitter_->pending();
    splitter_.reset();
    write_stream_bytes(asio::const_buffer(stream_out_.data(), stream_out_.size()));
    return;
  }
  auto done = [self = shared_from_this()](beast::error_code error, std::size_t) {
    if (error) {
      self->abort_exchange("stream_ended");
      return;
    }
    self->finish_exchange("stream_ended");
  };
  const asio::const_buffer head =
      stream_head_unsent_ ? asio::buffer(stream_head_text_) : asio::const_buffer();
  stream_head_unsent_ = false;
  if (stream_chunked_ && !stream_last_chunk_sent_) {
    arm_client_idle_timeout();
    asio::async_write(client_, beast::buffers_cat(head, http::make_chunk_last()), std::move(done));
  } else if (head.size() > 0) {
    arm_client_idle_timeout();
    asio::async_write(client_, head, std::move(done));
  } else {
    asio::dispatch(client_.get_executor(),
                   [done = std::move(done)]() mutable { done(beast::error_code{}, 0); });
  }
}

void ClientSession::abort_exchange(std::string_view outcome) {
  // Closing without the last chunk makes the client's read fail rather than look complete.
  for (auto& pending : pending_) pending.record.bytes_out = bytes_out_;
  flush_audit(outcome);
  close();
}

// ---- ClientSession: replies written whole, and the end of an exchange ----

void ClientSession::prepare_reply_fields(GuardFields& fields) const {
  strip_hop_by_hop(fields);
  if (!client_keep_alive_ || draining_) fields.set(http::field::connection, "close");
}

void ClientSession::write_whole_reply(bool close_after) {
  whole_reply_.version(11);
  if (close_after || draining_) client_keep_alive_ = false;
  keep_alive(whole_reply_, client_keep_alive_);
  if (mode_ != ReplyMode::kEmpty || !has_content_length_field(whole_reply_)) {
    // A body with its length already right (a JSON reply passed on as it came) is left alone.
    if (whole_reply_.body().empty() ||
        !has_content_length(whole_reply_, whole_reply_.body().size())) {
      whole_reply_.prepare_payload();
    }
  }
  set_stream_idle_deadline(DeadlineTarget::kClient);
  // The audit lines go out before the reply: a client that has its answer finds them written.
  bytes_out_ = whole_reply_.body().size();
  for (auto& pending : pending_) pending.record.bytes_out = bytes_out_;
  // Upstream replies that are not JSON-RPC (a 404 page, a 202) answer every request they carry.
  flush_audit(upstream_status_ && *upstream_status_ >= 400 ? "error" : "no_response");
  auto on_written = [self = shared_from_this()](beast::error_code error, std::size_t) {
    self->on_whole_reply_written(error);
  };
  if (is_chunked(whole_reply_)) {
    // Not after prepare_reply_fields (Transfer-Encoding is hop-by-hop): Beast frames it.
    http::async_write(client_, whole_reply_, std::move(on_written));
    return;
  }
  // The head and the body as they are, as Beast's serializer would write them, without a
  // serializer built per reply.
  serialize_head(whole_reply_, &stream_head_text_);
  asio::async_write(client_,
                    std::array<asio::const_buffer, 2>{asio::buffer(stream_head_text_),
                                                      asio::buffer(whole_reply_.body())},
                    std::move(on_written));
}

void ClientSession::on_whole_reply_written(beast::error_code error) {
  if (error) {
    close();
    return;
  }
  finish_exchange("no_response");
}

void ClientSession::finish_exchange(std::string_view unanswered_outcome) {
  for (auto& pending : pending_) pending.record.bytes_out = bytes_out_;
  flush_audit(unanswered_outcome);
  route_->metrics().bytes(route_->name(), bytes_in_, bytes_out_);
  if (stream_open_) {
    stream_open_ = false;
    route_->metrics().stream_closed(route_->name());
  }
  response_parser_.reset();
  splitter_.reset();
  SpareChunks::give_back(std::move(chunk_));
  // The heads' buffers serve the next exchange (a head is a few hundred bytes); one grown by an
  // unusually large head is let go.
  keep_small_buffer(stream_head_text_);
  keep_small_buffer(request_head_);
  keep_small_buffer(stream_out_);
  // A few events' room is kept too (their strings are freed).
  if (events_.capacity() > 4) {
    events_ = {};
  } else {
    events_.clear();
  }
  whole_reply_ = {};
  if (!upstream_keep_alive_ && upstream_.is_open()) {
    beast::error_code ignored;
    upstream_.close(ignored);
  }
  if (!client_keep_alive_ || draining_) {
    close();
    return;
  }
  if (client_watch_pending_) {
    read_after_watch_ = true;
    beast::error_code ignored;
    client_.cancel(ignored);
    return;
  }
  read_request();
}

void ClientSession::attribute_anonymous_error(const RpcPayload* payload) {
  // An error the server could not tie to a request (id null, or no id at all: a 400 or 406
  // before the body was read) belongs to the request when the exchange carried exactly one.
  PendingRpc* only = nullptr;
  for (auto& pending : pending_) {
    if (pending.record.id.is_null()) continue;
    if (only != nullptr || pending.answered || pending.written) return;
    only = &pending;
  }
  if (only == nullptr) return;
  std::optional<std::int64_t> code;
  if (payload != nullptr) {
    if (payload->batch || payload->messages.size() != 1) return;
    const auto& message = payload->messages.front();
    if (message.kind != MessageKind::kResponse || !message.id.is_null()) return;
    code = message.error_code;
  } else {
    // parse_rpc refuses a response without an id; only the error's code is read here.
    const auto document = nlohmann::json::parse(json_body_, nullptr, false);
    if (!document.is_object() || document.contains("id")) return;
    const auto error = document.find("error");
    if (error == document.end() || !error->is_object()) return;
    const auto found = error->find("code");
    if (found == error->end() || !found->is_number_integer()) return;
    code = found->get<std::int64_t>();
  }
  if (!code) return;
  only->answered = true;
  only->record.rpc_error_code = code;
}

ClientSession::PendingRpc* ClientSession::find_pending(const nlohmann::json& id) {
  if (id.is_null()) return nullptr;
  for (auto& pending : pending_) {
    if (!pending.written && pending.record.id == id) return &pending;
  }
  return nullptr;
}

void ClientSession::write_audit(PendingRpc& pending, std::string_view outcome) {
  if (pending.written) return;
  pending.written = true;
  const auto elapsed = std::chrono::steady_clock::now() - arrived_;
  pending.record.outcome = outcome;
  pending.record.upstream_status = upstream_status_;
  pending.record.duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  // One buffer per thread: its capacity serves every line, and a session keeps none when idle.
  thread_local std::string line;
  render_audit_line(pending.record, policy_->audit, &line);
  route_->audit_sink().write_line(line);
  route_->metrics().request_duration(route_->name(), pending.metric_method,
                                     std::chrono::duration<double>(elapsed).count());
}

void ClientSession::flush_audit(std::string_view outcome) {
  for (auto& pending : pending_) {
    if (pending.written) continue;
    std::string_view this_outcome = outcome;
    if (pending.answered) {
      this_outcome = pending.record.rpc_error_code ? "error" : "result";
    } else if (pending.record.rpc_error_code) {
      this_outcome = "error";  // refused by the guard, or answered with an error
    } else if (upstream_status_ == 202 || (pending.record.id.is_null() && upstream_status_ &&
                                           *upstream_status_ >= 200 && *upstream_status_ < 300)) {
      // Accepted, or a notification the server took: no response is due, whatever the reply's
      // framing (an empty chunked 202 is streamed through and ends like a stream).
      this_outcome = "no_response";
    }
    write_audit(pending, this_outcome);
  }
  pending_.clear();
}

void ClientSession::close() {
  if (closed_) return;
  closed_ = true;
  flush_audit("stream_ended");
  beast::error_code ignored;
  cancel_deadline();
  connector_.cancel();
  upstream_.close(ignored);
  if (linger_on_close_) {
    // The client may still be sending the body we refused; closing with it unread would reset
    // the connection and could discard our 413 before the client reads it.
    client_.shutdown(tcp::socket::shutdown_send, ignored);
    if (!chunk_) chunk_ = SpareChunks::take();
    drain_client();
    return;
  }
  client_.shutdown(tcp::socket::shutdown_both, ignored);
  client_.close(ignored);
}

void ClientSession::drain_client() {
  set_deadline(DeadlineTarget::kClient, std::chrono::seconds(2));
  client_.async_read_some(asio::buffer(chunk_.get(), kChunkBytes),
                          [self = shared_from_this()](beast::error_code error, std::size_t) {
                            if (error) {
                              self->cancel_deadline();
                              beast::error_code ignored;
                              self->client_.close(ignored);
                              return;
                            }
                            self->drain_client();
                          });
}

}  // namespace perimeter::mcpguard
