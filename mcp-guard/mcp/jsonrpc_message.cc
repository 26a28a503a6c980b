#include "mcp/jsonrpc_message.h"

#include <exception>
#include <limits>
#include <utility>

#include "core/json_reader.h"

namespace perimeter::mcpguard {
namespace {

using Json = nlohmann::json;

// Messages carry text from the body and from headers; they end up in a JSON-RPC error (which
// nlohmann refuses to dump when it is not UTF-8) and in logs, so they are cut short and made valid.
constexpr std::size_t kMaxQuotedBytes = 128;

// `text` cut to at most `max` bytes without splitting a multi-byte character.
std::string_view utf8_prefix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t end = max;
  // Back off continuation bytes (10xxxxxx) so a multi-byte character is not split.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

// `text` as a JSON string literal: quoted, escaped, invalid UTF-8 replaced by U+FFFD, cut at
// kMaxQuotedBytes.
std::string json_quoted(std::string_view text) {
  const std::string_view kept = utf8_prefix(text, kMaxQuotedBytes);
  std::string out = Json(std::string(kept)).dump(-1, ' ', false, Json::error_handler_t::replace);
  if (kept.size() < text.size()) out += "...";
  return out;
}

// `text` (at most `max` bytes of it) as valid UTF-8, so a JSON error carrying it can be dumped.
std::string valid_utf8(std::string_view text, std::size_t max) {
  text = utf8_prefix(text, max);
  try {
    return Json::parse(Json(std::string(text)).dump(-1, ' ', false, Json::error_handler_t::replace))
        .get<std::string>();
  } catch (...) {
    return "(unprintable)";
  }
}

RpcParseResult failure(int code, std::string message) {
  RpcParseResult result;
  result.error.code = code;
  result.error.message = std::move(message);
  return result;
}

// Builds the document as nlohmann's own DOM parser does, and refuses duplicated keys and nesting
// deeper than the limit while doing so. nlohmann's parser keeps its own nesting on a heap stack, so
// no input recurses; the handler stops the parse at the first refusal.
class StrictDomBuilder final : public nlohmann::json_sax<Json> {
 public:
  StrictDomBuilder(Json* root, std::size_t max_depth) : root_(root), max_depth_(max_depth) {}

  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t v, const string_t& /*text*/) override { return value(v); }
  // The lexer clears its buffer before the next token, so the string can be taken, not copied.
  bool string(string_t& v) override { return value(std::move(v)); }
  bool binary(binary_t& /*v*/) override { return false; }  // not in JSON text

  bool start_object(std::size_t /*elements*/) override {
    if (!enter()) return false;
    stack_.push_back(place(Json(Json::value_t::object)));
    return true;
  }
  bool key(string_t& name) override {
    auto& object = stack_.back()->get_ref<Json::object_t&>();
    auto [it, inserted] = object.emplace(std::move(name), nullptr);
    if (!inserted) {
      code_ = -32600;
      message_ = "duplicated key " + json_quoted(it->first) +
                 ": parsers disagree on which copy wins, so the body is refused";
      return false;
    }
    slot_ = &it->second;
    return true;
  }
  bool end_object() override {
    stack_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t /*elements*/) override {
    if (!enter()) return false;
    stack_.push_back(place(Json(Json::value_t::array)));
    return true;
  }
  bool end_array() override {
    stack_.pop_back();
    --depth_;
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& error) override {
    code_ = -32700;
    std::string_view what = error.what();
    // "[json.exception.parse_error.101] parse error at line 1, ...": the bracket is noise here.
    if (const auto bracket = what.find("] "); what.starts_with("[json.") && bracket != what.npos) {
      what.remove_prefix(bracket + 2);
    }
    message_ = "not JSON: " + valid_utf8(what, 240);
    return false;
  }

  int code() const { return code_; }
  std::string& message() { return message_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      code_ = -32600;
      message_ = "JSON nested deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    return true;
  }

  template <typename T>
  bool value(T&& v) {
    place(Json(std::forward<T>(v)));
    return true;
  }

