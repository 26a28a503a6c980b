#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "agentapi/types.h"

namespace perimeter::agentapi {

class SecretError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Decodes a work item's `secret`: base64url (standard base64 accepted too, padding optional) of
// JSON {sessions_token, api_base_url?}. Throws SecretError saying which part is wrong; the message
// never contains the secret or the token.
WorkSecret decode_work_secret(std::string_view secret);

}  // namespace perimeter::agentapi
