#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mcp/jsonrpc_message.h"
#include "mcp/sse_event_splitter.h"
#include "proxy/asio.h"
#include "proxy/audit.h"
#include "proxy/field_allocator.h"
#include "proxy/route_context.h"
#include "proxy/upstream_connector.h"
#include "proxy/upstream_stream.h"

namespace perimeter::mcpguard {

class ClientSession;

// Every live session, so a shutdown can ask them all to finish and wait until they have.
class SessionRegistry {
 public:
  void add(const std::shared_ptr<ClientSession>& session);
  void remove(const ClientSession* session);
  // Asks every session to close once its current exchange ends (idle ones close now).
  void shut_down_all();
  // True when no session is left within `timeout`.
  bool wait_until_empty(std::chrono::milliseconds timeout);

 private:
  std::mutex mutex_;
  std::condition_variable emptied_;
  static constexpr std::size_t kTrimAfterPeak = 64;
  std::unordered_map<const ClientSession*, std::weak_ptr<ClientSession>> sessions_;
  std::size_t peak_ = 0;          // the most sessions since the last trim; guarded by mutex_
  bool trim_when_empty_ = false;  // guarded by mutex_
};

// One client connection and the upstream connection pinned to it, on one strand (with one I/O
// thread, on the io_context itself: no strand is needed). Exchanges run
// one after the other (HTTP/1.1 keep-alive): read the request whole, inspect its JSON-RPC,
// refuse or forward it, then relay the reply: JSON read whole and inspected, SSE event by event,
// anything else streamed through. The next upstream bytes are read only after the client took
// the previous ones, so memory per session is bounded by one read chunk and one SSE event.
class ClientSession : public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(TcpSocket socket, std::shared_ptr<RouteContext> route, SessionRegistry& registry);
  ~ClientSession();
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  void start();
  // Thread-safe: closes the connection now when it waits for a request, otherwise once the
  // exchange in flight ends.
  void shut_down();

 private:
  // A JSON-RPC request or notification of the current exchange, until its audit line is written.
  struct PendingRpc {
    AuditRecord record;
    std::string_view metric_method;
    bool tools_list = false;
    bool answered = false;  // its response was seen
    bool written = false;
  };
  enum class ReplyMode { kEmpty, kJson, kSse, kPassthrough };
  // The socket whose operation in flight the current deadline bounds.
  enum class DeadlineTarget { kNone, kClient, kUpstream };

  // One timer per connection bounds the phase in flight (docs/mcp-guard.md, limits): a phase sets
  // its deadline, and when it passes the target socket is closed, so its operation fails and
  // timed_out_ says why. The timer is moved only when a deadline comes earlier than the one it
  // waits for: a later deadline is noticed when it fires, so most phases cost no timer syscall.
  void set_deadline(DeadlineTarget target, std::chrono::steady_clock::duration after);
  void clear_deadline() { deadline_target_ = DeadlineTarget::kNone; }
  void cancel_deadline();
  void wait_for_deadline();
  void on_deadline(std::uint64_t generation);
  void set_stream_idle_deadline(DeadlineTarget target);

  void read_request();
  void on_request_header(beast::error_code error);
  void read_request_body();
  void on_request_body(beast::error_code error);
  void refuse_malformed(beast::error_code error);
  // 413 for a body over the limit, which is never read; the connection closes after it.
  void refuse_oversize_body();
  void begin_exchange();
  void inspect_request();
  void refuse(http::status status, std::string body, std::string_view reason, int rpc_code,
              std::optional<std::chrono::milliseconds> retry_after = std::nullopt,
              bool close_after = false);
  void forward();
  void connect_or_send();
  void on_upstream_connected(ConnectFailure failure, const std::string& detail);
  void on_upstream_tls(beast::error_code error);
  void send_upstream();
  void on_upstream_sent(beast::error_code error);
  void on_upstream_header(beast::error_code error);
  bool retry_on_stale_connection(const beast::error_code& error);
  void upstream_failed(std::string_view kind, const std::string& detail, bool not_allowed = false);

  // Whether the reply's JSON-RPC is needed as a document (full audit, a tools/list to filter).
  bool reply_needs_document() const;
  void read_json_reply();
  void on_json_reply(beast::error_code error);
  void send_json_reply();