  // Puts `v` where the parse is (the root, the next array element or the value of the last key)
  // and returns where it now lives. Array elements move when their array grows, but only the
  // last one can still be open, and it is complete before the next is added.
  Json* place(Json&& v) {
    if (stack_.empty()) {
      *root_ = std::move(v);
      return root_;
    }
    Json* parent = stack_.back();
    if (parent->is_array()) {
      auto& array = parent->get_ref<Json::array_t&>();
      array.push_back(std::move(v));
      return &array.back();
    }
    *slot_ = std::move(v);
    return slot_;
  }

  Json* root_;
  std::size_t max_depth_;
  std::size_t depth_ = 0;
  std::vector<Json*> stack_;
  Json* slot_ = nullptr;
  int code_ = -32700;
  std::string message_;
};

bool method_names_something(std::string_view method) {
  return method == "tools/call" || method == "prompts/get" || method == "resources/read" ||
         method == "resources/subscribe" || method == "resources/unsubscribe";
}

// The params member that names what the request acts on.
const char* name_field(std::string_view method) {
  return method == "tools/call" || method == "prompts/get" ? "name" : "uri";
}

bool valid_id(const Json& id) {
  return id.is_string() || id.is_number() || id.is_null();
}

// Classifies one message object; an empty string when it is readable, else why not.
std::string classify(const Json& object, RpcMessage* out) {
  if (!object.is_object()) return "a message must be a JSON object";
  const auto& members = object.get_ref<const Json::object_t&>();
  const auto end = members.end();
  const auto version = members.find("jsonrpc");
  if (version == end || !version->second.is_string() ||
      version->second.get_ref<const std::string&>() != "2.0") {
    return "\"jsonrpc\" must be \"2.0\"";
  }
  const auto method = members.find("method");
  const auto id = members.find("id");
  const auto result = members.find("result");
  const auto error = members.find("error");
  const bool has_reply = result != end || error != end;

  if (id != end) {
    if (!valid_id(id->second)) return "\"id\" must be a string, a number or null";
    out->id = id->second;
  }
  if (method != end) {
    if (!method->second.is_string()) return "\"method\" must be a string";
    // Read as a request here and as a response by someone else is how a filter is passed.
    if (has_reply) return "a message cannot have both a \"method\" and a \"result\" or \"error\"";
    out->kind = id != end ? MessageKind::kRequest : MessageKind::kNotification;
    out->method = method->second.get_ref<const std::string&>();
    if (method_names_something(out->method)) {
      // A name that is there but not a string is refused: a server that looks tools up by it
      // (`handlers[params.name]` in JavaScript turns ["delete_user"] into "delete_user") would
      // run a tool the policy never saw. A missing one leaves `name` empty and the server to
      // answer its own invalid-params error.
      const char* field = name_field(out->method);
      if (const auto params = members.find("params"); params != end && params->second.is_object()) {
        const auto& p = params->second.get_ref<const Json::object_t&>();
        if (const auto it = p.find(field); it != p.end()) {
          if (!it->second.is_string()) {
            return "\"params." + std::string(field) + "\" of " + out->method + " must be a string";
          }
          out->name = it->second.get_ref<const std::string&>();
        }
      }
    }
    return {};
  }
  if (!has_reply) return "a message must have a \"method\" (request) or a \"result\" or \"error\"";
  if (result != end && error != end) return "a response cannot have both \"result\" and \"error\"";
  if (id == end) return "a response must have an \"id\"";
  out->kind = MessageKind::kResponse;
  if (error != end && error->second.is_object()) {
    const auto& e = error->second.get_ref<const Json::object_t&>();
    if (const auto code = e.find("code"); code != e.end()) {
      // nlohmann's is_number_integer() is true for unsigned values too: test those first.
      if (code->second.is_number_unsigned()) {
        // Past int64 an unsigned code is not a code anyone sent on purpose; keep what fits.
        const auto value = code->second.get<std::uint64_t>();
        if (value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
          out->error_code = static_cast<std::int64_t>(value);
        }
      } else if (code->second.is_number_integer()) {
        out->error_code = code->second.get<std::int64_t>();
      }
    }
  }
  return {};
}

// Reads the messages' fields in one pass without building the document, for the common case of a
// body that is accepted. It answers only "accepted, with these messages" or "ask the DOM parser":
// anything it refuses or does not handle (a refusal of any kind, an object with many keys) is read
// again by parse_rpc's DOM path, so its refusals and their messages are the DOM path's by
// construction. What it must get right is acceptance: it accepts only what classify() accepts,
// with the same fields, and refuses duplicated keys (as the lexer unescapes them) at any depth
// and nesting deeper than the limit, as StrictDomBuilder does.
// Its events come from FastJsonReader, with the text of keys and strings as views into the body
// (the reader hands over only text without escapes, which is its value).
class RpcScanner final {
 public:
  // A string with escapes whose text is wanted goes to the DOM path (see FastJsonReader).
  static constexpr bool kDecodesEscapes = false;

