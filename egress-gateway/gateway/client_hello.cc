#include "gateway/client_hello.h"

#include <cstdint>

namespace perimeter::egressgateway {
namespace {

using Status = ClientHelloScan::Status;

constexpr std::uint8_t kHandshakeRecord = 22;
constexpr std::uint8_t kClientHello = 1;
constexpr std::uint16_t kServerNameExtension = 0;
constexpr std::uint8_t kHostNameType = 0;
constexpr std::size_t kMaxRecordPayload = 16384;  // TLSPlaintext.length limit (RFC 8446 5.1)

// A bounds-checked reader over the ClientHello body.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool u8(std::uint32_t* out) { return take(1, out); }
  bool u16(std::uint32_t* out) { return take(2, out); }
  bool u24(std::uint32_t* out) { return take(3, out); }
  bool bytes(std::size_t count, std::string_view* out) {
    if (bytes_.size() < count) return false;
    *out = bytes_.substr(0, count);
    bytes_.remove_prefix(count);
    return true;
  }
  bool skip(std::size_t count) {
    std::string_view ignored;
    return bytes(count, &ignored);
  }
  bool empty() const { return bytes_.empty(); }

 private:
  bool take(std::size_t count, std::uint32_t* out) {
    if (bytes_.size() < count) return false;
    std::uint32_t value = 0;
    for (std::size_t i = 0; i < count; ++i) value = (value << 8) | std::uint8_t(bytes_[i]);
    bytes_.remove_prefix(count);
    *out = value;
    return true;
  }
  std::string_view bytes_;
};

// The body of a ClientHello handshake message (after its 4-byte header).
ClientHelloScan parse_body(std::string_view body) {
  Reader reader(body);
  std::uint32_t length = 0;
  std::string_view field;
  // legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods.
  if (!reader.skip(2 + 32) || !reader.u8(&length) || length > 32 || !reader.skip(length) ||
      !reader.u16(&length) || length < 2 || length % 2 != 0 || !reader.skip(length) ||
      !reader.u8(&length) || length < 1 || !reader.skip(length)) {
    return {Status::kMalformed, ""};
  }
  if (reader.empty()) return {Status::kComplete, ""};  // no extensions at all
  if (!reader.u16(&length) || !reader.bytes(length, &field) || !reader.empty()) {
    return {Status::kMalformed, ""};
  }
  Reader extensions(field);
  std::string server_name;
  bool seen_server_name = false;
  while (!extensions.empty()) {
    std::uint32_t type = 0;
    std::string_view data;
    if (!extensions.u16(&type) || !extensions.u16(&length) || !extensions.bytes(length, &data)) {
      return {Status::kMalformed, ""};
    }
    if (type != kServerNameExtension) continue;
    // Two server_name extensions would let the gateway and the server read different names.
    if (seen_server_name) return {Status::kMalformed, ""};
    seen_server_name = true;
    Reader names(data);
    std::string_view list;
    if (!names.u16(&length) || !names.bytes(length, &list) || !names.empty()) {
      return {Status::kMalformed, ""};
    }
    Reader entries(list);
    while (!entries.empty()) {
      std::uint32_t name_type = 0;
      std::string_view name;
      if (!entries.u8(&name_type) || !entries.u16(&length) || !entries.bytes(length, &name)) {
        return {Status::kMalformed, ""};
      }
      if (name_type != kHostNameType) continue;
      // RFC 6066: at most one host_name; a NUL or an empty name is a trick, not a name.
      if (!server_name.empty() || name.empty() || name.find('\0') != std::string_view::npos) {
        return {Status::kMalformed, ""};
      }
      server_name = std::string(name);
    }
  }
  return {Status::kComplete, server_name};
}

}  // namespace

ClientHelloScan scan_client_hello(std::string_view bytes) {
  if (bytes.empty()) return {Status::kIncomplete, ""};
  if (std::uint8_t(bytes[0]) != kHandshakeRecord) return {Status::kNotTls, ""};
  // Gather the handshake layer's bytes from consecutive handshake records.
  std::string handshake;
  std::size_t offset = 0;
  for (;;) {
    // Once the handshake header is in, its length says when the message is whole.
    if (handshake.size() >= 4) {
      if (std::uint8_t(handshake[0]) != kClientHello) return {Status::kMalformed, ""};
      const std::size_t message_length = (std::size_t(std::uint8_t(handshake[1])) << 16) |
                                         (std::size_t(std::uint8_t(handshake[2])) << 8) |
                                         std::uint8_t(handshake[3]);
      if (message_length + 4 > kMaxClientHelloBytes) return {Status::kTooLarge, ""};
      if (handshake.size() >= message_length + 4) {
        // Bytes past the ClientHello in its last record would be a second message.
        if (handshake.size() != message_length + 4) return {Status::kMalformed, ""};
        return parse_body(std::string_view(handshake).substr(4, message_length));
      }
    }
    if (bytes.size() - offset < 5) break;
    const auto record = bytes.substr(offset, 5);
    if (std::uint8_t(record[0]) != kHandshakeRecord) return {Status::kMalformed, ""};
    // legacy_record_version: 0x0300 to 0x0304.
    if (std::uint8_t(record[1]) != 3 || std::uint8_t(record[2]) > 4) {
      return {Status::kMalformed, ""};
    }
    const std::size_t length =
        (std::size_t(std::uint8_t(record[3])) << 8) | std::uint8_t(record[4]);
    if (length == 0 || length > kMaxRecordPayload) return {Status::kMalformed, ""};
    if (bytes.size() - offset - 5 < length) break;
    handshake.append(bytes.substr(offset + 5, length));
    offset += 5 + length;
  }
  if (bytes.size() >= kMaxClientHelloBytes) return {Status::kTooLarge, ""};
  return {Status::kIncomplete, ""};
}

}  // namespace perimeter::egressgateway
