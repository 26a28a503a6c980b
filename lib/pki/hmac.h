#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace perimeter::pki {

// Lowercase hex HMAC-SHA256 of `message` under `key` (OpenSSL). Throws PkiError on failure.
std::string hmac_sha256_hex(std::string_view key, std::string_view message);

// Lowercase hex SHA-256 of `data` (OpenSSL). Throws PkiError on failure.
std::string sha256_hex(std::string_view data);

// A new HMAC key: `bytes` bytes from OpenSSL's CSPRNG, as lowercase hex (printable, so it can sit
// in a Secret and be read as a file's raw bytes; 2 * bytes characters). Throws PkiError.
std::string random_key_hex(size_t bytes = 32);

// Compares two strings in time that depends only on their lengths: for credentials.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace perimeter::pki