  void write_stream_head();
  void arm_client_idle_timeout();
  void read_stream();
  void on_stream_read(beast::error_code error);
  // Adds to the `received` bytes of chunk_ what the upstream buffer already holds; the parser's
  // error when the framing is bad.
  beast::error_code take_buffered_stream_bytes(std::size_t& received);
  void inspect_sse_event(const RawSseEvent& event);
  void write_stream_bytes(asio::const_buffer bytes);
  void on_stream_written(beast::error_code error, std::size_t bytes);
  void end_stream();
  void watch_client();
  void on_client_watch(beast::error_code error);
  void abort_exchange(std::string_view outcome);

  void write_whole_reply(bool close_after);
  void on_whole_reply_written(beast::error_code error);
  void finish_exchange(std::string_view unanswered_outcome);
  void write_audit(PendingRpc& pending, std::string_view outcome);
  void flush_audit(std::string_view outcome);
  void close();
  void drain_client();

  PendingRpc* find_pending(const nlohmann::json& id);
  void attribute_anonymous_error(const RpcPayload* payload);
  void prepare_reply_fields(GuardFields& fields) const;

  std::shared_ptr<RouteContext> route_;
  SessionRegistry& registry_;
  std::shared_ptr<const RoutePolicy> policy_;  // the snapshot of the exchange in flight

  TcpSocket client_;
  UpstreamStream upstream_;
  SteadyTimer deadline_timer_;
  UpstreamConnector connector_;
  std::chrono::steady_clock::time_point deadline_;
  DeadlineTarget deadline_target_ = DeadlineTarget::kNone;
  bool deadline_waiting_ = false;
  bool timed_out_ = false;  // the last deadline passed: its target's operation failed for that
  std::uint64_t deadline_generation_ = 0;  // a timer wait's handler acts only if still current
  beast::flat_buffer client_buffer_;
  beast::flat_buffer upstream_buffer_;
  std::unique_ptr<char[]> chunk_;  // one upstream read, forwarded before the next

  std::optional<http::request_parser<http::string_body, FieldAllocator<char>>> request_parser_;
  http::request<http::string_body, GuardFields> request_;
  std::string request_head_;  // request_'s head as sent upstream
  std::optional<http::response_parser<http::buffer_body, FieldAllocator<char>>> response_parser_;
  http::response<http::string_body, GuardFields> whole_reply_;
  http::response<http::empty_body, GuardFields> stream_head_;
  std::string stream_head_text_;  // the head of a streamed reply, or of one written whole
  bool stream_head_unsent_ = false;
  bool stream_last_chunk_sent_ = false;  // with the last bytes, when the upstream had ended
  bool stream_first_read_ = false;       // the stream's first read, often from buffered bytes

  // The exchange in flight.
  std::chrono::steady_clock::time_point arrived_;
  std::chrono::system_clock::time_point arrived_wall_;
  std::optional<RpcPayload> payload_;
  std::vector<PendingRpc> pending_;
  std::uint64_t bytes_in_ = 0;
  std::uint64_t bytes_out_ = 0;
  std::optional<int> upstream_status_;
  ReplyMode mode_ = ReplyMode::kEmpty;
  bool client_keep_alive_ = true;
  bool upstream_keep_alive_ = true;
  bool upstream_reused_ = false;
  bool retried_ = false;
  bool stream_chunked_ = false;
  bool stream_open_ = false;  // counted in open_streams
  std::string json_body_;
  std::size_t json_used_ = 0;
  std::size_t json_step_ = 0;  // the room offered to the current read
  std::optional<SseEventSplitter> splitter_;
  std::vector<RawSseEvent> events_;
  std::string stream_out_;

  // Touched from other threads through shut_down() only via the session's executor.
  bool waiting_for_request_ = false;
  bool draining_ = false;
  bool closed_ = false;
  bool linger_on_close_ = false;  // a refused body may still be arriving
  // While a stream waits for the upstream, a readiness wait is kept pending on the client so that
  // a client that hangs up is noticed at once, not at the next event of a quiet stream.
  bool client_watch_pending_ = false;
  bool read_after_watch_ = false;  // the exchange ended: read the next request once it returns
};

}  // namespace perimeter::mcpguard