  // The pass's frames, messages and the open objects' keys live in `buffers`, reused from one
  // parse to the next on a thread (frames and keys are bounded by the depth limit and kMaxKeys;
  // the keys are views into the body, not copies).
  struct Buffers;
  RpcScanner(std::size_t max_depth, Buffers& buffers)
      : max_depth_(max_depth), frames_(buffers.frames), scans_(buffers.scans), keys_(buffers.keys) {
    frames_.clear();
    scans_.clear();
    keys_.clear();
  }

  bool null() { return scalar(Json(nullptr), Value::kOther); }
  bool boolean(bool v) { return scalar(Json(v), Value::kOther); }
  bool number_integer(std::int64_t v) { return scalar(Json(v), Value::kNumber); }
  bool number_unsigned(std::uint64_t v) { return scalar(Json(v), Value::kNumber); }
  bool number_float(double v) { return scalar(Json(v), Value::kNumber); }
  bool string(std::string_view v) {
    if (frames_.empty() || frames_.back().role == Role::kBatch) return false;  // not a message
    if (field_ == Field::kNone) return true;
    return scalar_string(v);
  }
  // Whether string() reads the next string's text (else only that a string came).
  bool wants_text() const {
    return field_ != Field::kNone && !frames_.empty() && frames_.back().role != Role::kBatch;
  }

