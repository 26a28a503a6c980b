#include "sim/pki_ca_inspector.h"

#include "pki/pki.h"

namespace perimeter::sim {

CaInspection PkiCaInspector::inspect(const std::string& pem) const {
  CaInspection inspection;
  try {
    inspection.violation = pki::tunnel_ca_violation(pem);
    if (inspection.violation) return inspection;
    const pki::Certificate certificate = pki::Certificate::from_pem(pem);
    inspection.fingerprint = certificate.fingerprint_sha256();
    inspection.not_after = certificate.not_after();
  } catch (const std::exception& e) {
    // Whatever OpenSSL could not parse is not a certificate the service accepts.
    inspection.violation = std::string("the certificate does not parse: ") + e.what();
  }
  return inspection;
}

}  // namespace perimeter::sim
