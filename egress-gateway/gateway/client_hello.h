#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace perimeter::egressgateway {

// The most of a client's first bytes the gateway buffers while it waits for a whole ClientHello.
inline constexpr std::size_t kMaxClientHelloBytes = 16 * 1024;

// What the bytes received so far say about the client's TLS ClientHello.
struct ClientHelloScan {
  enum class Status {
    kIncomplete,  // a prefix of a ClientHello: read more
    kComplete,    // a whole ClientHello; server_name is its SNI host_name, empty when it has none
    kNotTls,      // the first record is not a TLS handshake record
    kMalformed,   // a TLS record or handshake that breaks the format
    kTooLarge,    // no whole ClientHello within kMaxClientHelloBytes
  };
  Status status = Status::kIncomplete;
  std::string server_name;
};

// Reads `bytes` (everything the client sent so far, from its first byte) as TLS records carrying
// a ClientHello, which may span several records and arrive in any number of pieces. Pure: call it
// again with more bytes until the status is not kIncomplete.
ClientHelloScan scan_client_hello(std::string_view bytes);

}  // namespace perimeter::egressgateway