  bool start_object() { return open(true); }
  bool start_array() { return open(false); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(std::string_view name) {
    Frame& frame = frames_.back();
    // Keys of the open object are the last ones in keys_; a duplicate anywhere is a refusal.
    const std::size_t count = keys_.size() - frame.first_key;
    if (count >= kMaxKeys) return false;  // the DOM path reads (and checks) large objects
    for (std::size_t i = frame.first_key; i < keys_.size(); ++i) {
      if (keys_[i] == name) return false;
    }
    field_ = field_of(frame.role, name);
    keys_.push_back(name);
    return true;
  }

  // After a successful pass: the messages, or nullopt when the DOM path must decide.
  std::optional<RpcPayload> payload() {
    if (!top_seen_ || scans_.empty()) return std::nullopt;
    RpcPayload payload;
    payload.batch = batch_;
    payload.messages.resize(scans_.size());
    for (std::size_t i = 0; i < scans_.size(); ++i) {
      if (!finish(scans_[i], &payload.messages[i])) return std::nullopt;
    }
    return payload;
  }

 private:
  static constexpr std::size_t kMaxKeys = 32;

  enum class Role { kOther, kBatch, kMessage, kParams, kError };
  enum class Field { kNone, kJsonrpc, kMethod, kId, kResult, kError, kParams, kName, kUri, kCode };
  enum class Value { kAbsent, kString, kNumber, kOther };

  struct Frame {
    Role role;
    std::size_t first_key;
  };

  // What one message object holds of the members classify() reads.
  struct Scan {
    Value jsonrpc = Value::kAbsent;
    bool jsonrpc_is_2_0 = false;
    Value method = Value::kAbsent;
    std::string method_text;
    Value id = Value::kAbsent;  // kOther: an object, array or boolean (refused)
    Json id_value;
    bool result = false;
    bool error = false;
    bool params_object = false;
    Value name = Value::kAbsent;
    std::string name_text;
    Value uri = Value::kAbsent;
    std::string uri_text;
    Json code;  // error.code when error is an object and has one
  };

  static Field field_of(Role role, std::string_view key) {
    switch (role) {
      case Role::kMessage:
        if (key == "jsonrpc") return Field::kJsonrpc;
        if (key == "method") return Field::kMethod;
        if (key == "id") return Field::kId;
        if (key == "result") return Field::kResult;
        if (key == "error") return Field::kError;
        if (key == "params") return Field::kParams;
        return Field::kNone;
      case Role::kParams:
        if (key == "name") return Field::kName;
        if (key == "uri") return Field::kUri;
        return Field::kNone;
      case Role::kError:
        return key == "code" ? Field::kCode : Field::kNone;
      default:
        return Field::kNone;
    }
  }

  bool open(bool object) {
    if (++depth_ > max_depth_) return false;
    Role role = Role::kOther;
    if (frames_.empty()) {
      top_seen_ = true;
      if (object) {
        role = Role::kMessage;
        scans_.emplace_back();
      } else {
        role = Role::kBatch;
        batch_ = true;
      }
    } else if (frames_.back().role == Role::kBatch) {
      if (!object) return false;  // a batch member that is not an object: refused
      role = Role::kMessage;
      scans_.emplace_back();
    } else {
      Scan& scan = scans_.back();
      switch (field_) {
        case Field::kId:
        case Field::kJsonrpc:
        case Field::kMethod:
          // Not a string or number: refused, whatever it holds.
          return false;
        case Field::kResult:
          scan.result = true;
          break;
        case Field::kError:
          scan.error = true;
          if (object) role = Role::kError;
          break;
        case Field::kParams:
          if (object) {
            scan.params_object = true;
            role = Role::kParams;
          }
          break;
        case Field::kName:
          scan.name = Value::kOther;
          break;
        case Field::kUri:
          scan.uri = Value::kOther;
          break;
        case Field::kCode:
        case Field::kNone:
          break;
      }
    }
    field_ = Field::kNone;
    frames_.push_back(Frame{role, keys_.size()});
    return true;
  }

  bool close() {
    keys_.resize(frames_.back().first_key);
    frames_.pop_back();
    --depth_;
    field_ = Field::kNone;
    return true;
  }

  bool scalar(Json&& v, Value kind) {
    if (frames_.empty()) {
      top_seen_ = true;
      return false;  // a body that is neither an object nor a batch
    }
    if (frames_.back().role == Role::kBatch) return false;  // a member that is not an object
    const Field field = std::exchange(field_, Field::kNone);
    if (field == Field::kNone) return true;
    Scan& scan = scans_.back();
    switch (field) {
      case Field::kJsonrpc:
        scan.jsonrpc = kind;
        break;
      case Field::kMethod:
        scan.method = kind;
        break;
      case Field::kId:
        if (!v.is_null() && !v.is_number()) return false;  // a boolean id: refused
        scan.id = kind;                                    // present (null is a valid id)
        scan.id_value = std::move(v);
        break;
      case Field::kResult:
        scan.result = true;
        break;
      case Field::kError:
        scan.error = true;
        break;
      case Field::kParams:
        break;
      case Field::kName:
        scan.name = Value::kOther;
        break;
      case Field::kUri:
        scan.uri = Value::kOther;
        break;
      case Field::kCode:
        scan.code = std::move(v);
        break;
      case Field::kNone:
        break;
    }
    return true;
  }

  bool scalar_string(std::string_view v) {
    const Field field = std::exchange(field_, Field::kNone);
    Scan& scan = scans_.back();
    switch (field) {
      case Field::kJsonrpc:
        scan.jsonrpc = Value::kString;
        scan.jsonrpc_is_2_0 = v == "2.0";
        break;
      case Field::kMethod:
        scan.method = Value::kString;
        scan.method_text = v;
        break;
      case Field::kId:
        scan.id = Value::kString;
        scan.id_value = std::string(v);
        break;
      case Field::kResult:
        scan.result = true;
        break;
      case Field::kError:
        scan.error = true;
        break;
      case Field::kName:
        scan.name = Value::kString;
        scan.name_text = v;
        break;
      case Field::kUri:
        scan.uri = Value::kString;
        scan.uri_text = v;
        break;
      case Field::kParams:
      case Field::kCode:
      case Field::kNone:
        break;
    }
    return true;
  }

  // classify()'s acceptance, on what the pass saw; false for anything classify() refuses.
  static bool finish(Scan& scan, RpcMessage* out) {
    if (scan.jsonrpc != Value::kString || !scan.jsonrpc_is_2_0) return false;
    const bool has_id = scan.id != Value::kAbsent;
    if (has_id) {
      if (!valid_id(scan.id_value)) return false;
      out->id = std::move(scan.id_value);
    }
    const bool has_reply = scan.result || scan.error;
    if (scan.method != Value::kAbsent) {
      if (scan.method != Value::kString || has_reply) return false;
      out->kind = has_id ? MessageKind::kRequest : MessageKind::kNotification;
      out->method = std::move(scan.method_text);
      if (method_names_something(out->method) && scan.params_object) {
        const bool by_name = std::string_view(name_field(out->method)) == "name";
        const Value value = by_name ? scan.name : scan.uri;
        if (value == Value::kString) {
          out->name = std::move(by_name ? scan.name_text : scan.uri_text);
        } else if (value != Value::kAbsent) {
          return false;
        }
      }
      return true;
    }
    if (!has_reply || (scan.result && scan.error) || !has_id) return false;
    out->kind = MessageKind::kResponse;
    const Json& code = scan.code;
    if (code.is_number_unsigned()) {
      const auto value = code.get<std::uint64_t>();
      if (value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        out->error_code = static_cast<std::int64_t>(value);
      }
    } else if (code.is_number_integer()) {
      out->error_code = code.get<std::int64_t>();
    }
    return true;
  }

  std::size_t max_depth_;
  std::size_t depth_ = 0;
  std::vector<Frame>& frames_;
  Field field_ = Field::kNone;  // what the next value of the innermost object is
  bool top_seen_ = false;
  bool batch_ = false;
  std::vector<Scan>& scans_;
  std::vector<std::string_view>& keys_;  // the open objects' keys, innermost last

 public:
  struct Buffers {
    std::vector<Frame> frames;
    std::vector<Scan> scans;
    std::vector<std::string_view> keys;
    std::vector<char> containers;  // FastJsonReader's
  };
};

// The body's JSON for RpcScanner, read without nlohmann's lexer (core/json_reader.h). Where the
// scanner would need the text of a string holding escapes, or the body starts with a byte-order
// mark, it gives up: false sends the body to the DOM path, as any refusal does, so only acceptance
// must match nlohmann's, and the fuzz target checks that it does.
using FastJsonReader = JsonReader<RpcScanner>;

// The strict DOM parse and classification: the reference, and what answers every refusal.
RpcParseResult parse_rpc_dom(std::string_view body, std::size_t max_depth) {
  if (body.empty()) return failure(-32700, "not JSON: an empty body");
  try {
    RpcPayload payload;
    StrictDomBuilder builder(&payload.document, max_depth);
    const char* begin = body.data();
    if (!Json::sax_parse(begin, begin + body.size(), &builder)) {
      if (builder.message().empty()) return failure(-32700, "not JSON");
      return failure(builder.code(), std::move(builder.message()));
    }
    Json& document = payload.document;
    if (document.is_array()) {
      const auto& members = document.get_ref<const Json::array_t&>();
      if (members.empty()) return failure(-32600, "an empty batch");
      payload.batch = true;
      payload.messages.resize(members.size());
      for (std::size_t i = 0; i < members.size(); ++i) {
        if (std::string why = classify(members[i], &payload.messages[i]); !why.empty()) {
          return failure(-32600, "batch member " + std::to_string(i) + ": " + why);
        }
      }
    } else if (document.is_object()) {
      payload.messages.resize(1);
      if (std::string why = classify(document, &payload.messages[0]); !why.empty()) {
        return failure(-32600, std::move(why));
      }
    } else {
      return failure(-32600, "a JSON-RPC body must be an object or a batch (array)");
    }
    RpcParseResult result;
    result.payload = std::move(payload);
    return result;
  } catch (const std::bad_alloc&) {
    return failure(-32600, "out of memory reading the body");
  } catch (const std::exception& e) {
    return failure(-32700, "not JSON: " + valid_utf8(e.what(), 240));
  } catch (...) {
    return failure(-32700, "not JSON");
  }
}

}  // namespace

RpcParseResult parse_rpc(std::string_view body, std::size_t max_depth, RpcDocument document) {
  if (document == RpcDocument::kSkip && !body.empty()) {
    try {
      thread_local RpcScanner::Buffers buffers;
      // What a large batch or deep body made is not kept for the next parse.
      struct Release {
        RpcScanner::Buffers& buffers;
        ~Release() {
          buffers.scans.clear();
          if (buffers.scans.capacity() > 16) buffers.scans.shrink_to_fit();
          if (buffers.frames.capacity() > 64) buffers.frames = {};
          if (buffers.containers.capacity() > 64) buffers.containers = {};
          if (buffers.keys.capacity() > 64) buffers.keys = {};
        }
      } release{buffers};
      RpcScanner scanner(max_depth, buffers);
      if (FastJsonReader(body, scanner, buffers.containers).read()) {
        if (auto payload = scanner.payload()) {
          RpcParseResult result;
          result.payload = std::move(payload);
          return result;
        }
      }
    } catch (...) {
      // Out of memory, or anything else: the DOM path decides, and says why.
    }
  }
  return parse_rpc_dom(body, max_depth);
}

std::optional<std::string> routing_header_mismatch(const RpcPayload& payload,
                                                   const std::optional<std::string>& mcp_method,
                                                   const std::optional<std::string>& mcp_name) {
  if (!mcp_method && !mcp_name) return std::nullopt;
  const char* header = mcp_method ? "Mcp-Method" : "Mcp-Name";
  const std::string& value = mcp_method ? *mcp_method : *mcp_name;
  if (payload.batch || payload.messages.size() != 1) {
    return std::string(header) + " header " + json_quoted(value) +
           " on a batch, which routing headers cannot describe";
  }
  const RpcMessage& message = payload.messages.front();
  if (message.kind == MessageKind::kResponse) {
    return std::string(header) + " header " + json_quoted(value) +
           " on a response, which has no method";
  }
  if (mcp_method && *mcp_method != message.method) {
    return "Mcp-Method header " + json_quoted(*mcp_method) + " disagrees with the body's method " +
           json_quoted(message.method);
  }
  if (mcp_name) {
    if (!method_names_something(message.method)) {
      return "Mcp-Name header " + json_quoted(*mcp_name) + " but the body's method " +
             json_quoted(message.method) + " names nothing";
    }
    if (*mcp_name != message.name) {
      return "Mcp-Name header " + json_quoted(*mcp_name) + " disagrees with the body's params." +
             name_field(message.method) + " " + json_quoted(message.name);
    }
  }
  return std::nullopt;
}

nlohmann::json rpc_error_response(const nlohmann::json& id, int code, std::string_view message) {
  Json error = Json::object();
  error["code"] = code;
  error["message"] = valid_utf8(message, message.size());
  Json response = Json::object();
  response["jsonrpc"] = "2.0";
  response["id"] = id;
  response["error"] = std::move(error);
  return response;
}

}  // namespace perimeter::mcpguard
