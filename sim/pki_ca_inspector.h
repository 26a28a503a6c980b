#pragma once

#include "sim/tunnels.h"

namespace perimeter::sim {

// The Tunnels API's CA rules as lib/pki states them (pki::tunnel_ca_violation), and the
// certificate's fingerprint and expiry from the same parse.
class PkiCaInspector final : public CaInspector {
 public:
  CaInspection inspect(const std::string& pem) const override;
};

}  // namespace perimeter::sim
